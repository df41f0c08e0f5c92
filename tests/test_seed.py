"""The seed mapping, field by field (pure): where a file is, dependencies, notations, goals."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.exports.records import DictionaryEntry, TheoremRecord
from app.exports.seed import Docstrings, dependency, file_location, notations, target
from app.goal_diff import goal_list, render
from app.rocq.goals import Goal, Goals, Hypothesis


def theorem(output: str, prefix: str) -> TheoremRecord:
    return TheoremRecord(1, f"{prefix}.ssrfun.t", None, "Lemma t : True.", "Proof. by []. Qed.",
                         None, 3, 0, None, None, "ssrfun.v", output, prefix)  # fmt: skip


def test_the_file_is_under_the_library_folders_and_the_prefix_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "steps" / "step_0" / "mc" / "mathcomp" / "ssreflect"
    prefix, filepath = file_location(theorem(str(copy), "mathcomp.ssreflect"))
    assert (prefix, filepath) == ("steps/step_0/mc", "mathcomp/ssreflect/ssrfun.v")
    elsewhere = tmp_path / "out"
    assert file_location(theorem(str(elsewhere), "mathcomp.ssreflect")) == (".", "out/ssrfun.v")


ENTRY = DictionaryEntry("lib.a.addnC", "addnC", "thm", "Lemma addnC …", "It commutes.", "llm",
                        True)  # fmt: skip


def test_a_dependency_always_has_info_with_its_fqn_and_strings_not_nulls() -> None:
    bare = {"name": "addnC", "fqn": "lib.a.addnC", "kind": "thm", "type": None, "info": None}
    before = dependency(bare, Docstrings({}, with_step_6=False))
    assert before == {
        "name": "addnC", "fqn": "lib.a.addnC", "type": "",
        "info": {"fqn": "lib.a.addnC", "name": "addnC", "kind": "thm", "fullname": "",
                 "docstring": ""},
    }  # fmt: skip
    after = dependency(bare, Docstrings({"lib.a.addnC": ENTRY}, with_step_6=True))
    assert after["info"]["docstring"] == "It commutes." and after["force_result"] is True
    assert "force_result" not in dependency(bare, Docstrings({"lib.a.addnC": ENTRY}, False))
    assert target("lib.a.addnC", {"lib.a.addnC": ENTRY}) == {
        "name": "addnC",
        "force_result": True,
        "fqn": "lib.a.addnC",
    }


def test_notations_are_tables_by_scope() -> None:
    items = [
        {"notation": "_ + _", "scope": "nat_scope", "fqn": "lib.a.:nat:x_'+'_x", "info": None},
        {"notation": "[ seq _ | _ <- _ ]", "scope": None, "fqn": "lib.seq.x", "info": {
            "docstring": "map", "fullname": "Notation …"}},
    ]  # fmt: skip
    table = notations(items)
    assert set(table) == {"scope", "noscope"}
    plus = table["scope"]["nat_scope"]["lib.a.:nat:x_'+'_x"]
    assert plus["name"] == "_ + _" and plus["info"]["fqn"] == "lib.a.:nat:x_'+'_x"
    assert table["noscope"]["lib.seq.x"]["info"]["docstring"] == "map"


def test_goals_are_a_list_empty_when_the_proof_is_done() -> None:
    n = Hypothesis(("n",), None, "nat")
    one, two = Goal((n,), "n = n", None), Goal((n,), "0 <= n", None)
    assert goal_list(render(Goals((one, two)))) == [one.pretty, two.pretty]
    assert goal_list(render(Goals((one,)))) == [one.pretty]
    assert goal_list(render(Goals((), (two,)))) == [two.pretty]
    assert goal_list(render(Goals())) == []
