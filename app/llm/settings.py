"""Where and how an LLM step asks: its YAML file, the environment, the flags; its prompts."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.llm.errors import LlmConfigError

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
ENV_BASE_URL = "ROCQCOT_LLM_BASE_URL"
ENV_MODEL = "ROCQCOT_LLM_MODEL"
ENV_KEY = "OPENAI_API_KEY"


@dataclass(frozen=True)
class LlmSettings:
    """Where and how a step asks: from its YAML file, the environment and flags."""

    base_url: str | None = None
    """The endpoint; None means the step's offline writer."""
    model: str | None = None
    request_config: dict[str, Any] = field(default_factory=dict)
    """Sent as is with each request (temperature, max_tokens, response_format, ...)."""
    timeout_seconds: float = 600.0
    max_retries: int = 5
    """Retries of one request on 429, 5xx, timeouts and connection errors."""
    backoff_seconds: float = 1.0
    """The first backoff; it doubles at each retry (with jitter)."""
    max_backoff_seconds: float = 120.0
    """No wait is longer, not even one asked by `Retry-After`."""
    max_reasks: int = 2
    """How often an answer that fails its check is asked again."""
    max_workers: int = 8
    """Requests in flight at most (and worker threads of the step)."""
    mean_delay: float = 0.0
    """Mean seconds between request starts (jittered), to stay under rate limits."""
    budget_usd: float | None = None
    """What `llm_calls` may cost at most: a request is sent only if its worst cost fits."""
    prompt_usd_per_million: float = 0.0
    completion_usd_per_million: float = 0.0
    """Prices for the cost, unless the endpoint reports it (`usage.cost`, as OpenRouter), and
    for a request's worst cost under a budget."""

    @property
    def online(self) -> bool:
        return self.base_url is not None

    @property
    def max_completion_tokens(self) -> int | None:
        """The longest answer the request allows (`max_completion_tokens`, else `max_tokens`)."""
        config = self.request_config
        return config.get("max_completion_tokens") or config.get("max_tokens")

    @property
    def writer(self) -> str:
        """The name recorded with what this configuration writes."""
        return f"llm:{self.model}" if self.online else "offline"


def load_settings(
    step: int, config: Path | None = None, offline: bool = False, **flags: Any
) -> LlmSettings:
    """A step's settings: its YAML file (`config`, else `app/prompts/step_N.yaml`), then
    `ROCQCOT_LLM_BASE_URL`/`ROCQCOT_LLM_MODEL`, then the flags that are not None."""
    path = config or PROMPTS / f"step_{step}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(LlmSettings)}
    if unknown := sorted(set(values) - known):
        raise LlmConfigError(f"{path}: unknown keys {', '.join(unknown)}; known: {sorted(known)}")
    env = {"base_url": os.environ.get(ENV_BASE_URL), "model": os.environ.get(ENV_MODEL)}
    for source in (env, flags):
        values |= {key: value for key, value in source.items() if value not in (None, "")}
    if offline:
        values["base_url"] = None
    values["request_config"] = dict(values.get("request_config") or {})
    if reserved := sorted({"model", "messages"} & set(values["request_config"])):
        raise LlmConfigError(f"{path}: put {', '.join(reserved)} outside request_config")
    settings = LlmSettings(**values)
    if settings.online and not settings.model:
        raise LlmConfigError(
            f"an endpoint is set ({settings.base_url}) but no model: "
            f"use --model, {ENV_MODEL} or `model:` in {path}"
        )
    return settings


@functools.cache
def prompt(name: str) -> str:
    """The text of `app/prompts/<name>.md` (a system prompt)."""
    return (PROMPTS / f"{name}.md").read_text().strip()
