"""The dictionary: modules and sections, header docstrings, trust between docstring sources,
the LLM4Docq format and its errors; then the dictionary of a small library of our own built by
real coqc in a real PostgreSQL: every glob definition a row, reruns, a file's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import dictionary as dico
from app import file_names, llm4docq
from app.db import engine as db
from app.db.models import LibraryObject, SourceFile
from tests.test_step_4 import build, demo  # noqa: F401 (the module fixture)


def sentences(*texts: str) -> list[dict]:
    """Sentences laid out one after the other, one byte apart."""
    found, at = [], 0
    for text in texts:
        found.append({"text": text, "byte_start": at, "byte_end": at + len(text)})
        at += len(text) + 1
    return found


def test_scope_stacks_follow_modules_and_sections() -> None:
    stacks = file_names.scope_stacks(
        sentences(
            "Module M.",
            "Section S.",
            "Lemma a : True.",
            "End S.",
            "Module N := M.",
            "Module Type T.",
            "Definition b := 0.",
            "End T.",
            "Lemma c : True.",
        )
    )
    names = [[scope.name for scope in stack] for stack in stacks]
    assert names[2] == ["M", "S"] and names[4] == ["M"] and names[6] == ["M", "T"]
    assert names[8] == ["M"]
    section = stacks[2][1]
    assert section.kind == "Section" and section.opened_at(20) and not section.opened_at(60)


def test_hierarchy_builder_builders_open_a_section_named_by_the_glob() -> None:
    """`HB.builders` opens a section the text does not name, with the variables it declares
    itself, until `HB.end.`; its name is the glob's."""
    laid_out = sentences(
        "Module Num.",
        "HB.builders Context R of IsNum R.",
        "Lemma a : True.",
        "HB.end.",
        "Lemma b : True.",
    )
    builders = laid_out[1]["byte_start"]
    definitions = [{"kind": "sec", "byte_start": builders, "name": "Builders_41"}]
    stacks = file_names.scope_stacks(laid_out, definitions)
    names = [[scope.name for scope in stack] for stack in stacks]
    assert names == [[], ["Num"], ["Num", "Builders_41"], ["Num", "Builders_41"], ["Num"]]
    section = stacks[2][1]
    assert section.kind == "Section" and section.end == laid_out[3]["byte_end"]


def test_header_docstrings_and_trust() -> None:
    objects = [
        dico.DictionaryObject(
            1, "lib.size", "def", "size", "Definition size := 0.", None, 0, "", 0
        ),
        dico.DictionaryObject(1, "lib.x", "not", "_ + _", "Notation ...", "nat_scope", 1, "", 1),
    ]
    docs = [
        {
            "term": "size s",
            "relation": "==",
            "description": "the length",
            "line": 3,
            "head": "size",
        },
        {"term": "size2 s", "relation": "==", "description": "other", "line": 4, "head": "size2"},
        {"term": "size0", "relation": ":=", "description": "zero", "line": 2, "head": "size"},
    ]
    assert dico.header_docstrings(objects, docs) == {
        ("lib.size", "def"): "size0 := zero\nsize s == the length"
    }
    assert dico.merged_docstring(("from file", "dictionary"), "header") == (
        "from file",
        "dictionary",
    )
    assert dico.merged_docstring(("by a model", "llm"), "header") == ("header", "header")
    assert dico.merged_docstring(("old header", "header"), None) == (None, None)
    assert dico.merged_docstring(("by a model", "llm"), None) == ("by a model", "llm")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"objects": [], "extra": 1}', "the top level: unknown keys ['extra']"),
        ('{"objects": [{"keys": ["a"], "value": {"docstring": "d", "colour": 1}}]}',
         "objects[0].value: unknown keys ['colour']"),
        ('{"objects": [{"keys": "a", "value": {}}]}', "objects[0]: `keys` must be"),
        ('{"notations": {"scope": {"nat_scope": {"a.b": {"doc": "x"}}}}}',
         "notations.scope['nat_scope']['a.b'].value: unknown keys ['doc']"),
    ],
)  # fmt: skip
def test_dictionary_file_errors_name_the_file_and_the_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "dictionary.json"
    path.write_text(content)
    with pytest.raises(llm4docq.DictionaryFileError) as raised:
        llm4docq.read_llm4docq(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def objects_by_key() -> dict[tuple[str, str], LibraryObject]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(LibraryObject)).scalars()
        return {(o.fqn, o.kind): o for o in rows}


def test_dictionary_of_a_library(demo, subprocess_env, tmp_path: Path) -> None:  # noqa: F811
    build(demo, subprocess_env)
    with db.session_factory().begin() as session:
        summary = dico.build_dictionary(session)
        files = {f.path: f for f in session.execute(sa.select(SourceFile)).scalars()}
    objects = objects_by_key()
    expected = {
        (d["fqn"], d["kind"])
        for f in files.values()
        for d in f.glob["definitions"]
        if d["kind"] not in file_names.LOCAL_KINDS
    }
    assert set(objects) == expected and summary.objects == len(expected)
    double = objects[("demo.base.double", "def")]
    assert double.docstring == "double n == twice n" and double.docstring_source == "header"
    assert double.fullname == "Definition double n := n + n." and double.line == 7  # built copy
    assert objects[("demo.base.Sub.tripleE", "prf")].historic == "Sub"
    assert objects[("demo.proofs.dk", "def")].historic == "Doubling"
    notation = next(o for o in objects.values() if o.kind == "not" and o.fqn.startswith("demo."))
    assert (notation.name, notation.scope) == ("_ .*2'", "nat_scope")
    base, proofs = objects[("demo.base.double", "def")], objects[("demo.proofs.dk", "def")]
    assert base.library_order < proofs.library_order
    with db.session_factory().begin() as session:
        assert dico.build_dictionary(session).written == 0

    exported = tmp_path / "dictionary.json"
    with db.session_factory()() as session:
        data = llm4docq.export_dictionary(session)
    for entry in data["objects"]:
        entry["value"]["docstring"] = f"about {entry['keys'][0]}"
    for table in data["notations"]["scope"].values():
        for value in table.values():
            value["docstring"] = "a notation"
    data["objects"].append({"keys": ["elsewhere.x"], "value": {"docstring": "not ours"}})
    exported.write_text(json.dumps(data))
    with db.session_factory().begin() as session:
        imported = llm4docq.import_dictionary(session, exported)
        dico.build_dictionary(session)  # a rebuild keeps the dictionary file's docstrings
        again = llm4docq.export_dictionary(session)
    assert imported.unmatched == ("elsewhere.x",)
    assert again["objects"] == data["objects"][:-1] and again["notations"] == data["notations"]
    assert objects_by_key()[("demo.base.double", "def")].docstring_source == "dictionary"
