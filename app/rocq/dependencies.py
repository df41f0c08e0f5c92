"""The `Require` graph of a Rocq library tree, read from `coqdep`.

Files are ordered so that each comes after everything it requires (ties broken by path, so the
order is stable); the graph also names the installed files each file requires (`Coq.ssr.ssrbool`,
`mathcomp.ssreflect.seq`, …), so that the dictionary can take their objects in.
"""

from __future__ import annotations

import heapq
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.rocq.toolchain import Toolchain
from app.rocq.toolchain import current as current_toolchain


class BuildError(RuntimeError):
    """The build as a whole cannot run (coqdep failed, a dependency cycle, unknown targets)."""


@dataclass(frozen=True)
class DependencyGraph:
    """The `Require` graph of a tree, restricted to files inside the tree."""

    root: Path
    """The tree's root directory, mapped to `prefix`."""
    prefix: str
    """The logical prefix of the root, e.g. `mathcomp`."""
    order: tuple[str, ...]
    """All files (root-relative POSIX paths), each after everything it requires."""
    requires: Mapping[str, frozenset[str]]
    """Files each file requires directly."""
    closure: Mapping[str, frozenset[str]]
    """Files each file requires, directly or not."""
    rocq_requires: Mapping[str, frozenset[str]]
    """Installed files (Rocq's own library, user-contrib's packages: logical names, `Coq.…`,
    `mathcomp.…`) each file requires directly."""
    warnings: tuple[str, ...]
    """What coqdep warned about (e.g. a library required but found nowhere)."""

    def library(self, file: str) -> str:
        """The logical name of a file of the tree, e.g. `mathcomp.ssreflect.div`."""
        return library_name(file, self.prefix)

    def needed(self, targets: Iterable[str]) -> tuple[str, ...]:
        """The targets and everything they require, in dependency order."""
        wanted: set[str] = set()
        for target in targets:
            if target not in self.closure:
                raise BuildError(f"{target} is not a .v file of {self.root}")
            wanted |= self.closure[target] | {target}
        return tuple(file for file in self.order if file in wanted)


def library_name(file: str, prefix: str) -> str:
    """The logical name `-R <root> <prefix>` gives a root-relative file."""
    parts = Path(file).with_suffix("").parts
    return ".".join((prefix, *parts)) if prefix else ".".join(parts)


def source_files(root: Path) -> list[str]:
    """The root-relative paths of the tree's `.v` files, sorted."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.v"))


def dependencies(
    root: Path, prefix: str, files: Iterable[str] | None = None, toolchain: Toolchain | None = None
) -> DependencyGraph:
    """Run coqdep over a tree (or some of its files) and order the files by `Require`."""
    toolchain = toolchain or current_toolchain()
    root = root.resolve()
    files = sorted(files) if files is not None else source_files(root)
    # The installed libraries are named first so that coqdep prints the files a tree needs
    # from them; the tree's own files, named last, win over any of the same name (a copy of
    # Rocq's files, MathComp's ssreflect part beside the installed MathComp).
    installed = [
        flag for root, name, option in toolchain.load_path() for flag in (option, str(root), name)
    ]
    command = toolchain.command("coqdep", *installed, "-R", ".", prefix, *files)
    run = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if run.returncode != 0:
        raise BuildError(f"coqdep failed: {run.stderr.strip()}")
    requires, rocq_requires = _parse_coqdep(run.stdout, set(files), toolchain)
    order = topological_order(requires)
    return DependencyGraph(
        root=root,
        prefix=prefix,
        order=order,
        requires=requires,
        closure=_closure(order, requires),
        rocq_requires=rocq_requires,
        warnings=tuple(line for line in run.stderr.splitlines() if line.strip()),
    )


def _parse_coqdep(
    output: str, files: set[str], toolchain: Toolchain
) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Direct requirements from coqdep's make rules (`x.vo ...: x.v y.vo ...`): in the tree,
    and among the installed files (absolute paths in Rocq's load path, as logical names)."""
    requires = {file: frozenset[str]() for file in files}
    rocq = {file: frozenset[str]() for file in files}
    for line in output.splitlines():
        targets, _, prerequisites = line.partition(": ")
        target = os.path.normpath(targets.split(" ", 1)[0])
        file = target.removesuffix(".vo") + ".v"
        if not target.endswith(".vo") or file not in files:
            continue
        deps = [os.path.normpath(dep).removesuffix(".vo") + ".v" for dep in prerequisites.split()]
        requires[file] = frozenset(dep for dep in deps if dep in files and dep != file)
        rocq[file] = frozenset(filter(None, (toolchain.logical_name(Path(d)) for d in deps)))
    return requires, rocq


def topological_order(requires: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """Kahn's order, ties broken by path so the order is stable; fails on a cycle."""
    missing = {file: len(deps) for file, deps in requires.items()}
    waiting_on = dependents(requires)
    ready = sorted(file for file, count in missing.items() if count == 0)
    order: list[str] = []
    while ready:
        file = heapq.heappop(ready)
        order.append(file)
        for dependent in waiting_on[file]:
            missing[dependent] -= 1
            if missing[dependent] == 0:
                heapq.heappush(ready, dependent)
    if len(order) != len(requires):
        raise BuildError(f"dependency cycle among {sorted(set(requires) - set(order))}")
    return tuple(order)


def dependents(requires: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """The files that directly require each file."""
    dependents: dict[str, list[str]] = {file: [] for file in requires}
    for file, deps in requires.items():
        for dep in deps:
            dependents[dep].append(file)
    return dependents


def _closure(
    order: Sequence[str], requires: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Transitive requirements, computed once in dependency order."""
    closure: dict[str, frozenset[str]] = {}
    for file in order:
        closure[file] = frozenset(requires[file]).union(*(closure[dep] for dep in requires[file]))
    return closure
