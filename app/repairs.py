"""What a failed search gets: a diagnosis and five better queries (step 7's repair stage).

The LLM is given the wrong query, the target with its docstring, the first results and the
think block that followed; before a have, the wrong query and the results only. A reply
without one think and five searches, or with a query that names the target or copies its
statement, is a `BadAnswer` (asked again). Offline, the five queries are built
deterministically from the goal and the target's docstring words, and labelled `offline`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app import describe, llm
from app.cot import OFFLINE, normalized, without_name
from app.search_index import Entry

REPAIRS = 5
QUOTE_TOKENS = 5
"""A query that repeats this many consecutive tokens of the target's statement quotes it."""
# fmt: off
_STOPWORDS = frozenset({
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "for", "from", "has", "have", "if",
    "in", "into", "is", "it", "its", "of", "on", "or", "over", "that", "the", "their", "then",
    "there", "these", "this", "those", "to", "under", "when", "where", "which", "with",
})
# fmt: on


@dataclass(frozen=True)
class Target:
    """The object a search looks for."""

    fqn: str
    entry: Entry | None
    """Its dictionary entry, if the dictionary has it."""
    forced: bool
    """Its docstring was written by step 6: it is put in the results when missed."""


@dataclass(frozen=True)
class RepairInput:
    """A searched block as the repair stage reads it."""

    query: str
    results: tuple[dict[str, Any], ...]
    target: Target | None
    needs_repair: bool
    goal: str
    """The think block before the search (where a CoT reads the goal), else the statement."""
    following_think: str
    """The think block after the search: why the target is needed."""


@dataclass(frozen=True)
class Repair:
    """A diagnosis and five better queries for one block."""

    think: str
    queries: tuple[str, ...]
    writer: str


RepairWriter = Callable[[RepairInput], Repair]


def needs_repair(target: Target | None, rank: int | None, top_k: int) -> bool:
    """A search before a have always; a search whose target is embedded and available but
    not in the top k, unless step 6 wrote the target's docstring (it is forced)."""
    if target is None:
        return True
    return not target.forced and rank is not None and rank > top_k


def _results_text(results: tuple[dict[str, Any], ...]) -> str:
    lines = []
    for number, result in enumerate(results, 1):
        lines.append(f"{number}. {normalized(result.get('fullname') or result['fqn'])}")
        lines.append(f"   {normalized(result.get('docstring') or '')}")
    return "\n".join(lines) or "(no result)"


def repair_messages(item: RepairInput) -> list[dict[str, str]]:
    """The request: the wrong query and its results, and, for a target, the target with its
    docstring and the think block that followed."""
    parts = [f"Wrong query:\n{item.query}"]
    if item.target is not None and item.target.entry is not None:
        entry = item.target.entry
        parts.append(
            f"The object it should have found:\n{normalized(entry.fullname or entry.fqn)}\n"
            f"Its docstring: {normalized(entry.docstring)}"
        )
    parts.append(f"First results of the wrong query:\n{_results_text(item.results)}")
    if item.target is not None:
        parts.append(f"The think block that followed the search:\n{item.following_think}")
    system = "repair" if item.target is not None else "repair_have"
    return [
        {"role": "system", "content": llm.prompt(system)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


_REPLY_BLOCK = re.compile(r"<(think|search)>(.*?)</\1>", re.DOTALL)


def parse_repair(text: str, target: Target | None) -> tuple[str, tuple[str, ...]]:
    """The think block and the five queries of a reply; a `BadAnswer` saying what is wrong
    when it has not exactly one think and five searches, or one of them names the target or
    copies its statement (the think comes before the search in the CoT)."""
    blocks = [(kind, normalized(content)) for kind, content in _REPLY_BLOCK.findall(text)]
    thinks = [content for kind, content in blocks if kind == "think" and content]
    queries = tuple(content for kind, content in blocks if kind == "search" and content)
    if len(thinks) != 1 or len(queries) != REPAIRS:
        raise llm.BadAnswer(
            f"it has {len(thinks)} non-empty <think> and {len(queries)} non-empty <search> "
            f"blocks; write exactly one <think> block, then exactly {REPAIRS} <search> blocks"
        )
    if target is not None:
        if problem := _leaks(thinks[0], target):
            raise llm.BadAnswer(f"the think block {problem}: the prover has not found it yet")
        for number, query in enumerate(queries, 1):
            if problem := _leaks(query, target):
                raise llm.BadAnswer(f"search {number} {problem}: describe what is needed")
    return thinks[0], queries


def _leaks(query: str, target: Target) -> str | None:
    """How a query gives the target away (its name, a copy of its statement), if it does."""
    name = target.fqn.rsplit(".", 1)[-1]
    named = re.search(rf"(?<![\w']){re.escape(name)}(?![\w'])", query)
    # A plain lowercase word (`size`, `prime`) may be said in English; an identifier may not.
    if target.fqn in query or (named and re.search(r"[_0-9A-Z']", name)):
        return f"names the target `{name}`"
    statement = (target.entry.fullname or "").split() if target.entry else []
    words = query.split()
    grams = {tuple(words[i : i + QUOTE_TOKENS]) for i in range(len(words) - QUOTE_TOKENS + 1)}
    for i in range(len(statement) - QUOTE_TOKENS + 1):
        if tuple(statement[i : i + QUOTE_TOKENS]) in grams:
            return "copies the target's statement"
    return None


@dataclass(frozen=True)
class LlmRepairWriter:
    """Asks the LLM for a diagnosis and five queries, checking the reply."""

    client: llm.LlmClient

    def __call__(self, item: RepairInput) -> Repair:
        parse = functools.partial(parse_repair, target=item.target)
        think, queries = self.client.ask(repair_messages(item), parse)
        return Repair(think, queries, self.client.settings.writer)


def content_words(text: str, name: str = "") -> list[str]:
    """The distinct content words of a text in order, the object's name left out."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", without_name(text, name).lower())
    seen: dict[str, None] = {}
    for word in words:
        if word not in _STOPWORDS and word != name.lower():
            seen.setdefault(word)
    return list(seen)


def offline_repair(item: RepairInput) -> Repair:
    """Five deterministic queries: for a target, five more of the describer's paraphrases
    of it (seeded by the failed query, never its docstring's sentence); before a have, from
    the goal's words."""
    name = item.target.fqn.rsplit(".", 1)[-1] if item.target else ""
    goal = content_words(item.goal, name)
    entry = item.target.entry if item.target else None
    if entry is not None:
        queries = tuple(
            describe.query(entry.kind, entry.name, entry.fullname or "", f"{item.query}:{i}")
            for i in range(1, REPAIRS + 1)
        )
    else:
        words = content_words(item.query)
        drafts = [words[:8], words[:5] + goal[:3], ["fact", "about", *goal[:6]], goal[:8]]
        drafts.append(goal[2:10])
        queries = tuple(" ".join(w) if len(w) > 2 else item.query for w in drafts)
    if entry is None:
        think = (
            f'The search "{item.query}" returns nothing that states the fact I need; '
            f"I describe it through the notions of the goal: {', '.join(goal[:6])}."
        )
    else:
        topic = describe.gist(entry.kind, entry.name, entry.fullname or "").topic
        think = (
            f'The search "{item.query}" does not return the fact I need among its first '
            f"results; it is about {topic}, and the query should say so."
        )
    return Repair(think, queries, OFFLINE)


def writer_for(settings: llm.LlmSettings) -> RepairWriter:
    """The LLM writer when an endpoint is configured, else the offline one."""
    return LlmRepairWriter(llm.LlmClient(settings)) if settings.online else offline_repair
