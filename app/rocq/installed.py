"""Rocq's installed libraries that a library requires, read without building anything.

A library loads more than its own files: Rocq's prelude (`Coq.Init.Prelude`, loaded by every
file), the Stdlib modules it requires, and installed libraries such as MathComp when it is
written on top of them, each with what it requires in turn. `required_files` finds that closure
with `coqdep` over the installed sources (`.v` files ship beside the `.vo`); the dictionary then
reads each file's `.glob` when the package ships one (Debian's MathComp does), and asks Rocq
otherwise (`printed_modules`: `Print Module` of the loaded `.vo`), which also names what no
glob defines: objects made by `Include` or a functor application, record constructors,
Hierarchy-Builder's structures.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.rocq.dependencies import topological_order
from app.rocq.toolchain import Toolchain


class InstalledError(RuntimeError):
    """coqdep or coqc could not read the installed files."""


@dataclass(frozen=True)
class InstalledFile:
    """One installed `.v` file a library requires, directly or not."""

    library: str
    """Its logical name, e.g. `mathcomp.ssreflect.ssrnat`, `Coq.Init.Datatypes`."""
    source: Path
    """The `.v` file as Rocq names it (inside the toolchain's root)."""
    requires: frozenset[str]
    """The logical names it requires directly (the prelude included, but by Init's files)."""


@dataclass(frozen=True)
class PrintedItem:
    """One object `Print Module` shows."""

    kind: str
    """A glob kind: `def`, `prf` (opaque), `ind`, `rec`, `constr`, `class`."""
    fqn: str
    text: str
    """What Rocq printed, e.g. `Parameter add_comm : forall n m : nat, n + m = m + n.`"""


def prelude(toolchain: Toolchain) -> str:
    """The file every file loads unless it is one of Init's."""
    return f"{toolchain.core_prefix}.Init.Prelude"


def installed_sources(toolchain: Toolchain) -> dict[str, Path]:
    """Every installed `.v` file by logical name (Rocq's paths)."""
    sources = {}
    for rocq_root, prefix, _ in toolchain.load_path():
        host_root = toolchain.host(rocq_root)
        for path in sorted(host_root.rglob("*.v")):
            parts = path.relative_to(host_root).with_suffix("").parts
            sources.setdefault(
                ".".join((prefix, *parts)), rocq_root.joinpath(*parts[:-1], path.name)
            )
    return sources


def required_files(names: Iterable[str], toolchain: Toolchain) -> list[InstalledFile]:
    """The installed files named and everything they require, in dependency order; the
    prelude's closure is always in. Names with no installed source are left out."""
    sources = installed_sources(toolchain)
    init = f"{toolchain.core_prefix}.Init."
    found: dict[str, InstalledFile] = {}
    pending = {name for name in {*names, prelude(toolchain)} if name in sources}
    while pending:
        direct = _coqdep([sources[name] for name in sorted(pending)], toolchain)
        for name in pending:
            requires = direct.get(name, frozenset())
            if not name.startswith(init):
                requires |= {prelude(toolchain)}
            found[name] = InstalledFile(name, sources[name], frozenset(requires & sources.keys()))
        pending = {dep for file in found.values() for dep in file.requires} - found.keys()
    return [found[name] for name in _order(found)]


def _coqdep(files: list[Path], toolchain: Toolchain) -> dict[str, frozenset[str]]:
    """Direct requirements of installed files, by logical name. Each package's files are read
    as it was built: with its own folder `-R` and last, so its short names resolve to its own
    files (MathComp 1's `Require Export ssreflect ssrbool …`)."""
    direct: dict[str, frozenset[str]] = {}
    load_path = toolchain.load_path()
    for root, prefix, _ in load_path:
        group = [str(file) for file in files if file.is_relative_to(root)]
        if not group:
            continue
        others = [(r, p, o) for r, p, o in load_path if r != root] + [(root, prefix, "-R")]
        flags = [flag for r, p, option in others for flag in (option, str(r), p)]
        run = subprocess.run(
            toolchain.command("coqdep", *flags, *group), capture_output=True, text=True
        )
        if run.returncode != 0:
            raise InstalledError(f"coqdep failed on installed files: {run.stderr.strip()}")
        direct |= _parse(run.stdout, toolchain)
    return direct


def _parse(output: str, toolchain: Toolchain) -> dict[str, frozenset[str]]:
    """coqdep's make rules (`x.vo …: x.v y.vo …`) as logical names."""
    direct = {}
    for line in output.splitlines():
        targets, _, prerequisites = line.partition(": ")
        target = targets.split(" ", 1)[0]
        name = toolchain.logical_name(Path(target))
        if not target.endswith(".vo") or name is None:
            continue
        deps = (toolchain.logical_name(Path(d)) for d in prerequisites.split() if d.endswith(".vo"))
        direct[name] = frozenset(dep for dep in deps if dep and dep != name)
    return direct


def _order(files: dict[str, InstalledFile]) -> list[str]:
    """Each file after what it requires; ties by name, so the order is stable (installed
    `.vo` files cannot require each other in a cycle)."""
    return list(topological_order({name: file.requires for name, file in files.items()}))


# --- What Rocq prints of a loaded file -------------------------------------------------------

_KEYWORDS = (
    "Inductive|CoInductive|Variant|Record|Structure|Class|Definition|Parameter|Axiom|"
    "Module Type|Module"
)
_ITEM = re.compile(rf"(?<=\. )(?=(?:{_KEYWORDS}) )")
_MODULE = re.compile(rf"Module (Type )?(\S+) (?=(?:{_KEYWORDS}) |$)")
"""A nested module or module type: `Print Module` of a file names them only."""
_HEADER = re.compile(r"^Module \S+ := Struct (.*) End$", re.S)
_INDUCTIVE = {"Inductive": "ind", "CoInductive": "ind", "Variant": "ind"}
_RECORD = {"Record": "rec", "Structure": "rec", "Class": "class"}


def printed_modules(libraries: list[str], toolchain: Toolchain) -> dict[str, list[PrintedItem]]:
    """Every object of each file, as `Print Module` shows it after `Require` (nested modules
    printed in further rounds: a file's print names them only)."""
    found: dict[str, list[PrintedItem]] = {library: [] for library in libraries}
    modules = [(library, library) for library in libraries]
    while modules:
        printed = _print(libraries, [module for _, module in modules], toolchain)
        nested = []
        for (library, module), text in zip(modules, printed, strict=True):
            items, inner = parse_module(module, text)
            found[library] += items
            nested += [(library, name) for name in inner]
        modules = nested
    return found


def _print(libraries: list[str], modules: list[str], toolchain: Toolchain) -> list[str]:
    """`Print Module` of each module, in one coqc run that loads the files."""
    with tempfile.TemporaryDirectory(prefix="rocqcot-print-") as folder:
        lines = [f"Require {' '.join(libraries)}."]
        lines += [f'Redirect "{folder}/{i}" Print Module {m}.' for i, m in enumerate(modules)]
        script = Path(folder) / "print.v"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        run = subprocess.run(
            toolchain.command("coqc", "-q", str(script)), capture_output=True, text=True
        )
        if run.returncode != 0:
            raise InstalledError(f"cannot print installed modules: {run.stderr.strip()[-2000:]}")
        return [
            (Path(folder) / f"{i}.out").read_text(encoding="utf-8", errors="replace")
            for i in range(len(modules))
        ]


def parse_module(module: str, printed: str) -> tuple[list[PrintedItem], list[str]]:
    """The objects of a printed module (full names under `module`) and its nested modules."""
    text = " ".join(printed.split())
    body = _HEADER.match(text)
    if body is None:
        return [], []
    items: list[PrintedItem] = []
    nested: list[str] = []
    content = body.group(1)
    for match in _MODULE.finditer(content + " "):
        if match.group(1) is None:
            nested.append(f"{module}.{match.group(2)}")
    content = _MODULE.sub("", content + " ")
    for piece in filter(None, (p.strip() for p in _ITEM.split(content))):
        items += _objects(module, piece)
    return items, nested


def _objects(module: str, item: str) -> list[PrintedItem]:
    """The objects one printed item defines: a constant; an inductive and its constructors; a
    record and its constructor (its projections are printed as constants of their own)."""
    keyword, _, rest = item.partition(" ")
    name = rest.split(" ", 1)[0]
    if not name or keyword == "Module":
        return []
    if keyword in ("Definition", "Parameter", "Axiom"):
        kind = "def" if keyword == "Definition" else "prf"
        return [PrintedItem(kind, f"{module}.{name}", item)]
    kind = _INDUCTIVE.get(keyword) or _RECORD.get(keyword)
    if kind is None:
        return []
    objects = [PrintedItem(kind, f"{module}.{name}", item)]
    _, assign, body = rest.partition(":= ")
    if assign and keyword in _RECORD:
        constructor = body.split(" ", 1)[0]
        if constructor and constructor != "{":
            objects.append(PrintedItem("constr", f"{module}.{constructor}", item))
    elif assign:
        for alternative in _top_level(body.rstrip(". "), "|"):
            constructor = alternative.strip().split(" ", 1)[0]
            if constructor:
                objects.append(PrintedItem("constr", f"{module}.{constructor}", item))
    return objects


def _top_level(text: str, separator: str) -> list[str]:
    """`text` cut at the separators outside brackets."""
    pieces, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == separator and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    return [*pieces, text[start:]]
