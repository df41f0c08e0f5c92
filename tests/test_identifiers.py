"""The identifier check (pure): what introduces a name, and what a script may not use."""

from __future__ import annotations

from app.cot import Block
from app.identifiers import unintroduced, words

WITH_SECTION = (
    "A : Type\ndec : forall x y : A, {x = y} + {x <> y}\na : A\nl : list A\n"
    "============================\nIn a l -> In a (l ++ nil)"
)
WITHOUT_SECTION = "a : A\nl : list A\n============================\nIn a l -> In a (l ++ nil)"
SCRIPT = [
    Block("think", "Induction on the list."),
    Block("script", "induction l as [|x l IH]; simpl; intros H."),
    Block("script", "destruct (dec a x) as [e|n]."),
]


def names(prompt: str, blocks: list[Block], library: set[str] = frozenset(), trained=None):
    return [(p.block, p.name) for p in unintroduced(prompt, blocks, library, trained)]


def test_a_section_hypothesis_must_be_in_the_prompt() -> None:
    assert names(WITH_SECTION, SCRIPT) == []
    assert names(WITHOUT_SECTION, SCRIPT) == [(2, "dec")]
    problem = unintroduced(WITHOUT_SECTION, SCRIPT, ())[0]
    assert problem.reason() == "script block 2 uses `dec`, which nothing before it introduces"


def test_binders_of_the_block_introduce_names() -> None:
    blocks = [
        Block("script", "move=> n m /eqP h; rewrite h."),
        Block("script", "case: n => [|k] //; elim: m => [|p IHp] //."),
        Block("have", "have [y hy] : exists y, y = k."),
        Block("script", "by apply: (fun z => z) hy."),
        Block("script", "rewrite (big_morph _ _ _) /= \\sum_(i < 3) i."),
    ]
    assert names("", blocks, {"eqP", "big_morph"}) == []


def test_library_names_search_results_and_earlier_blocks_introduce_names() -> None:
    blocks = [Block("script", "by rewrite addnC.")]
    assert names("n : nat\n====\nn + 0 = 0 + n", blocks) == [(1, "addnC")]
    assert names("n : nat\n====\nn + 0 = 0 + n", blocks, {"addnC"}) == []
    found = [Block("search", "commutativity"), Block("result", "1. Lemma addnC : …"), *blocks]
    assert names("", found) == []
    qualified = [Block("script", "by rewrite GRing.addrC.")]
    assert names("", qualified, {"addrC"}) == []
    assert names("", qualified) == [(1, "GRing.addrC")]


def test_only_the_blocks_a_trainer_learns_from_are_checked() -> None:
    blocks = [Block("script", "by rewrite foo."), Block("script", "by rewrite bar.")]
    assert names("", blocks) == [(1, "foo"), (2, "bar")]
    assert names("", blocks, trained=[False, True]) == [(2, "bar")]


def test_words_are_identifiers_and_their_parts() -> None:
    text = 'rewrite GRing.addrC "not a name" 2%N n.+1 \\sum_(i < n) x'
    assert words(text) == {"rewrite", "GRing.addrC", "GRing", "addrC", "n", "i", "x"}
