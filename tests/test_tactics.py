"""The tactics-only rule for text from a dataset or an LLM (`app.rocq.tactics`): hostile
scripts are refused with their reason, real proofs pass. Its use by `rocqcot verify`, with Rocq
running, is in `tests/test_run.py`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import DEFAULT_LIBRARY
from app.rocq.lexer import strip_comments
from app.rocq.sentences import split_sentences
from app.rocq.tactics import NotATactic, tactic_sentences

HOSTILE = {
    'intros n. Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    'Load "evil".': "`Load` is a vernacular command",
    'Cd "/tmp".': "`Cd` is a vernacular command",
    'Add LoadPath "/tmp" as Evil.': "`Add` is a vernacular command",
    'Declare ML Module "evil_plugin".': "`Declare` is a vernacular command",
    'Extraction "out.ml" nat.': "`Extraction` is a vernacular command",
    "Require Import Evil.": "`Require` is a vernacular command",
    "From Coq Require Import List.": "`From` is a vernacular command",
    "Set Printing All.": "`Set` is a vernacular command",
    "Unset Printing Notations.": "`Unset` is a vernacular command",
    "Print nat.": "`Print` is a vernacular command",
    "Local Ltac evil := idtac.": "`Local` is a vernacular command",
    "#[local] Hint Resolve foo : core.": "an attribute `#[…]`",
    'Time Redirect "out" Print nat.': "`Time` is a vernacular command",
    'Fail Fail Redirect "out" Print nat.': "`Fail` is a vernacular command",
    'Timeout 5 Redirect "out" Print nat.': "`Timeout` is a vernacular command",
    'all: Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    '2: Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    '- Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    '{ Redirect "out" Print nat. }': "`Redirect` is a vernacular command",
    # `...` ends a sentence as `.` does: the command after it is a sentence of its own.
    'split... Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    'idtac. (* a comment *) Redirect "out" Print nat.': "`Redirect` is a vernacular command",
    "Definition x := 1.": "`Definition` is a vernacular command",
    "Qed.": "`Qed` is a vernacular command",
    "Eval compute in 1.": "`Eval` is a vernacular command",
    "Extract Constant nat => int.": "`Extract` is a vernacular command",
    "_ .": "a tactic starts with its name",
}

TACTICS = [
    "intros n.",
    "by [].",
    "- by [].",
    "++ done.",
    "2: { done. }",
    "[x]: { done. }",
    "all: by move=> ?.",
    "1-2, 4: done.",
    "par: auto.",
    "[> idtac | idtac ].",
    "(idtac; idtac).",
    "rewrite /= addnC.",
    "move=> [|n IHn] //=.",
    "have h : n.+1 = n + 1 by rewrite addn1.",
    'idtac "Redirect".',
    "apply: (iffP idP) => [/eqP ->|] //. (* Print nat. *)",
]


@pytest.mark.parametrize(("script", "reason"), HOSTILE.items())
def test_hostile_sentences_are_refused_with_their_reason(script: str, reason: str) -> None:
    with pytest.raises(NotATactic, match=re.escape(reason)):
        tactic_sentences(script)


@pytest.mark.parametrize("script", TACTICS)
def test_tactics_bullets_and_braces_pass(script: str) -> None:
    assert "".join(tactic_sentences(script)).replace(" ", "") == (
        re.sub(r"\(\*.*?\*\)", "", script).replace(" ", "")
    )


def test_the_refusal_names_the_sentence() -> None:
    with pytest.raises(NotATactic) as refused:
        tactic_sentences('intros n.\n  Redirect   "out"\nPrint nat.')
    assert str(refused.value).startswith('sentence 2 `Redirect "out" Print nat.` is not a tactic')


def test_every_sentence_of_mathcomp_proofs_is_a_tactic() -> None:
    """The rule refuses no sentence of a real library's proofs (between `Proof.` and `Qed.`)."""
    checked = 0
    for path in sorted(Path(DEFAULT_LIBRARY, "ssreflect").glob("*.v")):
        data = strip_comments(path.read_text(encoding="utf-8")).encode()
        in_proof = False
        for start, end in split_sentences(data):
            sentence = data[start:end].decode()
            if re.match(r"(Qed|Defined)\.", sentence):
                in_proof = False
            elif in_proof:
                tactic_sentences(sentence)
                checked += 1
            in_proof = in_proof or sentence == "Proof."
    assert checked > 5000
