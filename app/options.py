"""What every command that runs Rocq shares: the choice of toolchain, and its check against
the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.errors import RocqcotError
from app.rocq import toolchain as rocq_toolchain

RocqBin = Annotated[
    Path | None,
    typer.Option(
        "--rocq-bin",
        envvar=rocq_toolchain.ENVIRONMENT,
        help="the folder of the Rocq executables to use [those on PATH]",
        file_okay=False,
    ),
]
FullOption = Annotated[
    bool, typer.Option(help="the whole library instead of MathComp's ssreflect part")
]
InputOption = Annotated[Path | None, typer.Option("--input", help="another library's source tree")]
PrefixOption = Annotated[str | None, typer.Option(help="its logical prefix [its folder's]")]
"""The library `run` and `trace` work on (`step_0.library_arguments`)."""


class ToolchainMismatch(RocqcotError):
    """The database was made with another Rocq than the one chosen now."""


def use_rocq(bin_dir: Path | None) -> rocq_toolchain.Toolchain:
    """Choose the toolchain (for this process and the workers it starts) and bind the database
    to it: the first Rocq used is recorded; another one is a one-line error."""
    from app.db import engine as db
    from app.db.toolchain import bind

    rocq_toolchain.select(bin_dir)
    try:
        chosen = rocq_toolchain.current()
    except rocq_toolchain.ToolchainError as error:
        raise RocqcotError(str(error)) from None
    db.ensure_schema()
    with db.session_factory().begin() as session:
        known = bind(session, chosen.describe())
    if known is not None:
        raise ToolchainMismatch(
            f"this database was made with {rocq_toolchain.summary(known)}, not "
            f"{chosen.summary()}: choose that toolchain (--rocq-bin, "
            f"{rocq_toolchain.ENVIRONMENT}) or another database (ROCQCOT_HOME, DATABASE_URL)"
        )
    return chosen
