"""The offline describer and MathComp's naming conventions: pure functions, tested directly."""

from __future__ import annotations

import re

import pytest

from app.cot import Dependency, search_query
from app.describe import description, gist, jaccard, query, statement_body
from app.naming import name_parts, notation_words

MODND = (
    "Lemma modnD m n d : 0 < d ->\n  (m + n) %% d = m %% d + n %% d - (m %% d + n %% d >= d) * d."
)
IN_SETU = r"Lemma in_setU x A B : (x \in A :|: B) = (x \in A) || (x \in B)."
ENTRIES = [
    ("thm", "modnD", MODND),
    ("thm", "in_setU", IN_SETU),
    ("thm", "addnA", "Lemma addnA : associative addn."),
    ("thm", "size_cat", "Lemma size_cat s1 s2 : size (s1 ++ s2) = size s1 + size s2."),
    ("thm", "leq_trans", "Lemma leq_trans n m p : m <= n -> n <= p -> m <= p."),
    ("thm", "andP", r"Lemma andP b1 b2 : reflect (b1 /\ b2) (b1 && b2)."),
    ("def", "size", "Fixpoint size s := if s is _ :: s' then (size s').+1 else 0."),
    ("thm", "dvdn_trans", "forall d m n : nat, d %| m -> m %| n -> d %| n"),
    ("thm", "prime_gt1", "Lemma prime_gt1 p : prime p -> 1 < p."),
]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("addnA", ["addition of natural numbers, associativity"]),
        ("modnD", ["remainder of division of a sum"]),
        ("in_setU", ["membership", "union of sets"]),
        ("size_cat", ["size of a sequence", "concatenation of sequences"]),
        ("setIC", ["intersection of sets, commutativity"]),
        ("perm_eq_sym", ["permutation of sequences", "symmetry"]),
        ("cards1", ["cardinality of a set of a singleton"]),
        ("mulnDl", ["multiplication of natural numbers of a sum on the left"]),
    ],
)
def test_names_are_read_by_the_naming_conventions(name: str, words: list[str]) -> None:
    assert [part.words for part in name_parts(name)] == words


def test_notations_name_their_notions_and_longer_symbols_win() -> None:
    assert notation_words(r"(x \in A :|: B) = (x \in A) || (x \in B)") == [
        "union", "membership", "disjunction",
    ]  # fmt: skip
    assert "less than" not in notation_words("m <= n -> n <= p")


def test_a_statement_is_read_without_its_header_or_binders() -> None:
    assert statement_body("Lemma leq_trans n m p : m <= n -> n <= p -> m <= p.") == (
        "m <= n -> n <= p -> m <= p"
    )
    assert statement_body("forall (T : Type) (s : seq T), size (rev s) = size s") == (
        "size (rev s) = size s"
    )
    shapes = {name: gist(kind, name, text).shape for kind, name, text in ENTRIES}
    assert shapes["modnD"] == shapes["size_cat"] == "equation"
    assert shapes["andP"].startswith("reflection") and shapes["addnA"] == "associativity"
    assert shapes["leq_trans"] == "inequality" and gist("thm", "x", MODND).hypotheses == 1


def test_a_description_says_what_the_name_and_statement_say() -> None:
    assert description("thm", "modnD", MODND) == (
        "Lemma about remainder of division of a sum: an equation involving at least, product "
        "and difference, under one hypothesis."
    )
    assert "union" in description("thm", "in_setU", IN_SETU)
    assert description("def", "size", ENTRIES[6][2]).startswith("Definition about length")


@pytest.mark.parametrize(("kind", "name", "statement"), ENTRIES)
def test_queries_never_name_their_object_nor_quote_its_statement(
    kind: str, name: str, statement: str
) -> None:
    body = statement_body(statement)
    for seed in range(20):
        text = query(kind, name, statement, f"seed {seed}")
        assert not re.search(rf"(?<![\w']){re.escape(name)}(?![\w'])", text), text
        assert body not in text and text.strip()
    assert not re.search(rf"\b{name}\b", description(kind, name, statement))


def test_queries_vary_with_the_seed_and_repeat_with_it() -> None:
    drawn = {query("thm", "modnD", MODND, f"thm{i}") for i in range(20)}
    assert len(drawn) >= 8
    assert query("thm", "modnD", MODND, "a") == query("thm", "modnD", MODND, "a")


def test_a_query_is_not_its_description_again() -> None:
    """Token Jaccard above 0.8 with the docstring would only move the leak."""
    close = [
        jaccard(query(kind, name, text, f"t{seed}"), description(kind, name, text)) > 0.8
        for kind, name, text in ENTRIES
        for seed in range(20)
    ]
    assert sum(close) / len(close) <= 0.1


def test_the_offline_writer_searches_with_the_describer_not_the_docstring() -> None:
    dep = Dependency("mathcomp.div.modnD", "modnD", "thm", statement_body(MODND), "A docstring.")
    first, second = search_query(dep, "lemma_a:modnD"), search_query(dep, "lemma_b:modnD")
    assert "docstring" not in first.lower()
    assert first == query("thm", "modnD", dep.type, "lemma_a:modnD")
    assert first != second  # another theorem, another paraphrase
