"""Glob parsing against the `.glob` files the machine's MathComp ships, and against a small
file the machine's coqc compiles; expected offsets are read from the raw glob lines."""

import re
from pathlib import Path

import pytest

from app.rocq.glob import GlobFormatError, decode_notation, parse_glob, read_glob
from app.rocq.positions import Position, SourceText
from app.rocq.toolchain import Toolchain
from tests.toolchains import timed_sentences

MODULES = """Module Equality.
Section ClassDef.
Variable cT : nat.
Definition class := cT.
End ClassDef.
Module Exports.
Definition e := class.
End Exports.
End Equality.
Definition after := Equality.class.
"""


@pytest.fixture
def installed(mathcomp_dir: Path):
    """An installed MathComp source and its glob file."""

    def find(name: str) -> tuple[SourceText, Path]:
        path = mathcomp_dir / name
        return SourceText(path.read_text(encoding="utf-8")), path.with_suffix(".glob")

    return find


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory, toolchain: Toolchain) -> Path:
    """MODULES compiled as `top.m` by the machine's coqc: its glob file."""
    root = tmp_path_factory.mktemp("modules")
    (root / "m.v").write_text(MODULES)
    timed_sentences(toolchain, root / "m.v", "-R", ".", "top")
    return root / "m.glob"


def _raw(glob_path: Path, pattern: str) -> list[tuple[int, int]]:
    """Byte spans of the raw glob lines matching `pattern` (with `S:E` as its first groups),
    end exclusive as the reader gives them."""
    lines = re.finditer(pattern, glob_path.read_text(encoding="utf-8"), re.MULTILINE)
    return [(int(m.group(1)), int(m.group(2)) + 1) for m in lines]


def test_edivnp_is_a_proof_with_its_fully_qualified_name_and_offsets(installed) -> None:
    source, glob_path = installed("ssreflect/div.v")
    glob = read_glob(glob_path, source)
    assert glob.library == "mathcomp.ssreflect.div"
    assert glob.digest is not None and len(glob.digest) == 32
    (edivnp,) = [d for d in glob.definitions if d.name == "edivnP"]
    assert edivnp.fqn == "mathcomp.ssreflect.div.edivnP"
    assert edivnp.kind == "prf"
    assert [(edivnp.byte_start, edivnp.byte_end)] == _raw(glob_path, r"^prf (\d+):(\d+) <> edivnP$")
    assert source.byte_slice(edivnp.byte_start, edivnp.byte_end) == "edivnP"
    assert source.text[edivnp.char_start : edivnp.char_end] == "edivnP"
    assert edivnp.start == source.position(edivnp.char_start)
    assert source.text.splitlines()[edivnp.start.line].startswith("Lemma edivnP")


def test_module_and_section_paths_make_names_that_references_share(modules: Path) -> None:
    source = SourceText(MODULES)
    glob = read_glob(modules, source)
    by_fqn = {d.fqn: d for d in glob.definitions}
    # `class` is defined in section ClassDef of module Equality: sections are not in its name.
    assert by_fqn["top.m.Equality.class"].path == "Equality"
    assert by_fqn["top.m.Equality.Exports"].kind == "mod"
    assert by_fqn["top.m.Equality.ClassDef"].kind == "sec"
    # A section variable's name keeps its sections, in its definition and its uses.
    assert by_fqn["top.m.Equality.ClassDef.cT"].kind == "var"
    referenced = {(r.fqn, r.kind) for r in glob.references}
    assert ("top.m.Equality.class", "def") in referenced
    assert ("top.m.Equality.ClassDef.cT", "var") in referenced
    for reference in glob.references:
        if reference.kind in {"def", "thm", "abbrev"} and reference.library == glob.library:
            assert reference.fqn in by_fqn


def test_module_paths_coq_truncates_are_restored(modules: Path) -> None:
    # Rocq writes `R…:… top.m <> class def` for `Equality.class` used after `End Equality`.
    source = SourceText(MODULES)
    (span,) = _raw(modules, r"^R(\d+):(\d+) top\.m <> class def$")
    glob = read_glob(modules, source)
    (use,) = [r for r in glob.references if (r.byte_start, r.byte_end) == span]
    assert source.byte_slice(use.byte_start, use.byte_end) == "Equality.class"
    assert (use.path, use.fqn) == ("Equality", "top.m.Equality.class")
    raw = parse_glob("Fm\nmod 0:0 <> M\ndef 2:2 M a\nR9:9 m <> a def\nR9:9 m <> b def\n")
    assert [r.fqn for r in raw.references] == ["m.M.a", "m.b"]


def test_references_point_at_the_source_and_drop_coqs_duplicates(installed) -> None:
    source, glob_path = installed("ssreflect/div.v")
    glob = read_glob(glob_path, source)
    uses = [r for r in glob.references if r.fqn == "mathcomp.ssreflect.div.edivnP"]
    listed = _raw(glob_path, r"^R(\d+):(\d+) mathcomp\.ssreflect\.div <> edivnP thm$")
    assert len(listed) > len(set(listed))  # Rocq lists some uses several times
    assert [(r.byte_start, r.byte_end) for r in uses] == sorted(set(listed))
    for use in uses:
        assert use.kind == "thm"
        assert source.byte_slice(use.byte_start, use.byte_end) == "edivnP"
    for reference in glob.references:
        if reference.kind in {"thm", "def"} and not reference.path:
            text = source.byte_slice(reference.byte_start, reference.byte_end)
            # `name:N` is a local name, e.g. a fixpoint's own recursive calls.
            assert text.split(".")[-1] == reference.name.split(":")[0]


def test_notation_references_are_decoded(installed) -> None:
    source, glob_path = installed("ssreflect/div.v")
    glob = read_glob(glob_path, source)
    pattern = r"^R(\d+):(\d+) mathcomp\.ssreflect\.ssrnat <> ::nat_scope:x_'-'_x not$"
    first = _raw(glob_path, pattern)[0][0]
    minus = next(r for r in glob.references if r.byte_start == first)
    assert minus.kind == "not"
    assert minus.library == "mathcomp.ssreflect.ssrnat"
    assert minus.notation is not None
    assert minus.notation.scope == "nat_scope"
    assert minus.notation.notation == "_ - _"
    assert minus.notation.symbols == ("-",)
    # Notation spans may include the blanks around the symbol.
    assert source.byte_slice(minus.byte_start, minus.byte_end).strip() == "-"
    assert all(r.notation is not None for r in glob.references if r.kind == "not")


def test_notation_definitions_are_decoded(installed) -> None:
    source, glob_path = installed("ssreflect/ssrnat.v")
    glob = read_glob(glob_path, source)
    plus = next(d for d in glob.definitions if d.name == "::coq_nat_scope:x_'+'_x")
    assert plus.kind == "not"
    assert plus.notation is not None and plus.notation.notation == "_ + _"
    assert source.byte_slice(plus.byte_start, plus.byte_end) == '"'  # the opening quote


@pytest.mark.parametrize(
    ("key", "entry", "scope", "notation", "symbols"),
    [
        ("::nat_scope:x_'+'_x", "", "nat_scope", "_ + _", ("+",)),
        (":::'''I_'_x", "", "", "'I_ _", ("'I_",)),
        ("::core_scope:'('_x_','_x_')'", "", "core_scope", "( _ , _ )", ("(", ",", ")")),
        (":::x_'^-1'", "", "", "_ ^-1", ("^-1",)),
        (":ssripat:ssripat_scope:'a'''_x", "ssripat", "ssripat_scope", "a' _", ("a'",)),
        ("::s:'a:b'_x", "", "s", "a:b _", ("a:b",)),
        (":::'a'^Ab'", "", "", "a\x01b", ("a\x01b",)),
    ],
)
def test_decode_notation(
    key: str, entry: str, scope: str, notation: str, symbols: tuple[str, ...]
) -> None:
    decoded = decode_notation(key)
    assert (decoded.entry, decoded.scope, decoded.notation, decoded.symbols) == (
        entry,
        scope,
        notation,
        symbols,
    )


@pytest.mark.parametrize("key", ["x_'+'_x", "::s:'+", "::s:y", "::s:x__x"])
def test_bad_notation_keys_are_rejected(key: str) -> None:
    with pytest.raises(GlobFormatError):
        decode_notation(key)


def test_non_ascii_sources_get_character_offsets(installed) -> None:
    # matrix.v has `⋯` (3 bytes, 1 character) in its header: byte and character offsets differ.
    source, glob_path = installed("algebra/matrix.v")
    header = source.text[: source.text.index("Lemma")]
    extra = len(header.encode()) - len(header)
    assert extra > 0
    glob = read_glob(glob_path, source)
    proofs = [d for d in glob.definitions if d.kind == "prf"]
    assert proofs and all(d.byte_start - d.char_start >= extra for d in proofs)
    assert all(source.text[d.char_start : d.char_end] == d.name for d in proofs)


def test_without_source_only_bytes_are_given() -> None:
    glob = parse_glob("DIGEST NO\nFm\ndef 0:1 <> ab\nR3:4 m <> ab def\n")
    assert glob.digest is None
    (definition,) = glob.definitions
    assert (definition.fqn, definition.byte_end, definition.char_start) == ("m.ab", 2, None)
    assert glob.references[0].start is None


def test_malformed_lines_are_reported() -> None:
    with pytest.raises(GlobFormatError, match="line 2"):
        parse_glob("Fm\nR3 m <> ab def\n")


def test_every_installed_ssreflect_glob_parses(mathcomp_dir: Path) -> None:
    for glob_path in sorted((mathcomp_dir / "ssreflect").glob("*.glob")):
        source = SourceText(glob_path.with_suffix(".v").read_text(encoding="utf-8"))
        glob = read_glob(glob_path, source)
        assert glob.library == "mathcomp.ssreflect." + glob_path.stem
        assert all(isinstance(d.start, Position) for d in glob.definitions)
