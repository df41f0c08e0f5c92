"""Compile a Rocq library tree: dependency order, in parallel, skipping what has not changed.

Each file is compiled with `coqc -R . <prefix> -time -dump-glob <file.glob> <file.v>` from the
tree's root, so the tree's own files shadow any installed library with the same prefix (Debian
installs MathComp in user-contrib under `mathcomp`; a `Require` of a file present in the tree
loads the tree's `.vo`). A `Require` of a file missing from the tree silently falls back to the
installed copy, which coqc usually rejects as "inconsistent assumptions". The order and the
installed files each file requires are `app.rocq.dependencies`'.

Outputs land next to each source: `.vo`, `.glob` and `.v.timing` (the `-time` output, as
`coq_makefile` names it). A manifest (`.rocqcot-build.json` at the root) keeps one key per file,
a hash over its source, its dependencies' keys, the coqc version and the flags, so a rerun
recompiles exactly the files whose source or whose (transitive) requirements changed.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import heapq
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from app.rocq.dependencies import (
    DependencyGraph,
    dependencies,
    dependents,
    library_name,
)
from app.rocq.glob import Glob, GlobFormatError, read_glob
from app.rocq.positions import Position, SourceText, read_source
from app.rocq.timing import TIMING_SUFFIX, Sentence, parse_timing
from app.rocq.toolchain import Toolchain
from app.rocq.toolchain import current as current_toolchain

log = logging.getLogger(__name__)

MANIFEST_NAME = ".rocqcot-build.json"
MANIFEST_VERSION = 1
_MAX_MESSAGE = 4000  # of stderr kept when coqc stops without an `Error:` (a crash, a signal)
_LOCATION = re.compile(r'File "([^"]*)", line (\d+), characters (\d+)-(\d+):')


class BuildStatus(enum.StrEnum):
    """What happened to one file in a build."""

    BUILT = "built"
    SKIPPED = "skipped-unchanged"
    FAILED = "failed"
    DEPENDENCY_FAILED = "dependency-failed"
    INSTALLED = "installed"
    """Not built: an installed file read as it is (`app.load_path`)."""


@dataclass(frozen=True)
class CompileError:
    """Why a file did not compile: Rocq's message and, when Rocq gave one, its location."""

    message: str
    """Rocq's message without the `Error:` prefix, or why the file was not compiled."""
    byte_start: int | None = None
    """UTF-8 byte offset in the file where the error starts."""
    byte_end: int | None = None
    """UTF-8 byte offset in the file where the error ends (exclusive)."""
    char_start: int | None = None
    """Character offset where the error starts."""
    char_end: int | None = None
    """Character offset where the error ends (exclusive)."""
    start: Position | None = None
    """Line and character where the error starts."""
    end: Position | None = None
    """Line and character where the error ends."""


@dataclass(frozen=True)
class FileResult:
    """The outcome of one file in a build."""

    file: str
    """Root-relative POSIX path of the source, e.g. `ssreflect/div.v`."""
    library: str
    """Logical name, e.g. `mathcomp.ssreflect.div`."""
    status: BuildStatus
    """Built, skipped (unchanged), failed, or not attempted because a requirement failed."""
    key: str
    """Build key: hash of the source, the requirements' keys, the coqc version and the flags."""
    error: CompileError | None = None
    """Why the file failed, for the two failed statuses."""
    failed_dependency: str | None = None
    """For dependency-failed: the required file whose own compilation failed."""
    sentences: tuple[Sentence, ...] = ()
    """Rocq's sentences with their times (up to the failing one for a failed file)."""
    glob: Glob | None = None
    """Definitions and references, for built and skipped files."""
    seconds: float = 0.0
    """Wall-clock seconds coqc ran on this file in this build (0 when not compiled)."""


@dataclass(frozen=True)
class BuildResult:
    """The outcome of a build: one result per file, in dependency order."""

    graph: DependencyGraph
    """The tree's dependency graph."""
    coqc_version: str
    """The version of the Rocq that built it."""
    files: Mapping[str, FileResult]
    """Results by root-relative path, in dependency order."""
    seconds: float
    """Wall-clock seconds of the whole build."""

    @property
    def ok(self) -> bool:
        """Whether every file is built or unchanged."""
        done = (BuildStatus.BUILT, BuildStatus.SKIPPED)
        return all(result.status in done for result in self.files.values())


def default_jobs() -> int:
    """The number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build(
    root: Path,
    prefix: str,
    *,
    jobs: int | None = None,
    targets: Iterable[str] | None = None,
    flags: Sequence[str] = (),
    manifest: Path | None = None,
    toolchain: Toolchain | None = None,
) -> BuildResult:
    """Compile a tree (or the targets and what they require) in dependency order, in parallel.

    A file starts as soon as everything it requires is built; among ready files the one heading
    the longest remaining chain (by last known compile times) goes first. Unchanged files are
    skipped but still reported with their sentences and glob; a failed file fails its
    dependents and the rest of the build goes on.
    """
    started = time.monotonic()
    toolchain = toolchain or current_toolchain()
    graph = dependencies(root, prefix, toolchain=toolchain)
    files = graph.needed(targets) if targets is not None else graph.order
    state = _Build(
        graph=graph,
        files=files,
        jobs=jobs or default_jobs(),
        flags=tuple(flags),
        manifest=_Manifest.load(manifest or graph.root / MANIFEST_NAME),
        toolchain=toolchain,
    )
    results = state.run()
    return BuildResult(graph, toolchain.version, results, time.monotonic() - started)


@dataclass
class _Manifest:
    """The build key and compile time of the last successful compilation of each file."""

    path: Path
    entries: dict[str, tuple[str, float]]

    @classmethod
    def load(cls, path: Path) -> _Manifest:
        """Read the manifest; a missing, older or damaged one counts as empty (rebuild all)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["version"] != MANIFEST_VERSION:
                return cls(path, {})
            files = data["files"]
            return cls(path, {f: (str(e["key"]), float(e["seconds"])) for f, e in files.items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(path, {})

    def key(self, file: str) -> str | None:
        """The key the file was last built with."""
        entry = self.entries.get(file)
        return entry[0] if entry else None

    def seconds(self, file: str) -> float:
        """How long the file took last time (1 s when unknown): the scheduler's weight."""
        entry = self.entries.get(file)
        return entry[1] if entry else 1.0

    def record(self, file: str, key: str | None, seconds: float) -> None:
        """Remember a successful build (key given) or forget a failed one (key None), on disk
        at once: a build killed midway keeps what it finished."""
        if key is None:
            self.entries.pop(file, None)
        else:
            self.entries[file] = (key, round(seconds, 3))
        files = {f: {"key": k, "seconds": s} for f, (k, s) in sorted(self.entries.items())}
        payload = {"version": MANIFEST_VERSION, "files": files}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        temporary.replace(self.path)


class _Build:
    """The state of one running build: a ready queue, a pool of coqc runs, the results."""

    def __init__(
        self,
        graph: DependencyGraph,
        files: Sequence[str],
        jobs: int,
        flags: tuple[str, ...],
        manifest: _Manifest,
        toolchain: Toolchain,
    ) -> None:
        self.graph, self.files, self.jobs, self.flags = graph, files, jobs, flags
        self.manifest, self.toolchain = manifest, toolchain
        self.keys = _build_keys(graph, files, flags, toolchain)
        self.index = {file: i for i, file in enumerate(files)}
        self.dependents = dependents({file: graph.requires[file] for file in files})
        self.priority = self._priorities()
        self.missing = {file: len(graph.requires[file]) for file in files}
        self.results: dict[str, FileResult] = {}
        self.ready: list[tuple[float, int, str]] = []

    def run(self) -> dict[str, FileResult]:
        """Run the build to the end and return the results in dependency order."""
        for file in self.files:
            if self.missing[file] == 0:
                self._push(file)
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            running: set[Future[FileResult]] = set()
            while self.ready or running:
                while self.ready and len(running) < self.jobs:
                    future = self._start(heapq.heappop(self.ready)[2], pool)
                    if future is not None:
                        running.add(future)
                if running:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._finish(future.result())
        return {file: self.results[file] for file in self.files}

    def _priorities(self) -> dict[str, float]:
        """Each file's longest chain of dependents, weighted by last known compile times."""
        priority: dict[str, float] = {}
        for file in reversed(self.files):
            after = max((priority[d] for d in self.dependents[file]), default=0.0)
            priority[file] = self.manifest.seconds(file) + after
        return priority

    def _push(self, file: str) -> None:
        """Queue a file whose requirements are all done."""
        heapq.heappush(self.ready, (-self.priority[file], self.index[file], file))

    def _start(self, file: str, pool: ThreadPoolExecutor) -> Future[FileResult] | None:
        """Settle a ready file at once (failed requirement, unchanged) or submit its compile."""
        key = self.keys[file]
        library = self.graph.library(file)
        culprit = self._failed_requirement(file)
        if culprit is not None:
            error = CompileError(f"dependency {culprit} failed")
            status = BuildStatus.DEPENDENCY_FAILED
            self._finish(FileResult(file, library, status, key, error, culprit))
            return None
        if self.manifest.key(file) == key and _outputs_exist(self.graph.root, file):
            self._finish(_load(self.graph.root, file, library, key))
            return None
        root, prefix = self.graph.root, self.graph.prefix
        return pool.submit(_compile, self.toolchain, root, prefix, file, key, self.flags)

    def _failed_requirement(self, file: str) -> str | None:
        """The file whose own failure prevents compiling this one, if any."""
        for dep in sorted(self.graph.requires[file]):
            result = self.results[dep]
            if result.status is BuildStatus.FAILED:
                return dep
            if result.status is BuildStatus.DEPENDENCY_FAILED:
                return result.failed_dependency
        return None

    def _finish(self, result: FileResult) -> None:
        """Record a result, update the manifest, and queue the dependents now ready."""
        self.results[result.file] = result
        if result.status is BuildStatus.BUILT:
            self.manifest.record(result.file, result.key, result.seconds)
        elif result.status is not BuildStatus.SKIPPED:
            self.manifest.record(result.file, None, 0.0)
        extra = {"file": result.file, "status": str(result.status)}
        log.info("%s %s (%.2f s)", result.status, result.file, result.seconds, extra=extra)
        for dependent in self.dependents[result.file]:
            self.missing[dependent] -= 1
            if self.missing[dependent] == 0:
                self._push(dependent)


def _build_keys(
    graph: DependencyGraph, files: Sequence[str], flags: tuple[str, ...], toolchain: Toolchain
) -> dict[str, str]:
    """Each file's build key, chained through its requirements' keys like a Merkle tree: a
    new Rocq (another version or installation) invalidates every `.vo`."""
    keys: dict[str, str] = {}
    version = f"{toolchain.version} {toolchain.ocaml} {toolchain.sysroot}"
    for file in files:
        source = hashlib.sha256((graph.root / file).read_bytes()).hexdigest()
        deps = sorted((dep, keys[dep]) for dep in graph.requires[file])
        material = [version, graph.prefix, [*flags, *RECORDING_FLAGS], file, source, deps]
        keys[file] = hashlib.sha256(json.dumps(material).encode()).hexdigest()
    return keys


def _outputs(root: Path, file: str) -> tuple[Path, Path, Path]:
    """Where coqc writes a file's `.vo`, `.glob` and `-time` output."""
    source = root / file
    timing = source.with_name(source.name + TIMING_SUFFIX)
    return source.with_suffix(".vo"), source.with_suffix(".glob"), timing


def _outputs_exist(root: Path, file: str) -> bool:
    """Whether a previous build left every output of the file in place."""
    return all(path.exists() for path in _outputs(root, file))


RECORDING_FLAGS = ("-time", "-set", "Suggest Proof Using=yes")
"""What every compile records beside the file (`.v.timing`): each sentence's range and time,
and for each proof in a section the section variables it uses (`app.rocq.timing`)."""


def _load(root: Path, file: str, library: str, key: str) -> FileResult:
    """The result of an unchanged file, read back from its outputs."""
    _, glob_path, timing_path = _outputs(root, file)
    source = SourceText(read_source(root / file))
    sentences = parse_timing(timing_path.read_text(encoding="utf-8", errors="replace"), source)
    glob = read_glob(glob_path, source)
    return FileResult(file, library, BuildStatus.SKIPPED, key, sentences=sentences, glob=glob)


def _compile(
    toolchain: Toolchain, root: Path, prefix: str, file: str, key: str, flags: tuple[str, ...]
) -> FileResult:
    """Run coqc on one file and read back its sentences, glob or error (in a pool thread)."""
    _, glob_path, timing_path = _outputs(root, file)
    glob_file = glob_path.relative_to(root).as_posix()
    arguments = ("-R", ".", prefix, *flags, *RECORDING_FLAGS, "-dump-glob", glob_file, file)
    command = toolchain.command("coqc", *arguments)
    started = time.monotonic()
    with timing_path.open("w", encoding="utf-8") as timing:
        run = subprocess.run(command, cwd=root, stdout=timing, stderr=subprocess.PIPE)
    result = functools.partial(
        FileResult, file, library_name(file, prefix), key=key, seconds=time.monotonic() - started
    )
    source = SourceText(read_source(root / file))
    sentences = parse_timing(timing_path.read_text(encoding="utf-8", errors="replace"), source)
    if run.returncode != 0:
        stderr = run.stderr.decode("utf-8", errors="replace")
        error = parse_error(stderr, file, source) or CompileError(
            stderr.strip()[-_MAX_MESSAGE:] or f"coqc exited with status {run.returncode}"
        )
        return result(BuildStatus.FAILED, error=error, sentences=sentences)
    try:
        glob = read_glob(glob_path, source)
    except (OSError, GlobFormatError) as exc:
        error = CompileError(f"cannot read {glob_file}: {exc}")
        return result(BuildStatus.FAILED, error=error, sentences=sentences)
    return result(BuildStatus.BUILT, sentences=sentences, glob=glob)


def parse_error(stderr: str, file: str, source: SourceText) -> CompileError | None:
    """Rocq's last error in coqc's stderr, located in the source when Rocq gave a location.

    Rocq prints `File "./f.v", line L, characters A-B:` then `Error: ...`; L is 1-based, and A
    and B are BYTE columns counted from the start of line L (B too, even on a later line).
    """
    lines = stderr.splitlines()
    starts = ("Error", "Anomaly")
    index = next((i for i in reversed(range(len(lines))) if lines[i].startswith(starts)), None)
    if index is None:
        return None
    message = "\n".join(lines[index:]).removeprefix("Error:").strip()
    location = _LOCATION.fullmatch(lines[index - 1]) if index > 0 else None
    if location is None or os.path.normpath(location[1]) != os.path.normpath(file):
        return CompileError(message)
    line_start = source.char_to_byte(source.offset(Position(int(location[2]) - 1, 0)))
    byte_start, byte_end = line_start + int(location[3]), line_start + int(location[4])
    char_start, char_end = source.byte_to_char(byte_start), source.byte_to_char(byte_end)
    return CompileError(
        message,
        byte_start,
        byte_end,
        char_start,
        char_end,
        source.position(char_start),
        source.position(char_end),
    )
