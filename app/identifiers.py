"""The identifier check: every name a script or have block uses must be introduced before it.

An example teaches a prover to write its scripts from what it sees; a script that names a
section variable, a hypothesis or a lemma that nothing before it introduces teaches it to
guess. A name is introduced by the prompt (the whole proof state, section variables included),
by an earlier block of the example (its thinks, searches, results, scripts), by a binder
earlier in the same block (an intro pattern, `have h`, `forall x`, `as [a b]`, …), or by the
library the prompt names: the library objects step 4 found the proof naming (Rocq's glob
references), Rocq's and SSReflect's tactic language, and notation heads (`[seq …]`, `{in …}`).

Pure text: the exporter and `rocqcot verify` call `unintroduced` with the same inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.cot import CODE_KINDS, Block, shown_code

_IDENT = re.compile(r"(?<![\w'.\\%])[A-Za-z_][\w']*(?:\.[A-Za-z_][\w']*)*")
_STRING = re.compile(r'"(?:[^"]|"")*"')
_NOTATION_HEAD = re.compile(r"[\[{]\s*([A-Za-z_][\w']*)")
_BIG_BINDER = re.compile(r"_\(\s*([A-Za-z_][\w']*)")
_ARROW_BINDER = re.compile(r"([A-Za-z_][\w']*)\s*<-")
_PATTERN_BINDER = re.compile(r"\[\s*([A-Za-z_][\w']*)\s+in\b")
# Where binders start, and the words or marks that end them (at bracket depth 0).
_INTRODUCERS = {
    "=>": (";", "."),
    "intro": (";", ".", "in", "using", "with"),
    "intros": (";", ".", "in", "using", "with"),
    "as": (";", ".", "in", "using", "eqn", "with"),
    "eqn": (";", ".", "in", "using", "with"),
    "into": (";", "."),
    "have": (":", ":=", ";", ".", "by"),
    "suff": (":", ":=", ";", ".", "by"),
    "suffices": (":", ":=", ";", ".", "by"),
    "wlog": (":", ":=", ";", ".", "by"),
    "set": (":", ":=", ";", "."),
    "pose": (":", ":=", ";", "."),
    "assert": (":", ":=", ";", ".", "by"),
    "enough": (":", ":=", ";", ".", "by"),
    "remember": (";", "."),
    "fix": (":", ":=", "{", "."),
    "cofix": (":", ":=", "."),
    "forall": (",",),
    "exists": (",",),
    "exists2": (",",),
    "fun": ("=>",),
    "let": (":=",),
}
_TOKEN = re.compile(r"=>|:=|[A-Za-z_][\w']*(?:\.[A-Za-z_][\w']*)*|\.(?=\s|$)|[;:,(){}\[\]]|\S")

_KEYWORD_TEXT = """
    Type Prop Set SProp forall fun exists exists2 let in if then else is match with end return
    as fix cofix struct at using eqn into on
    intro intros apply eapply exact eexact refine rewrite erewrite reflexivity symmetry
    transitivity etransitivity split left right constructor econstructor eexists destruct
    edestruct induction einduction case elim eelim inversion inversion_clear injection
    discriminate congruence auto eauto trivial easy tauto intuition firstorder lia nia lra nra
    omega ring field ring_simplify field_simplify simpl cbn cbv compute hnf red unfold fold
    pattern change assert enough pose set remember clear clearbody revert generalize specialize
    subst contradiction contradict exfalso absurd assumption eassumption f_equal replace cut
    unshelve shelve idtac fail try repeat do first solve progress now by done last abstract
    instantiate rename dependent vm_compute native_compute lazy decide proof
    move have suff suffices wlog without loss gen generally congr unlock under over elimtype
    goal context fresh type of constr ltac uconstr open_constr lazymatch multimatch numgoals
    guard Proof Qed Defined Admitted beta delta iota zeta head native_cast_no_check vm_cast_no_check
    setoid_rewrite autorewrite autounfold typeclasses core arith zarith
"""
KEYWORDS = frozenset(_KEYWORD_TEXT.split())
"""Rocq's and SSReflect's tactic language and term keywords."""


@dataclass(frozen=True)
class Unintroduced:
    """A name a code block uses that nothing before it introduces."""

    block: int
    """The block's 1-based place among the example's code (script and have) blocks."""
    kind: str
    name: str

    def reason(self) -> str:
        return (
            f"{self.kind} block {self.block} uses `{self.name}`, which nothing before it introduces"
        )


def words(text: str) -> set[str]:
    """The identifiers of a text, qualified ones also by each of their parts."""
    found = set()
    for token in _IDENT.findall(_STRING.sub(" ", text)):
        found.add(token)
        found.update(token.split("."))
    return found


def _binders(code: str) -> set[str]:
    """The names a block introduces itself (over-approximated: a name in a binder position,
    wherever the block introduces it)."""
    found = set(_BIG_BINDER.findall(code)) | set(_ARROW_BINDER.findall(code))
    found |= set(_PATTERN_BINDER.findall(code)) | set(_NOTATION_HEAD.findall(code))
    tokens = _TOKEN.findall(code)
    for index, token in enumerate(tokens):
        stops = _INTRODUCERS.get(token)
        if stops is None:
            continue
        depth = 0
        for following in tokens[index + 1 :]:
            if depth == 0 and following in stops:
                break
            depth += (following in "([{") - (following in ")]}")
            if depth < 0:
                break
            if following[:1].isalpha() or following[:1] == "_":
                found.update(following.split("."))
    return found


def unintroduced(
    prompt: str,
    blocks: Sequence[Block],
    library: Iterable[str],
    trained: Sequence[bool] | None = None,
) -> list[Unintroduced]:
    """The names the code blocks use that neither the prompt, nor an earlier block, nor a binder
    of their own, nor the library introduces, in order (each name reported once). With
    `trained`, only the blocks a trainer learns from are checked (a masked block was checked in
    the example that trained on it, where its context was)."""
    known = words(prompt) | KEYWORDS | {part for name in library for part in words(name)}
    problems: list[Unintroduced] = []
    code_number = 0  # blocks are numbered among code blocks, as `verify` numbers them
    for index, block in enumerate(blocks):
        if block.kind in CODE_KINDS:
            code_number += 1
        if block.kind in CODE_KINDS and (trained is None or trained[index]):
            code = shown_code(block.content)
            own = _binders(code)
            for token in _IDENT.findall(_STRING.sub(" ", code)):
                last = token.rpartition(".")[2]
                if token.strip("_") and not ({token, last} & (known | own)):
                    problems.append(Unintroduced(code_number, block.kind, token))
                    known.add(token)
        known |= words(block.content)
    return problems
