"""What an endpoint answered: the request's cache key, the answer's text and usage read from a
chat completion (whose shape is checked), and the checks a caller puts an answer through."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.llm.errors import BadAnswer

EXCERPT_CHARS = 200


class NotACompletion(Exception):
    """A 200 answer that is not a chat completion (not JSON, or not the API's shape): retried
    as a server error is, since a proxy or an overloaded server sends such pages."""


@dataclass(frozen=True)
class Answer:
    """One answered request, from the endpoint or from the cache."""

    text: str
    request_hash: str
    cached: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def request_hash(model: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """The cache key: the same model, messages and parameters give the same answer."""
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def chat_completion(answered: object) -> dict[str, Any]:
    """The chat completion an endpoint answered (parsed JSON, or the text of an answer that was
    not declared JSON), checked for what `answer_from_response` reads: a first choice with a
    message whose content is text (or null), numeric usage."""
    data = answered
    if isinstance(answered, str):
        try:
            data = json.loads(answered)
        except ValueError:
            excerpt = _excerpt(answered)
            raise NotACompletion(f"the endpoint answered what is not JSON: {excerpt}") from None
    message = None
    if isinstance(data, dict) and isinstance(choices := data.get("choices"), list) and choices:
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
    usage = data.get("usage") if isinstance(data, dict) else None
    shaped = (
        isinstance(message, dict)
        and isinstance(message.get("content"), str | None)
        and (usage is None or isinstance(usage, dict))
        and all(
            isinstance(value, int | float | None)
            for name, value in (usage or {}).items()
            if name in ("prompt_tokens", "completion_tokens", "cost")
        )
    )
    if not shaped:
        excerpt = _excerpt(json.dumps(data) if not isinstance(answered, str) else answered)
        raise NotACompletion(f"the endpoint answered JSON that is not a chat completion: {excerpt}")
    return data  # type: ignore[return-value]


def _excerpt(text: str) -> str:
    text = text.strip()
    return repr(text[:EXCERPT_CHARS] + (" [...]" if len(text) > EXCERPT_CHARS else ""))


def answer_from_response(
    response: Mapping[str, Any], key: str, cached: bool, cost: float
) -> Answer:
    """The assistant's text and usage from a chat completion as JSON."""
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    usage = response.get("usage") or {}
    return Answer(
        text=message.get("content") or "",
        request_hash=key,
        cached=cached,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost_usd=cost,
    )


def reask(reason: str) -> str:
    """What the model is told when its answer failed the check."""
    return (
        f"Your answer cannot be used: {reason}\n"
        "Write the whole answer again, in the required format, fixing this."
    )


def require_sections(text: str, headings: tuple[str, ...]) -> dict[str, str]:
    """The Markdown sections `## <heading>` of an answer, which must all be there, in order,
    non-empty, with nothing but blank lines before the first."""
    pattern = "".join(
        rf"^##\s*{re.escape(h)}\s*:?\s*$(?P<s{i}>.*?)" for i, h in enumerate(headings)
    )
    match = re.fullmatch(r"\s*" + pattern, text.strip() + "\n", re.DOTALL | re.MULTILINE)
    if match is None:
        wanted = ", ".join(f"`## {h}`" for h in headings)
        raise BadAnswer(f"it must consist of exactly the sections {wanted}, in this order")
    sections = {h: match.group(f"s{i}").strip() for i, h in enumerate(headings)}
    if empty := [h for h, body in sections.items() if not body]:
        raise BadAnswer(f"the section `## {empty[0]}` is empty")
    return sections
