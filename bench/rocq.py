"""The toolchain a benchmark runs on: `--rocq-bin DIR` (or ROCQCOT_ROCQ_BIN), else the Rocq on
PATH; its inputs (MathComp, Stdlib files) are found through it, never at a fixed path."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.rocq import toolchain as rocq_toolchain
from app.rocq.toolchain import Toolchain


def add_rocq_bin(parser: argparse.ArgumentParser) -> None:
    """The `--rocq-bin DIR` option every benchmark that runs Rocq takes."""
    parser.add_argument(
        "--rocq-bin",
        type=Path,
        default=None,
        help="the folder of the Rocq executables to use [ROCQCOT_ROCQ_BIN, else those on PATH]",
    )


def chosen(bin_dir: Path | None) -> Toolchain:
    """Use the Rocq of `bin_dir` (in this process and the `rocqcot` processes it starts)."""
    rocq_toolchain.select(bin_dir)
    toolchain = rocq_toolchain.current()
    print(f"toolchain: {toolchain.summary()}", flush=True)
    return toolchain


def stdlib_root(toolchain: Toolchain) -> Path:
    """Rocq's standard library, seen from this process: `user-contrib/Stdlib` where it is its
    own package (Rocq 9), else Rocq's `theories`."""
    own = toolchain.user_contrib / "Stdlib"
    return own if own.is_dir() else toolchain.host(toolchain.theories)


def root_make(toolchain: Toolchain) -> str:
    """The `make` that sees the toolchain's paths (those a `coq_makefile` Makefile names): the
    wrapper beside the executables of a Debian root (`scripts/rocq-root.sh`), else PATH's."""
    wrapper = toolchain.bin_dir / "make" if toolchain.bin_dir else None
    return str(wrapper) if wrapper and wrapper.exists() else "make"
