"""The system and user turns of a training example, written from the library and the proof.

The user turn is the whole proof state as a person sees it in an IDE when the proof starts:
every section variable, hypothesis, `Let` and `Context` binder in scope, with its type (Rocq
lists them first in the goal's context), then the statement's own hypotheses and the goal. The
original gave the goal without the section's variables, so its examples used names (`T`, `e`,
`dec`) the prompt never introduced.

The system prompt names the library, says whether it is written in SSReflect style, and gives
the Rocq and library versions (`app.exports.records.versions`).
"""

from __future__ import annotations

from typing import Any

from app.exports.records import LibraryFacts

_BLOCKS = (
    "Prove the goal the user gives by writing blocks, one after the other:\n"
    "<think>...</think> to reason about the goal;\n"
    "<search>...</search> to describe a library fact you need (the search engine answers with "
    "the library's closest facts);\n"
    "<script>...</script> to run tactics;\n"
    "<have>...</have> to state an intermediate fact, proved on its own.\n"
    "After each search, script and have, the environment answers in a <result> block: the "
    "search results, or the goals left by Rocq. The proof is complete when no goal remains."
)


def user_turn(evaluation: dict[str, Any] | None) -> str:
    """The proof state at the start of the proof, section variables included."""
    evaluation = evaluation or {}
    return evaluation.get("initial_goal_with_gvars") or evaluation.get("initial_goal") or ""


def library_line(library: LibraryFacts | None) -> str:
    """Who the prover is and what it works with, in one sentence."""
    if library is None:
        return "You are a Rocq (Coq) prover."
    rocq = f"Rocq {library.rocq_version}" if library.rocq_version else "Rocq"
    version = f" {library.version}" if library.version else ""
    style = ", in SSReflect style" if library.ssreflect else ", without SSReflect"
    return (
        f"You are a {rocq} prover working with the library {library.name}{version} "
        f"(logical path {library.logical_prefix}){style}."
    )


def system_prompt(library: LibraryFacts | None) -> str:
    """The system turn of every example of a library."""
    return f"{library_line(library)} {_BLOCKS}"
