"""The `rocqcot` command line (also `python -m app`).

Every command that touches the database first brings the schema to head, so a fresh machine
needs no separate migration step. Errors the user can act on print one line and exit 1.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from app.db import engine as db
from app.db import queue
from app.db.enums import Stage
from app.errors import RocqcotError
from app.steps import STEPS, StepInfo, step_module

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
def db_url() -> None:
    """Print the database URL (starting the embedded server if it is the one in use)."""
    typer.echo(db.engine().url.render_as_string(hide_password=True))


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
    from app.llm import usage

    db.ensure_schema()
    with db.session_factory()() as session:
        rows = queue.status_counts(session)
        spent = usage(session)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        typer.echo("no rows yet")
    else:
        typer.echo(f"{'table':<16} {'stage':<11} {'status':<8} {'rows':>8}")
    for row in rows:
        table, stage, state, count = row["table_name"], row["stage"], row["status"], row["rows"]
        typer.echo(f"{table:<16} {stage:<11} {state:<8} {count:>8}")
    typer.echo(spent.line())


@app.command()
def worker(
    stage: Annotated[
        list[str], typer.Option("--stage", "-s", help="a stage to run (repeat for a group)")
    ],
    forever: Annotated[bool, typer.Option(help="keep polling when nothing is ready")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="worker threads per stage")] = 1,
) -> None:
    """Run workers of one or more stages until no row is ready (or forever)."""
    from app.stages import stage_spec
    from workers.runner import run_workers

    specs = [stage_spec(name) for name in stage]
    db.ensure_schema()
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
) -> None:
    """Write a step's rows in the original scripts' file format."""
    from app.export import export

    db.ensure_schema()
    with db.session_factory()() as session:
        count = export(session, step, out)
    typer.echo(f"step {step}: {count} entries written to {out}")


@app.command()
def run(
    full: Annotated[
        bool, typer.Option(help="the whole library instead of MathComp's ssreflect part")
    ] = False,
    jobs: Annotated[int | None, typer.Option(help="parallel coqc processes [cores]")] = None,
) -> None:
    """The main job: every built step in order on the embedded database, then the status."""
    from app.config import DEFAULT_LIBRARY
    from app.steps import step_0, step_1

    db.ensure_schema()
    typer.echo(f"database: {db.engine().url.render_as_string(hide_password=True)}")
    if full:
        source, name, prefix = DEFAULT_LIBRARY, "mathcomp", "mathcomp"
    else:
        source, name = DEFAULT_LIBRARY / "ssreflect", "mathcomp-ssreflect"
        prefix = "mathcomp.ssreflect"
    step_0.command(source=source, output=None, name=name, prefix=prefix, jobs=jobs)
    step_1.command(kinds=None, glob_kinds=None)
    status(as_json=False)


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


def run_step(command: Callable[..., None]) -> None:
    """`python -m app.steps.step_N`: one step's command with the CLI's error handling."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command()(command)
    _guarded(single)


def main() -> None:
    """Entry point: run the command; print user errors as one line and exit non-zero."""
    _guarded(app)


def _guarded(application: typer.Typer) -> None:
    try:
        application()
    except RocqcotError as error:
        typer.echo(f"rocqcot: error: {error}", err=True)
        sys.exit(1)
