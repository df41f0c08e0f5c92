"""Step 0: copy the library, strip its comments, build it, record its files.

The copy (`app.library_copy`) keeps `.v` files and build files only; comments go (after their
header documentation is harvested for the dictionary) so that every later offset refers to the
text that was built. The build is the Rocq layer's: dependency order, parallel, `-time` sentences
and globs, unchanged files skipped. A library row is processed by the `build` stage; each of
its files becomes a `source_files` row, ready for step 1 when it built.

The files of Rocq's own library that the library requires from `ROCQ_FOLDERS` (SSReflect's,
for MathComp) are copied and built too, beside the copy and with their own prefix `Coq`, for
their sentences, globs and header documentation only: they become `source_files` rows marked
`from_rocq`, ahead of every file of the library in dependency order and in the `requires` of
the files that need them, so the dictionary holds their objects and retrieval sees them where
they are available. The library itself still builds against Rocq's installed `.vo` files, and
step 1 does not extract their theorems: they are not the library's. Every other installed file
the library loads (Rocq's prelude, Stdlib files, an installed MathComp) is recorded the same
way without any build (`app.load_path`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import config, load_path
from app.db.enums import Stage, Status
from app.db.models import Library, SourceFile
from app.errors import RocqcotError
from app.library_copy import PreparedFile, copy_tree, is_kept, prepare_file
from app.options import RocqBin, use_rocq
from app.rocq.build import (
    RECORDING_FLAGS,
    BuildResult,
    BuildStatus,
    FileResult,
    build,
)
from app.rocq.dependencies import DependencyGraph, library_name
from app.rocq.installed import prelude, required_files
from app.rocq.positions import (
    valid_text,
)
from app.rocq.toolchain import current as current_toolchain
from app.serialize import plain
from app.stages import StageSpec, register

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = "step0-2"
"""Bumped when step 0 records more: a library built by an older one is built again."""
ROCQ_FOLDERS = ("ssr", "ssrmatching")
"""Folders of Rocq's own library (`coqc -where`/theories) whose files the library requires,
directly or not, are built for the dictionary."""


@dataclass(frozen=True)
class LibraryInput:
    """What the build stage needs to know about a library row."""

    input_path: str
    output_path: str
    prefix: str
    jobs: int | None


@dataclass(frozen=True)
class BuiltLibrary:
    """The result of the build stage: every file with its build outcome."""

    rocq_version: str
    files: list[dict[str, Any]]
    seconds: float


def input_fingerprint(input_path: Path) -> str:
    """A hash of the kept files' paths and contents, of the Rocq files that may be built with
    them and of what a build records: a changed input (or a new Rocq) means a new build."""
    digest = hashlib.sha256(" ".join(RECORDING_FLAGS).encode() + b"\0")
    kept = sorted(p for p in input_path.rglob("*") if p.is_file() and is_kept(p))
    for root, paths in ((input_path, kept), (rocq_theories(), rocq_sources())):
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def rocq_theories() -> Path:
    """Rocq's own installed library (`coqc -where`/theories), seen from this process."""
    toolchain = current_toolchain()
    return toolchain.host(toolchain.theories)


def rocq_sources() -> list[Path]:
    """The `.v` files of `ROCQ_FOLDERS` in Rocq's installed library."""
    theories = rocq_theories()
    return sorted(path for folder in ROCQ_FOLDERS for path in (theories / folder).glob("*.v"))


def rocq_copy_path(output_path: Path) -> Path:
    """Where the Rocq files are copied and built: beside the library's copy, never inside it
    (the library's `-R . PREFIX` would take them in)."""
    return output_path.with_name(output_path.name + ".rocq")


def load(session: Session, row_id: int) -> LibraryInput:
    library = session.get(Library, row_id)
    return LibraryInput(
        library.input_path,
        library.output_path,
        library.logical_prefix,
        library.settings.get("jobs"),
    )


def run(item: LibraryInput) -> BuiltLibrary:
    """Copy, strip and build the library, build the Rocq files it requires from
    `ROCQ_FOLDERS`, read the other installed files it requires; every file's outcome, failed
    ones included, the installed ones first."""
    output = Path(item.output_path)
    prepared = copy_tree(Path(item.input_path), output)
    if not prepared:
        raise RocqcotError(f"{item.input_path} holds no .v file: there is no library to build")
    result = build(output, item.prefix, jobs=item.jobs)
    toolchain = current_toolchain()
    direct = {name for names in result.graph.rocq_requires.values() for name in names}
    installed = required_files(direct, toolchain)
    closures = load_path.closures(installed)
    rocq = build_rocq(rocq_copy_path(output), set(closures), item.jobs)
    built = rocq_records(*rocq) if rocq else []
    for record in built:  # Rocq's files: as the installed ones, objects at distinct bytes
        load_path.distinct(record["glob"].get("definitions", []))
    # A file of the library's own (a slice of Stdlib) or built here is not read as installed.
    own = {record["logical_path"] for record in built} | set(map(result.graph.library, prepared))
    reads = [file for file in installed if file.library not in own]
    files = load_path.installed_records(reads, toolchain)
    files += [r | {"dependency_order": len(files) + r["dependency_order"]} for r in built]
    offset, prelude_closure = len(files), closures.get(prelude(toolchain), frozenset())
    for path in result.graph.order:
        required = rocq_required(result.graph, path, closures) | prelude_closure
        files.append(file_record(result, path, prepared[path], offset=offset, rocq=required))
    seconds = result.seconds + (rocq[0].seconds if rocq else 0.0)
    return BuiltLibrary(result.coqc_version, files, seconds)


def rocq_required(
    graph: DependencyGraph, path: str, closures: dict[str, frozenset[str]]
) -> set[str]:
    """The installed files a library file requires: directly, through the library's files,
    or through the installed ones (`closures`: each installed file with what it requires)."""
    names = {name for file in (path, *graph.closure[path]) for name in graph.rocq_requires[file]}
    return set().union(*(closures.get(name, {name}) for name in names))


def build_rocq(
    copy: Path, required: set[str], jobs: int | None
) -> tuple[BuildResult, dict[str, PreparedFile]] | None:
    """Copy `ROCQ_FOLDERS` and build the files of them the library requires, directly or not
    (`required`: logical names), with the prefix of Rocq's library (`Coq`, `Corelib` on Rocq
    9); None when it requires none of them."""
    prefix = current_toolchain().core_prefix
    theories = rocq_theories()
    sources = {path.relative_to(theories).as_posix(): path for path in rocq_sources()}
    by_name = {library_name(path, prefix): path for path in sources}
    targets = sorted(by_name[name] for name in required if name in by_name)
    if not targets:
        return None
    prepared = {path: prepare_file(source, copy / path) for path, source in sources.items()}
    return build(copy, prefix, jobs=jobs, targets=targets), prepared


def rocq_records(result: BuildResult, prepared: dict[str, PreparedFile]) -> list[dict[str, Any]]:
    """The `source_files` columns of the built Rocq files, first in dependency order."""
    return [file_record(result, path, prepared[path], from_rocq=True) for path in result.files]


def file_record(
    result: BuildResult,
    path: str,
    prepared: PreparedFile,
    *,
    offset: int = 0,
    rocq: set[str] | None = None,
    from_rocq: bool = False,
) -> dict[str, Any]:
    """The `source_files` columns of one built file: `offset` files come before the build's
    first in dependency order, and it requires the Rocq files `rocq` besides its build's."""
    outcome = result.files[path]
    requires = {result.graph.library(dep) for dep in result.graph.closure[path]} | (rocq or set())
    readable = prepared.encoding_error is None
    status = outcome.status if readable else BuildStatus.FAILED
    return {
        "path": path,
        "logical_path": outcome.library,
        "from_rocq": from_rocq,
        "content_hash": hashlib.sha256(prepared.cleaned_text.encode()).hexdigest(),
        "cleaned_text": prepared.cleaned_text,
        "build_status": status.value,
        "build_error": build_error(outcome, prepared),
        "build_seconds": outcome.seconds,
        "dependency_order": offset + list(result.files).index(path),
        "requires": sorted(requires),
        "sentences": plain(outcome.sentences) if readable else [],
        "glob": plain(outcome.glob) if outcome.glob and readable else {},
        "header_docs": prepared.header_docs,
    }


def build_error(outcome: FileResult, prepared: PreparedFile) -> str | None:
    """A one-paragraph reason for a file that did not build, with Rocq's location; for one
    that Rocq built with a byte that is not UTF-8 in a string, where that byte is."""
    if outcome.status in (BuildStatus.BUILT, BuildStatus.SKIPPED):
        return f"{outcome.file}: {prepared.encoding_error}" if prepared.encoding_error else None
    if outcome.status == BuildStatus.DEPENDENCY_FAILED:
        return f"not built: its requirement {outcome.failed_dependency} failed"
    error = outcome.error
    where = (
        f"line {error.start.line + 1}, character {error.start.character}: "
        if (error and error.start)
        else ""
    )
    message = valid_text(error.message) if error else "coqc failed"
    lexer = (
        f" (comments could not be stripped: {prepared.strip_error})"
        if (prepared.strip_error)
        else ""
    )
    return f"{outcome.file}: {where}{message}{lexer}"


def store(session: Session, row_id: int, built: BuiltLibrary) -> None:
    """Upsert the files; a file whose text and build outcome did not change is left alone."""
    session.execute(
        sa.update(Library)
        .where(Library.id == row_id)
        .values(rocq_version=built.rocq_version, extractor_version=EXTRACTOR_VERSION)
    )
    for record in built.files:
        upsert_file(session, row_id, record)


def upsert_file(session: Session, library_id: int, record: dict[str, Any]) -> None:
    ok = record["build_status"] in (BuildStatus.BUILT, BuildStatus.SKIPPED, BuildStatus.INSTALLED)
    values = record | {
        "library_id": library_id,
        "stage": Stage.build,
        "status": Status.done if ok else Status.failed,
        "error": record["build_error"],
        "attempts": 0,
    }
    statement = insert(SourceFile).values(values)
    changed = sa.or_(
        SourceFile.content_hash != statement.excluded.content_hash,
        SourceFile.status != statement.excluded.status,
        SourceFile.dependency_order != statement.excluded.dependency_order,
        SourceFile.requires != statement.excluded.requires,
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["library_id", "logical_path"],
            set_={key: statement.excluded[key] for key in values if key != "library_id"},
            where=changed,
        )
    )


SPEC = register(
    StageSpec(
        stage=Stage.build,
        model=Library,
        input_stage=None,
        load=load,
        run=run,
        store=store,
        lease_seconds=600.0,
        runs_rocq=True,
        max_attempts=2,
    )
)


def register_library(
    session: Session, input_path: Path, output_path: Path, name: str, prefix: str, jobs: int | None
) -> bool:
    """Create or update the library row; queue a build when the input changed. Returns
    whether a build is queued."""
    fingerprint = input_fingerprint(input_path)
    settings = {"fingerprint": fingerprint, "jobs": jobs}
    library = session.execute(sa.select(Library).where(Library.name == name)).scalar()
    if library is None:
        session.add(
            Library(
                name=name,
                input_path=str(input_path),
                output_path=str(output_path),
                logical_prefix=prefix,
                settings=settings,
                stage=Stage.build,
                status=Status.pending,
            )
        )
        return True
    unchanged = (
        library.settings.get("fingerprint") == fingerprint
        and library.input_path == str(input_path)
        and library.output_path == str(output_path)
        and (output_path / ".rocqcot-build.json").exists()
        and library.status == Status.done
        and library.extractor_version == EXTRACTOR_VERSION
    )
    if unchanged:
        return False
    library.input_path, library.output_path = str(input_path), str(output_path)
    library.logical_prefix, library.settings = prefix, {**library.settings, **settings}
    library.stage, library.status, library.attempts, library.error = (
        Stage.build,
        Status.pending,
        0,
        None,
    )
    return True


def default_library(full: bool) -> dict[str, Any]:
    """The library step 0 and `rocqcot run` take without `--input`: the toolchain's MathComp's
    ssreflect part (a few minutes end to end), or all of it with `--full`."""
    mathcomp = current_toolchain().default_library()
    if not mathcomp.is_dir():
        raise RocqcotError(f"no MathComp in {mathcomp}: install it, or give --input")
    if full:
        return {"source": mathcomp, "name": "mathcomp", "prefix": "mathcomp"}
    part = mathcomp / "ssreflect"
    return {"source": part, "name": "mathcomp-ssreflect", "prefix": "mathcomp.ssreflect"}


def library_arguments(full: bool, source: Path | None, prefix: str | None) -> dict[str, Any]:
    """The library of `run` and `trace`: `--input`, or the default (MathComp's ssreflect part,
    all of MathComp with `--full`)."""
    if source is not None:
        return {"source": source, "name": source.name, "prefix": prefix or source.name}
    return default_library(full)


def default_output(name: str, prefix: str) -> Path:
    """Where the copy goes: `$ROCQCOT_HOME/steps/step_0/NAME/` then the folders of its logical
    prefix (`mathcomp/ssreflect`), so that a file's path under `NAME` is its logical path, as
    the original's `filepath` (`mathcomp/ssreflect/ssrfun.v`)."""
    return config.rocqcot_home() / "steps" / "step_0" / name / Path(*prefix.split("."))


def command(
    source: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="the library's source tree [the toolchain's MathComp's ssreflect part, as `run`]",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option(help="without --input: all of MathComp, not its ssreflect part")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(help="where the copy goes [$ROCQCOT_HOME/steps/step_0/NAME/PREFIX/]"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the library's name [its folder's]")] = None,
    prefix: Annotated[
        str | None, typer.Option(help="its logical prefix, as in -R DIR PREFIX [its folder's]")
    ] = None,
    jobs: Annotated[int | None, typer.Option(help="parallel coqc processes [cores]")] = None,
    rocq_bin: RocqBin = None,
) -> None:
    """Copy, strip comments, build the library; record its files."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    use_rocq(rocq_bin)
    if source is None:
        library = default_library(full)
        source, name, prefix = (
            library["source"],
            name or library["name"],
            prefix or library["prefix"],
        )
    source = source.resolve()
    if not source.is_dir():
        raise RocqcotError(f"--input {source} is not a folder")
    if next(source.rglob("*.v"), None) is None:
        raise RocqcotError(f"--input {source} holds no .v file: there is no library to build")
    name, prefix = name or source.name, prefix or source.name
    output = (output or default_output(name, prefix)).resolve()
    ensure_schema()
    with session_factory().begin() as session:
        queued = register_library(session, source, output, name, prefix, jobs)
    stats = run_workers([SPEC])
    with session_factory()() as session:
        summary = file_summary(session, name)
    state = "built" if queued else "unchanged, nothing rebuilt"
    typer.echo(f"step 0: {name} {state}; files: {summary}; output: {output}")
    if stats.failed:
        raise RocqcotError(f"step 0 failed for {name}: see `rocqcot status`")


def file_summary(session: Session, name: str) -> str:
    """Files per build status, e.g. `built 88, failed 1, dependency-failed 2`."""
    rows = session.execute(
        sa.select(SourceFile.build_status, sa.func.count())
        .join(Library)
        .where(Library.name == name)
        .group_by(SourceFile.build_status)
    ).all()
    return ", ".join(f"{status} {count}" for status, count in sorted(rows)) or "none"


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
