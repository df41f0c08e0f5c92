"""Chains of thought as blocks: strict parsing, checking against the proof, the offline writer.

A chain of thought (CoT) is a sequence of `<think>`, `<search>`, `<script>` and `<have>`
blocks. Scripts and haves must be the theorem's own chains, in order, so that the CoT
re-checks in Rocq; searches name the dependency they look for (`<search target="addnC">`),
so later steps know each search's target exactly. `<result>` blocks are never written here:
they come from Rocq and the retrieval engine later.

The offline writer builds the same structure deterministically from the step-4 evaluation
(think blocks from goals and diffs, one search per dependency in the describer's words, the
scripts, a failed search before each have), so the pipeline runs without any endpoint.
Everything here is pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app import describe
from app.chains import CLOSE_TAG, HIDDEN_PROOF, OPEN_TAG
from app.goal_diff import NO_GOALS

KINDS = ("think", "search", "script", "have")
CODE_KINDS = ("script", "have")
TACTIC_SECTIONS = ("Breaking it down", "What happens", "Summary")
PROOF_SECTIONS = ("Statement", "Proof")
OFFLINE = "offline"

_KEYWORD = re.compile(r"^(Proof\b[^.]*|Qed|Defined|Abort|Admitted|Save\s+\S+|Next Obligation)\.$")
_OPEN_TAG = re.compile(r'<(?P<kind>[A-Za-z_][\w-]*)(?P<attrs>(?:\s+[\w-]+\s*=\s*"[^"]*")*)\s*>')
_ATTR = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')
_BLANK_PERIOD = re.compile(r"[ \t]+\.(?=\s|$)")
_INNER_TAG = re.compile(r"</?(?:think|search|script|have|result)\b[^>]*>")


class CotError(ValueError):
    """A CoT that is malformed, or whose code is not the theorem's proof."""


@dataclass(frozen=True)
class Dependency:
    """A library object a tactic or the statement uses, as step 4 records it."""

    fqn: str
    name: str
    """As the proof writes it (what a search's `target` names)."""
    kind: str
    type: str
    docstring: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dependency:
        """From step 4's dict: the docstring at top level or in its dictionary `info`."""
        info = data.get("info") or {}
        return cls(
            fqn=data.get("fqn") or data["name"],
            name=data.get("name") or data["fqn"].rsplit(".", 1)[-1],
            kind=data.get("kind") or "object",
            type=data.get("type") or "",
            docstring=data.get("docstring") or info.get("docstring") or None,
        )

    @property
    def kind_word(self) -> str:
        """The kind in words (glob kinds such as `thm` are abbreviations)."""
        return describe.kind_word(self.kind)


@dataclass(frozen=True)
class Step:
    """One replayed chain of the proof, with the goals after it."""

    index: int
    chain: str
    goals: str
    """The goals after the chain, as Rocq prints them (empty: the proof is done)."""
    goal_diff: str
    dependencies: tuple[Dependency, ...]

    @property
    def is_keyword(self) -> bool:
        """`Proof.`, `Qed.` and the like: not tactics, never in a CoT."""
        return bool(_KEYWORD.match(self.chain.strip()))

    @property
    def is_have(self) -> bool:
        """A have whose proof became a sub-theorem: step 4 keeps step 2's `(*<have>*)` tag."""
        return OPEN_TAG in self.chain

    @property
    def code(self) -> str:
        """The chain as a CoT shows it: a have without its tags and hidden-proof mark."""
        return shown_code(self.chain)


def shown_code(code: str) -> str:
    """Code without step 4's have markers (`(*<have>*)`, `(*proof*)`, `(*</have>*)`), and no
    blank before a sentence's final period."""
    if OPEN_TAG not in code and HIDDEN_PROOF not in code:
        return code.strip()
    for marker in (OPEN_TAG, HIDDEN_PROOF, CLOSE_TAG):
        code = code.replace(marker, " ")
    return _BLANK_PERIOD.sub(".", re.sub(r"[ \t]{2,}", " ", code)).strip()


@dataclass(frozen=True)
class CotInput:
    """An evaluated theorem (or have sub-theorem) as step 5 reads it."""

    theorem_id: int
    fqn: str
    statement: str
    initial_goal: str
    global_variables: tuple[str, ...]
    statement_dependencies: tuple[Dependency, ...]
    steps: tuple[Step, ...]

    def tactics(self) -> Iterator[tuple[str, Step]]:
        """The steps of the CoT (keywords left out), each with the goals before it."""
        before = self.initial_goal
        for step in self.steps:
            if not step.is_keyword:
                yield before, step
            before = step.goals

    def dependency_fqns(self) -> dict[str, str]:
        """What a search target may say (a name or a fully qualified name) → the fqn."""
        known: dict[str, str] = {}
        deps = [d for step in self.steps for d in step.dependencies]
        for dep in [*deps, *self.statement_dependencies]:
            known.setdefault(dep.name, dep.fqn)
            known.setdefault(dep.fqn, dep.fqn)
        return known


@dataclass(frozen=True)
class Block:
    """One block of a CoT; `target` is the fqn a search looks for (None: a failed search)."""

    kind: str
    content: str
    target: str | None = None

    def to_json(self) -> dict[str, str]:
        data = {"kind": self.kind, "content": self.content}
        return data | ({"target": self.target} if self.target is not None else {})

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Block:
        return cls(data["kind"], data["content"], data.get("target"))


@dataclass(frozen=True)
class CotResult:
    """What step 5 writes for a theorem."""

    writer: str
    """`offline` or `llm:<model>`."""
    tactic_notes: tuple[tuple[int, str], ...]
    """(proof step index, code explanation) for each tactic."""
    proof_note: str
    blocks: tuple[Block, ...]


def parse_cot(text: str) -> list[Block]:
    """The blocks of a CoT, strictly: text outside blocks, unknown, nested or unclosed tags,
    attributes other than a search's `target` and empty blocks are errors."""
    blocks: list[Block] = []
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        opening = _OPEN_TAG.match(text, position)
        if opening is None:
            near = repr(text[position : position + 60])
            raise CotError(f"text outside any block at character {position}: {near}")
        kind = opening["kind"]
        if kind not in KINDS:
            raise CotError(f"unknown tag <{kind}>: the blocks are {', '.join(KINDS)}")
        attributes = dict(_ATTR.findall(opening["attrs"]))
        if attributes and (kind != "search" or set(attributes) != {"target"}):
            raise CotError(f"<{kind}> has attributes {sorted(attributes)}: only search has target")
        close = text.find(f"</{kind}>", opening.end())
        if close < 0:
            raise CotError(f"<{kind}> at character {opening.start()} is never closed")
        content = text[opening.end() : close]
        if inner := _INNER_TAG.search(content):
            raise CotError(f"{inner.group()} inside <{kind}>: blocks cannot nest")
        if not content.strip():
            raise CotError(f"an empty <{kind}> block at character {opening.start()}")
        blocks.append(Block(kind, content.strip(), attributes.get("target")))
        position = close + len(f"</{kind}>")
    if not blocks:
        raise CotError("no block at all")
    return blocks


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def render_cot(blocks: tuple[Block, ...] | list[Block]) -> str:
    """The text of a CoT, as a writer writes it (`parse_cot` reads it back)."""
    parts = []
    for block in blocks:
        target = f' target="{block.target}"' if block.target is not None else ""
        parts.append(f"<{block.kind}{target}>\n{block.content}\n</{block.kind}>")
    return "\n\n".join(parts)


def normalized(code: str) -> str:
    """Text with whitespace aside: runs of blanks count as one space."""
    return " ".join(code.split())


def same_code(written: str, chain_code: str) -> bool:
    """Whether a block's code is a chain's, whitespace and have markers aside."""
    return normalized(shown_code(written)) == normalized(chain_code)


def check_cot(blocks: list[Block], item: CotInput) -> tuple[Block, ...]:
    """The blocks with search targets resolved to fqns, if the scripts and haves are, in
    order, the theorem's chains, every target is a dependency and every have follows a
    failed search; otherwise a `CotError` saying what to fix."""
    expected = [step for _, step in item.tactics()]
    known = item.dependency_fqns()
    position, searched, checked = 0, False, []
    for number, block in enumerate(blocks, 1):
        if block.kind == "search" and block.target is not None:
            if block.target not in known:
                raise CotError(
                    f"search block {number} targets `{block.target}`, which no step uses; "
                    f"targets are the dependencies listed with the steps"
                )
            block = dataclasses.replace(block, target=known[block.target])
        searched = searched or (block.kind == "search" and block.target is None)
        if block.kind == "have" and not searched:
            raise CotError(f"have block {number} does not follow a search without target")
        if block.kind in CODE_KINDS:
            position, searched = match_code(block, number, expected, position), False
        checked.append(block)
    if position < len(expected):
        raise CotError(f"the chain of thought stops before the tactic `{expected[position].code}`")
    return tuple(checked)


def match_code(block: Block, number: int, expected: list[Step], position: int) -> int:
    """Where the proof continues after this script or have block, if it is the proof's next
    chain(s): a have is exactly one have step; a script is one or more other steps."""
    where = f"{block.kind} block {number} `{_excerpt(block.content)}`"
    if position >= len(expected):
        raise CotError(f"{where} comes after the last tactic of the proof")
    following = expected[position]
    if block.kind == "have" or following.is_have:
        same = same_code(block.content, following.code)
        if block.kind == "have" and following.is_have and same:
            return position + 1
        kind = "have" if following.is_have else "script"
        raise CotError(f"{where} is not the proof's next step, the {kind} `{following.code}`")
    wanted, done = normalized(shown_code(block.content)), ""
    for index in range(position, len(expected)):
        if expected[index].is_have:
            break
        done = f"{done} {normalized(expected[index].code)}".strip()
        if done == wanted:
            return index + 1
        if not wanted.startswith(done + " "):
            break
    raise CotError(
        f"{where} is not the proof's next tactic(s), copied exactly; the next is `{following.code}`"
    )


def _excerpt(text: str, limit: int = 80) -> str:
    flat = normalized(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def without_name(text: str, name: str) -> str:
    """The text with the object's name (as a whole word) replaced: a query or docstring
    must describe an object, not name it."""
    if not name:
        return text
    return re.sub(rf"(?<![\w']){re.escape(name)}(?![\w'])", "it", text)


def search_query(dep: Dependency, seed: str) -> str:
    """The offline query for a dependency: the describer's seeded paraphrase of what its name
    and statement say (never its docstring: a query is not its answer's text)."""
    return normalized(describe.query(dep.kind, dep.name, dep.type, seed))


def have_statement(code: str) -> str:
    """What a have states: the text after its first `:` outside brackets (the whole have when
    it has none), without the final period."""
    depth = 0
    for index, char in enumerate(code):
        depth += (char in "([{") - (char in ")]}")
        if char == ":" and depth == 0 and code[index + 1 : index + 2] != "=":
            return code[index + 1 :].strip().rstrip(".").strip()
    return code.strip().rstrip(".")


def offline_tactic_note(goal_before: str, step: Step) -> str:
    """A code explanation with the three sections, from the evaluation alone."""
    uses = ", ".join(f"`{d.name}` (`{normalized(d.type)}`)" for d in step.dependencies)
    effect = step.goal_diff.strip() or "The goals do not visibly change."
    if step.goals.strip() in ("", NO_GOALS):
        effect += "\nNo goal remains: the proof is complete."
    return (
        f"## Breaking it down\nThe step runs `{normalized(step.code)}`"
        f"{f', using {uses}' if uses else ', using no library fact'}.\n\n"
        f"## What happens\nBefore it, the goal is:\n{goal_before.strip()}\n\n{effect}\n\n"
        f"## Summary\nThis step runs `{normalized(step.code)}`."
    )


def offline_proof_note(item: CotInput) -> str:
    """A proof explanation with the two sections, from the evaluation alone."""
    tactics = [step for _, step in item.tactics()]
    haves = sum(step.is_have for step in tactics)
    steps = "\n".join(f"- `{normalized(step.code)}`" for step in tactics)
    return (
        f"## Statement\n{normalized(item.statement)}\n\n"
        f"## Proof\nThe proof takes {len(tactics)} steps, {haves} of them intermediate facts "
        f"stated with `have`:\n{steps}"
    )


def offline_cot(item: CotInput) -> tuple[Block, ...]:
    """The CoT of the offline writer: think blocks from goals and diffs, a search per new
    dependency (query from its docstring or statement), the scripts, and a failed search
    before each have."""
    blocks = [Block("think", f"I have to prove {normalized(item.statement)}")]
    found: set[str] = set()
    for goal, step in item.tactics():
        if step.is_have:
            blocks += _have_blocks(goal, step)
        else:
            blocks += _script_blocks(goal, step, found, item.fqn)
    return merge_thinking(blocks)


def merge_thinking(blocks: list[Block]) -> tuple[Block, ...]:
    """Consecutive think blocks as one: one stretch of reasoning between two actions."""
    merged: list[Block] = []
    for block in blocks:
        if block.kind == "think" and merged and merged[-1].kind == "think":
            block = Block("think", f"{merged.pop().content}\n\n{block.content}")
        merged.append(block)
    return tuple(merged)


def _script_blocks(goal: str, step: Step, found: set[str], theorem: str) -> list[Block]:
    blocks = [Block("think", f"The goal is now:\n{goal.strip()}")]
    for dep in step.dependencies:
        if dep.fqn in found:
            continue
        found.add(dep.fqn)
        blocks.append(Block("search", search_query(dep, f"{theorem}:{dep.fqn}"), dep.fqn))
        why = f"`{dep.name}` states `{normalized(dep.type)}`, which is the fact this step needs."
        blocks.append(Block("think", why))
    change = step.goal_diff.strip() or "It should not change the goals visibly."
    blocks.append(Block("think", f"I run `{normalized(step.code)}`. Expected change:\n{change}"))
    blocks.append(Block("script", step.code))
    return blocks


def _have_blocks(goal: str, step: Step) -> list[Block]:
    statement = have_statement(step.code)
    return [
        Block("think", f"The goal is now:\n{goal.strip()}\nAn intermediate fact would help."),
        Block("search", normalized(f"a fact stating that {statement}")),
        Block("think", "The library has no such fact in this form: I state it myself."),
        Block("have", step.code),
    ]


def offline_result(item: CotInput) -> CotResult:
    """Everything step 5 stores, written offline."""
    notes = tuple((step.index, offline_tactic_note(goal, step)) for goal, step in item.tactics())
    return CotResult(OFFLINE, notes, offline_proof_note(item), offline_cot(item))
