"""The `rocqcot` command line (also `python -m app`).

Every command that touches the database first brings the schema to head, so a fresh machine
needs no separate migration step. Errors the user can act on print one line and exit 1.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app.db import engine as db
from app.db import queue
from app.db.enums import Stage, Status
from app.errors import RocqcotError
from app.options import FullOption, InputOption, PrefixOption, RocqBin, use_rocq
from app.plural import plural
from app.progress import StepProgress
from app.steps import STEPS, StepInfo, step_module
from app.steps.step_3 import KHaveOption, KWoHaveOption
from app.trace import command as trace_command

DATASET_DIR = Path("export/dataset")
DATASET_FILE = "train.jsonl"

app = typer.Typer(
    help="Build chain-of-thought training data for LLM provers from a Rocq library.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database: where it is, and its schema.", no_args_is_help=True)
step_app = typer.Typer(help="Run one pipeline step until no row is ready.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(step_app, name="step")


@app.callback()
def setup_logging(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@db_app.command("url")
def db_url(
    show_password: Annotated[
        bool, typer.Option("--show-password", help="print the password too")
    ] = False,
) -> None:
    """Print the database URL as psql takes it (starting the embedded server if it is the one
    in use); the password is hidden unless asked for."""
    typer.echo(db.libpq_url(hide_password=not show_password))


@db_app.command("psql")
def db_psql(
    args: Annotated[list[str] | None, typer.Argument(help="more psql arguments")] = None,
) -> None:
    """Open psql on the database (the embedded server's own psql when it is in use)."""
    command = db.psql_command(args or [])
    os.execvpe(command.argv[0], command.argv, command.env)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (commands start it again when they need it)."""
    typer.echo(db.stop_embedded())


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the schema up (to head by default)."""
    db.upgrade(revision)
    typer.echo(f"schema at {db.current_revision()}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="a revision, or 'base'")) -> None:
    """Migrate the schema down (`base` drops every table)."""
    db.downgrade(revision)
    typer.echo(f"schema at {db.current_revision() or 'base'}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rows per table, stage and status (the `stage_status` view); LLM tokens and cost."""
    from app.db.toolchain import recorded
    from app.llm import usage
    from app.rocq.toolchain import summary

    db.ensure_schema()
    with db.session_factory()() as session:
        rows = with_selection(session, queue.status_counts(session))
        spent = usage(session)
        made_with = recorded(session)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        typer.echo("no rows yet")
    else:
        typer.echo(f"{'table':<16} {'stage':<11} {'status':<12} {'rows':>8}")
    for row in rows:
        table, stage, state, count = row["table_name"], row["stage"], row["status"], row["rows"]
        typer.echo(f"{table:<16} {stage:<11} {state:<12} {count:>8}")
    typer.echo(f"toolchain: {summary(made_with) if made_with else 'none yet'}")
    typer.echo(spent.line())


def with_selection(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows step 3's selection keeps out of steps 5 to 10 shown as `not selected`, beside
    their stage (theorems done with `select` or `evaluate` would otherwise read as on their
    way; a CoT of an earlier selection as still in the dataset)."""
    from app.gate import outside_counts

    outside = outside_counts(session)
    shown = []
    for row in rows:
        gated = outside.get((row["table_name"], str(row["stage"]), str(row["status"])), 0)
        if gated and row["rows"] > gated:
            shown.append(row | {"rows": row["rows"] - gated})
        shown.append(row | {"status": "not selected", "rows": gated} if gated else row)
    return shown


@app.command()
def worker(
    stage: Annotated[
        list[str], typer.Option("--stage", "-s", help="a stage to run (repeat for a group)")
    ],
    forever: Annotated[bool, typer.Option(help="keep polling when nothing is ready")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="worker threads per stage")] = 1,
    rocq_bin: RocqBin = None,
) -> None:
    """Run workers of one or more stages until no row is ready (or forever)."""
    from app.stages import stage_spec
    from workers.runner import run_workers

    specs = [stage_spec(name) for name in stage]
    db.ensure_schema()
    if any(spec.runs_rocq for spec in specs):
        use_rocq(rocq_bin)
    stats = run_workers(specs, concurrency=concurrency, forever=forever)
    names = ", ".join(stage)
    typer.echo(f"{names}: {stats.done} done, {stats.failed} failed, {stats.lost} lost leases")


@app.command()
def reprocess(
    fqn: str,
    from_stage: Annotated[str, typer.Option("--from", help="the first stage to redo")],
) -> None:
    """Reset one theorem and everything derived from it from STAGE on."""
    from app.db.reprocess import reprocess as reset_theorem

    try:
        stage = Stage(from_stage)
    except ValueError:
        known = ", ".join(s.value for s in Stage)
        raise RocqcotError(f"unknown stage {from_stage!r}; stages are {known}") from None
    db.ensure_schema()
    with db.session_factory().begin() as session:
        typer.echo(reset_theorem(session, fqn, stage))


@app.command("export")
def export_command(
    step: Annotated[int, typer.Option("--step", help="the step whose rows to write")],
    out: Annotated[Path, typer.Option("--out", help="the file to write")],
    fmt: Annotated[
        str, typer.Option("--format", help="seed (the original JSON), jsonl or chat (9, 10)")
    ] = "seed",
) -> None:
    """Write a step's rows in the original scripts' format, or examples as jsonl or chat."""
    from app.exports import write_export

    db.ensure_schema()
    with db.session_factory()() as session:
        info = write_export(session, step, fmt, out)
    typer.echo(f"step {step}: {info.entries} entries written to {out} ({fmt})")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="what to look for, in words")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="results per query")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per query")] = False,
    file: Annotated[
        Path | None, typer.Option("--file", help="one query a line; JSON lines out")
    ] = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense or lexical")] = "hybrid",
    model_name: Annotated[
        str, typer.Option("--model-name", help="sentence-transformers model name or folder")
    ] = "all-MiniLM-L6-v2",
) -> None:
    """Search the dictionary by meaning and words, as the pipeline does (no availability
    filter: every object)."""
    from app.embedding import EmbeddingSettings
    from app.retrieval import answers

    if (query is None) == (file is None):
        raise RocqcotError("give either a QUERY or --file FILE")
    if file is not None and not file.is_file():
        raise RocqcotError(f"--file {file} is not a file")
    queries = [query] if query is not None else _query_lines(file)
    db.ensure_schema()
    found = answers(queries, k, EmbeddingSettings(model_name), mode)
    for answer in found:
        if as_json or file is not None:
            typer.echo(json.dumps(answer, ensure_ascii=False))
            continue
        for hit in answer["hits"]:
            typer.echo(f"{hit['rank']:>3}. {hit['fqn']} ({hit['kind']}) {hit['score']:.4f}")
            typer.echo(f"     {' '.join((hit['statement'] or '').split())[:160]}")


def _query_lines(file: Path) -> list[str]:
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@app.command()
def verify(
    source: Annotated[
        Path, typer.Option("--input", help="an export of step 9 or 10, in any format")
    ] = DATASET_DIR / DATASET_FILE,
    jobs: Annotated[int, typer.Option(min=1, help="Rocq sessions in parallel")] = 1,
    again: Annotated[bool, typer.Option("--again", help="even if verified unchanged")] = False,
    rocq_bin: RocqBin = None,
) -> None:
    """Replay every exported example's scripts and haves in Rocq; each CoT must end the proof."""
    from app import verify as checker

    if not source.is_file():
        raise RocqcotError(f"--input {source} is not a file: export step 9 or 10 first")
    use_rocq(rocq_bin)
    report = None if again else checker.cached_report(source)
    if report is None:
        with db.session_factory()() as session:
            report = checker.verify_file(session, source, jobs)
    else:
        typer.echo(f"verify: {source} unchanged since its last verification")
    typer.echo(report.line())
    for failure in report.failures:
        typer.echo(f"  {failure.name} (example {failure.index}): {failure.reason}")
    if report.failures:
        where = checker.report_path(source)
        count = len(report.failures)
        verb = "does" if count == 1 else "do"
        raise RocqcotError(f"{plural(count, 'example')} {verb} not re-check (see {where})")


@app.command()
def run(
    full: FullOption = False,
    source: InputOption = None,
    prefix: PrefixOption = None,
    jobs: Annotated[int | None, typer.Option(help="parallel Rocq processes [cores]")] = None,
    k_have: KHaveOption = None,
    k_wo_have: KWoHaveOption = None,
    base_url: Annotated[
        str | None, typer.Option(help="an OpenAI-compatible endpoint [ROCQCOT_LLM_BASE_URL]")
    ] = None,
    model: Annotated[str | None, typer.Option(help="its model [ROCQCOT_LLM_MODEL]")] = None,
    out: Annotated[Path, typer.Option(help="the dataset's folder")] = DATASET_DIR,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    rocq_bin: RocqBin = None,
) -> None:
    """The main job: steps 0 to 10 in order, the chat dataset, its verification, a summary.
    A step that leaves failed rows does not stop the run; the run fails at its end."""
    from app.exports import write_export
    from app.llm import StepLeftFailures
    from app.steps.step_0 import library_arguments

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the bars here are enough
    toolchain = use_rocq(rocq_bin)
    typer.echo(f"database: {db.libpq_url(hide_password=True)}")
    typer.echo(f"toolchain: {toolchain.summary()}")
    library = library_arguments(full, source, prefix)
    options = RunOptions(library, jobs or os.cpu_count() or 1, k_have, k_wo_have, base_url, model)
    left: list[str] = []
    with StepProgress(progress) as bars:
        for number, call in pipeline(options, out):
            try:
                resumed(functools.partial(_shown_step, bars, number, call))
            except StepLeftFailures as failures:
                left.append(str(failures))
    dataset = out / DATASET_FILE
    with db.session_factory()() as session:
        info = write_export(session, 10, "chat", dataset)
    status(as_json=False)
    report_failures()
    typer.echo(
        f"dataset: {plural(info.entries, 'example')} of {plural(info.theorems or 0, 'theorem')} "
        f"in {dataset}"
    )
    if info.left_out:
        typer.echo(f"left out by the identifier check: {info.left_out}")
    verify(source=dataset, jobs=options.jobs, again=False)
    if left:
        raise RocqcotError("; ".join(left))


def _shown_step(bars: StepProgress, number: int, call: Callable[[], None]) -> None:
    with bars.step(number):
        call()


def resumed(call: Callable[[], None], attempts: int = 5) -> None:
    """Run a step; if the database went away under its own statements (its workers wait for
    it themselves), wait for the database and run the step again: a step redoes nothing done."""
    from workers.runner import with_reconnect

    for attempt in range(attempts):
        try:
            return call()
        except sa.exc.SQLAlchemyError as error:
            if not db.is_connection_error(error) or attempt == attempts - 1:
                raise
            logging.getLogger(__name__).warning("the database went away: running the step again")
            with_reconnect(_ping, "resume")


def _ping() -> None:
    with db.engine().connect() as connection:
        connection.execute(sa.text("SELECT 1"))


@dataclass(frozen=True)
class RunOptions:
    """What `rocqcot run` hands the steps."""

    library: dict[str, Any]
    """Step 0's arguments: source, name, prefix."""
    jobs: int
    k_have: int | None
    """None: sized from the library (step 3)."""
    k_wo_have: int | None
    base_url: str | None
    model: str | None


def pipeline(options: RunOptions, out: Path) -> list[tuple[int, Callable[[], None]]]:
    """Each step's command with the main job's arguments, in order."""
    llm = {"base_url": options.base_url, "model": options.model}
    arguments: dict[int, dict[str, Any]] = {
        0: {**options.library, "output": None, "jobs": options.jobs, "full": False},
        2: {"max_workers": options.jobs},
        3: {"k_have": options.k_have, "k_wo_have": options.k_wo_have},
        4: {"max_workers": options.jobs},
        5: llm,
        6: llm,
        7: llm,
        9: {"plot_hist": True, "out_dir": out},
    }
    calls = []
    for step in STEPS:
        module = step_module(step.number)
        if module is None:
            raise RocqcotError(f"step {step.number} is not built yet (issue #{step.issue})")
        calls.append(
            (step.number, functools.partial(module.command, **arguments.get(step.number, {})))
        )
    return calls


def report_failures(shown: int = 3) -> None:
    """The most frequent failures of each table and stage, and why the selection's CoTs were
    not kept."""
    from app.db.models import STAGED_TABLES, Cot
    from app.gate import cot_selected

    lines = []
    with db.session_factory()() as session:
        for model in STAGED_TABLES:
            lines += _failures(session, model, shown)
        reasons = session.execute(
            sa.select(Cot.invalid_reason).where(Cot.valid.is_(False), cot_selected())
        ).scalars()
        kinds = collections.Counter(reason.partition(":")[0] for reason in reasons)
    lines += [f"  CoTs not kept ({kind}): {count}" for kind, count in kinds.most_common()]
    typer.echo("failures: none" if not lines else "failures and CoTs not kept:")
    for line in lines:
        typer.echo(line)


def _failures(session: Session, model: type, shown: int) -> list[str]:
    """The most frequent errors of one table's failed rows, per stage."""
    table = model.__table__
    reason = sa.func.split_part(sa.func.coalesce(table.c.error, "no reason"), "\n", 1)
    rows = session.execute(
        sa.select(table.c.stage, reason, sa.func.count())
        .where(table.c.status == Status.failed)
        .group_by(table.c.stage, reason)
        .order_by(table.c.stage, sa.func.count().desc())
    ).all()
    lines, per_stage = [], collections.Counter()
    for stage, text, count in rows:
        per_stage[stage] += 1
        if per_stage[stage] <= shown:
            lines.append(f"  {table.name} {stage}: {count} x {text[:160]}")
    return lines


def _add_step_command(step: StepInfo) -> None:
    """Register `rocqcot step N` from `app.steps.step_N`, or say which issue builds it."""
    module = step_module(step.number)
    if module is None:

        def not_built() -> None:
            raise RocqcotError(
                f"step {step.number} ({step.title}) is not built yet (issue #{step.issue})"
            )

        step_app.command(str(step.number), help=f"{step.title} (not built yet)")(not_built)
        return
    step_app.command(str(step.number), help=step.title)(module.command)


for _step in STEPS:
    _add_step_command(_step)

app.command("trace", help="Steps 0-4 on every theorem, then the trace: one JSONL per library.")(
    trace_command
)


def run_step(command: Callable[..., None]) -> None:
    """`python -m app.steps.step_N`: one step's command with the CLI's error handling."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command()(command)
    _guarded(single)


def main() -> None:
    """Entry point: run the command; print user errors as one line and exit non-zero."""
    _guarded(app)


def _guarded(application: typer.Typer) -> None:
    """Run the application; an error the user can act on, or a database that went away for
    good in the middle of a command, is one line, never a traceback."""
    try:
        application()
    except RocqcotError as error:
        typer.echo(f"rocqcot: error: {error}", err=True)
        sys.exit(1)
    except sa.exc.SQLAlchemyError as error:
        if not db.is_connection_error(error):
            raise
        reason = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig else error
        first = (str(reason).strip().splitlines() or [type(error).__name__])[0]
        typer.echo(f"rocqcot: error: the database went away: {first}", err=True)
        sys.exit(1)
