"""The build against the machine's coqc/coqdep, on copies of its MathComp's first ssreflect
files."""

import shutil
from pathlib import Path

import pytest

from app.rocq.build import (
    MANIFEST_NAME,
    BuildResult,
    BuildStatus,
    build,
)
from app.rocq.dependencies import dependencies, library_name
from app.rocq.glob import read_glob
from app.rocq.positions import Position, SourceText
from app.rocq.sentences import split_sentences
from app.rocq.toolchain import current

CHAIN = ["ssreflect", "ssrnotations", "ssrfun", "ssrbool", "eqtype", "ssrnat", "seq", "div"]
UNICODE = """(* ⋯ non-ASCII before everything: bytes and characters differ *)
Definition café := 1.
Notation "x ⊕ y" := (x + y) (at level 50).
Lemma café_plus : café ⊕ 1 = 2. (* ∑ *) Proof. reflexivity. Qed.
"""
PROBE = """From mathcomp Require Import ssrfun.
Locate Library mathcomp.ssreflect.ssrfun.
"""


def _ssreflect() -> Path:
    """The machine toolchain's MathComp ssreflect folder."""
    return current().default_library() / "ssreflect"


def _copy(root: Path, names: list[str]) -> None:
    """Copy MathComp ssreflect sources into a fresh tree mapped to `mathcomp`."""
    (root / "ssreflect").mkdir(parents=True)
    for name in names:
        shutil.copy(_ssreflect() / f"{name}.v", root / "ssreflect" / f"{name}.v")


def _write(root: Path, file: str, text: str) -> None:
    """Write one source file of a tree."""
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(text, encoding="utf-8")


def _statuses(result: BuildResult) -> dict[str, BuildStatus]:
    """Each file's status."""
    return {file: r.status for file, r in result.files.items()}


def _without_comments(text: str) -> str:
    """The text with Rocq comments removed (nested, and strings inside them skipped)."""
    out: list[str] = []
    depth, i = 0, 0
    while i < len(text):
        if text.startswith("(*", i):
            depth, i = depth + 1, i + 2
        elif depth and text.startswith("*)", i):
            depth, i = depth - 1, i + 2
        elif text[i] == '"':
            end = i + 1
            while text[end] != '"' or text.startswith('""', end):
                end += 2 if text.startswith('""', end) else 1
            if not depth:
                out.append(text[i : end + 1])
            i = end + 1
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildResult]:
    """The ssreflect chain up to div.v plus two small files, built once with 2 jobs."""
    root = tmp_path_factory.mktemp("mathcomp")
    _copy(root, CHAIN)
    _write(root, "extra/unicode.v", UNICODE)
    _write(root, "extra/probe.v", PROBE)
    return root, build(root, "mathcomp", jobs=2)


def test_everything_builds_in_dependency_order(tree: tuple[Path, BuildResult]) -> None:
    root, result = tree
    assert result.ok
    assert set(_statuses(result).values()) == {BuildStatus.BUILT}
    order = list(result.files)
    chain = [f"ssreflect/{name}.v" for name in CHAIN]
    assert sorted(order) == sorted([*chain, "extra/unicode.v", "extra/probe.v"])
    assert order.index("ssreflect/ssrfun.v") < order.index("extra/probe.v")
    div = result.files["ssreflect/div.v"]
    assert div.library == "mathcomp.ssreflect.div"
    assert div.seconds > 0 and div.error is None
    for file in result.files:
        assert (root / file).with_suffix(".vo").exists()
    assert (root / MANIFEST_NAME).exists()


def test_the_trees_own_files_shadow_the_installed_mathcomp(tree: tuple[Path, BuildResult]) -> None:
    root, _ = tree
    # Output of `Locate` is interleaved with the `-time` lines, and must be skipped by them.
    timing = (root / "extra/probe.v.timing").read_text()
    assert f"{root / 'ssreflect/ssrfun.vo'}" in " ".join(timing.split())


def test_dependencies_give_order_and_transitive_requirements(
    tree: tuple[Path, BuildResult],
) -> None:
    root, _ = tree
    graph = dependencies(root, "mathcomp")
    chain = [f"ssreflect/{name}.v" for name in CHAIN]
    assert graph.requires["ssreflect/ssrfun.v"] == {
        "ssreflect/ssreflect.v",
        "ssreflect/ssrnotations.v",
    }
    assert graph.closure["ssreflect/div.v"] == set(chain) - {"ssreflect/div.v"}
    assert graph.closure["extra/unicode.v"] == frozenset()
    core = current().core_prefix  # `Coq`, or `Corelib` since Rocq 9
    assert graph.rocq_requires["ssreflect/ssrfun.v"] == {f"{core}.ssr.ssrfun"}  # Rocq's, not ours
    assert graph.rocq_requires["ssreflect/div.v"] == frozenset()
    for file in graph.order:
        assert all(graph.order.index(dep) < graph.order.index(file) for dep in graph.requires[file])
    assert graph.needed(["ssreflect/ssrbool.v"]) == tuple(chain[:4])
    assert library_name("ssreflect/div.v", "mathcomp") == "mathcomp.ssreflect.div"


def test_sentences_cover_each_file_exactly(tree: tuple[Path, BuildResult]) -> None:
    root, result = tree
    for file, file_result in result.files.items():
        source = SourceText((root / file).read_text(encoding="utf-8"))
        spans = [(s.byte_start, s.byte_end) for s in file_result.sentences]
        assert spans == split_sentences(source.data), file  # two splitters, one answer
        end = 0
        for sentence in file_result.sentences:
            assert sentence.char_start >= end
            assert not _without_comments(source.text[end : sentence.char_start]).strip()
            assert sentence.text == source.byte_slice(sentence.byte_start, sentence.byte_end)
            assert sentence.text.strip() == sentence.text
            assert sentence.start == source.position(sentence.char_start)
            end = sentence.char_end
        assert not _without_comments(source.text[end:]).strip()


def test_div_glob_has_edivnp_and_matches_the_installed_glob(
    tree: tuple[Path, BuildResult],
) -> None:
    root, result = tree
    glob = result.files["ssreflect/div.v"].glob
    assert glob is not None
    (edivnp,) = [d for d in glob.definitions if d.name == "edivnP"]
    assert (edivnp.fqn, edivnp.kind) == ("mathcomp.ssreflect.div.edivnP", "prf")
    source = SourceText((root / "ssreflect/div.v").read_text())
    assert source.byte_slice(edivnp.byte_start, edivnp.byte_end) == "edivnP"
    installed = read_glob(_ssreflect() / "div.glob", source)
    assert glob.definitions == installed.definitions
    assert glob.references == installed.references


def test_non_ascii_offsets(tree: tuple[Path, BuildResult]) -> None:
    _, result = tree
    unicode = result.files["extra/unicode.v"]
    source = SourceText(UNICODE)
    definition, lemma, *_ = unicode.sentences
    assert definition.text == "Definition café := 1."
    assert definition.byte_start == definition.char_start + 2  # `⋯` is 3 bytes
    assert lemma.text.startswith("Notation")
    assert [s.text for s in unicode.sentences][-3:] == ["Proof.", "reflexivity.", "Qed."]
    assert unicode.glob is not None
    lemma_definition = next(d for d in unicode.glob.definitions if d.kind == "prf")
    assert lemma_definition.fqn == "mathcomp.extra.unicode.café_plus"
    assert source.text[lemma_definition.char_start : lemma_definition.char_end] == "café_plus"
    assert lemma_definition.start == Position(3, 6)
    notation = next(d for d in unicode.glob.definitions if d.kind == "not")
    assert notation.notation is not None and notation.notation.notation == "_ ⊕ _"
    assert source.text[notation.char_start] == '"'  # Coq points at the opening quote
    plus = next(r for r in unicode.glob.references if r.notation == notation.notation)
    assert plus.fqn == notation.fqn == "mathcomp.extra.unicode.:::x_'⊕'_x"
    assert source.text[plus.char_start : plus.char_end] == " ⊕ "  # with the blanks around


def test_rerun_skips_everything_and_still_reports_sentences_and_globs(
    tree: tuple[Path, BuildResult],
) -> None:
    root, first = tree
    again = build(root, "mathcomp", jobs=2)
    assert set(_statuses(again).values()) == {BuildStatus.SKIPPED}
    assert again.ok and again.seconds < 10
    for file, result in again.files.items():
        assert result.seconds == 0.0
        assert result.key == first.files[file].key
        assert result.glob == first.files[file].glob
        assert [s.text for s in result.sentences] == [s.text for s in first.files[file].sentences]


def _small_tree(root: Path) -> None:
    """Three cheap MathComp files and a diamond of tiny files on top."""
    _copy(root, ["ssreflect", "ssrnotations", "ssrfun"])
    _write(root, "top/a.v", "From mathcomp Require Import ssrfun.\nDefinition a := 1.\n")
    _write(root, "top/b.v", "From mathcomp Require Import a.\nDefinition b := a.\n")
    _write(root, "top/c.v", "From mathcomp Require Import ssrfun.\nDefinition c := 2.\n")


def test_changing_a_file_rebuilds_it_and_its_dependents_only(tmp_path: Path) -> None:
    _small_tree(tmp_path)
    assert build(tmp_path, "mathcomp", jobs=2).ok
    (tmp_path / "top/b.v").touch()  # a new mtime alone changes nothing
    assert set(_statuses(build(tmp_path, "mathcomp")).values()) == {BuildStatus.SKIPPED}
    with (tmp_path / "top/a.v").open("a") as source:
        source.write("Definition a' := a.\n")
    statuses = _statuses(build(tmp_path, "mathcomp", jobs=2))
    rebuilt = {file for file, status in statuses.items() if status is BuildStatus.BUILT}
    assert rebuilt == {"top/a.v", "top/b.v"}
    assert statuses["top/c.v"] is BuildStatus.SKIPPED


def test_other_flags_rebuild_everything(tmp_path: Path) -> None:
    _small_tree(tmp_path)
    build(tmp_path, "mathcomp", targets=["top/c.v"])
    result = build(tmp_path, "mathcomp", targets=["top/c.v"], flags=["-w", "-deprecated"])
    assert list(result.files) == [
        "ssreflect/ssreflect.v",
        "ssreflect/ssrnotations.v",
        "ssreflect/ssrfun.v",
        "top/c.v",
    ]
    assert set(_statuses(result).values()) == {BuildStatus.BUILT}


def test_a_failure_fails_its_dependents_and_the_rest_goes_on(tmp_path: Path) -> None:
    _small_tree(tmp_path)
    _write(tmp_path, "top/a.v", "From mathcomp Require Import ssrfun.\nDefinition a := .\n")
    _write(tmp_path, "top/d.v", "From mathcomp Require Import b.\nDefinition d := b.\n")
    result = build(tmp_path, "mathcomp", jobs=2)
    assert not result.ok
    failed = result.files["top/a.v"]
    assert failed.status is BuildStatus.FAILED
    assert failed.error is not None
    assert failed.error.message.startswith("Syntax error")
    assert failed.error.start == Position(1, 16)
    assert [s.text for s in failed.sentences] == ["From mathcomp Require Import ssrfun."]
    for dependent in ("top/b.v", "top/d.v"):
        assert result.files[dependent].status is BuildStatus.DEPENDENCY_FAILED
        assert result.files[dependent].failed_dependency == "top/a.v"
        assert result.files[dependent].error.message == "dependency top/a.v failed"
    assert result.files["top/c.v"].status is BuildStatus.BUILT
    # Unchanged, the failure is retried rather than skipped; fixed, it builds with its dependents.
    assert build(tmp_path, "mathcomp").files["top/a.v"].status is BuildStatus.FAILED
    _write(tmp_path, "top/a.v", "From mathcomp Require Import ssrfun.\nDefinition a := 1.\n")
    statuses = _statuses(build(tmp_path, "mathcomp", jobs=2))
    assert {f for f, s in statuses.items() if s is BuildStatus.BUILT} == {
        "top/a.v",
        "top/b.v",
        "top/d.v",
    }


@pytest.mark.parametrize(
    ("text", "located", "message"),
    [
        ("Definition é := 1. Check (é + foo).\n", "foo", "The reference foo was not found"),
        ("Definition é := 1.\nCheck (S\n  é é).\n", "S\n  é é", "Illegal application"),
    ],
)
def test_error_locations_are_converted_from_byte_columns(
    tmp_path: Path, text: str, located: str, message: str
) -> None:
    _write(tmp_path, "e.v", text)
    (result,) = build(tmp_path, "test").files.values()
    assert result.status is BuildStatus.FAILED
    error = result.error
    assert error is not None
    assert message in error.message
    # Rocq's columns are bytes from the start of the error's first line, for both ends.
    assert text[error.char_start : error.char_end] == located
    assert error.start == SourceText(text).position(text.index(located))
    assert error.byte_start == len(text[: error.char_start].encode())
    # A sentence that fails to execute is still one of Rocq's sentences.
    assert [s.text.split(None, 1)[0] for s in result.sentences] == ["Definition", "Check"]
