"""The comment lexer and the header documentation harvest (pure functions), on the machine
toolchain's MathComp and SSReflect sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.rocq.lexer import UnterminatedError, comments, header_docs, strip_comments
from app.rocq.toolchain import Toolchain


def test_nested_comments_and_strings() -> None:
    source = 'Lemma a : "(*" = "x""*)". (* outer (* inner *) "*)" still outer *) Qed.'
    assert strip_comments(source) == 'Lemma a : "(*" = "x""*)".  Qed.'
    assert [c.text for c in comments(source)] == ['(* outer (* inner *) "*)" still outer *)']


def test_comment_only_lines_disappear_blank_lines_stay() -> None:
    source = "(* header\n   more *)\nA.\n\n(* note *)\nB. (* tail *)\nC(*x*)D.\n"
    assert strip_comments(source) == "A.\n\nB.\nC D.\n"


def test_unterminated_comment_or_string_is_an_error() -> None:
    with pytest.raises(UnterminatedError, match="comment opened at character 3"):
        strip_comments("A. (* never closed")
    with pytest.raises(UnterminatedError, match="string"):
        strip_comments('A. "open')


def test_stripped_mathcomp_file_has_no_comment_left_and_keeps_every_sentence_end(
    mathcomp_dir: Path,
) -> None:
    source = (mathcomp_dir / "ssreflect/seq.v").read_text()
    stripped = strip_comments(source)
    assert comments(stripped) == []
    assert stripped.count("Qed.") == source.count("Qed.") - sum(
        c.text.count("Qed.") for c in comments(source)
    )


def test_header_docs_of_seq(mathcomp_dir: Path) -> None:
    docs = header_docs((mathcomp_dir / "ssreflect/seq.v").read_text())
    by_term = {doc.term: doc for doc in docs}
    size = by_term["size s"]
    assert size.relation == "==" and size.description == "the number of items (length) in s."
    assert size.head == "size"
    shape = by_term["shape ss"]  # a description continued on the next line
    assert (
        shape.description == "the sequence of sizes of the items of the sequence of sequences ss."
    )
    assert by_term["has a s"].relation == "<=>"


def test_header_docs_of_multi_line_coqdoc_comments(toolchain: Toolchain) -> None:
    """Rocq's own SSReflect files document themselves in one `(** ... *)` comment."""
    source = "Require Bool.\n(**\n Intro.\n   is_true b == the coercion\n"
    source += "                 of b.\n *)\n"
    (doc,) = header_docs(source)
    assert (doc.term, doc.relation, doc.head) == ("is_true b", "==", "is_true")
    assert (doc.description, doc.line) == ("the coercion of b.", 3)
    assert header_docs("(* a\n b == c *)\n") == []  # a plain comment: not documentation
    rocq = (toolchain.host(toolchain.theories) / "ssr/ssrbool.v").read_text()
    assert {"is_true b", "reflect P b"} <= {doc.term for doc in header_docs(rocq)}
