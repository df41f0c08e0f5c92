"""The Rocq installation in use: where its executables are, its version, its library folders.

Every Rocq process (`coqc`, `coqdep`, `coqidetop`) is started through a `Toolchain`, so one
choice — `--rocq-bin DIR` or `ROCQCOT_ROCQ_BIN`, default the executables on PATH — holds for a
whole run and for the worker processes it starts. A toolchain may live in another Debian
release's root (`scripts/rocq-root.sh`): its bin folder then holds wrappers that run each
executable through `chroot`, and a `sysroot` file naming the root, because the paths Rocq prints
(`coqc -where`) are inside that root. Project files are bound at the same paths inside it, so
they mean the same on both sides; only Rocq's own folders need `host()`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rocq.protocol import Protocol, protocol_for

ENVIRONMENT = "ROCQCOT_ROCQ_BIN"
"""The environment variable that names the toolchain's bin folder (`--rocq-bin` sets it)."""
SYSROOT_FILE = "sysroot"
"""In a bin folder of wrappers: the root through which its executables see the file system."""


class ToolchainError(RuntimeError):
    """The chosen Rocq cannot be used: missing executables, an unknown version."""


@dataclass(frozen=True)
class Toolchain:
    """One Rocq installation, as found by asking its `coqc`."""

    bin_dir: Path | None
    """The folder of its executables; None for the ones on PATH."""
    sysroot: Path
    """The root its executables see as `/` (`/` unless they run in another Debian root)."""
    version: str
    """Rocq's version, e.g. `8.16.1`, `8.20.1`, `9.2`."""
    ocaml: str
    """The OCaml version it was built with."""
    coqlib: Path
    """`coqc -where` as Rocq sees it (inside `sysroot`)."""
    protocol: Protocol
    """coqidetop's XML protocol and the version's other differences (names, prefixes)."""

    @classmethod
    def find(cls, bin_dir: Path | None = None) -> Toolchain:
        """Ask the `coqc` of `bin_dir` (or of PATH) for its version and library folder."""
        if bin_dir is not None and not (bin_dir / "coqc").exists():
            raise ToolchainError(f"--rocq-bin {bin_dir}: no coqc there")
        coqc = str(bin_dir / "coqc") if bin_dir else shutil.which("coqc")
        if coqc is None:
            raise ToolchainError("no coqc on PATH: install Debian's coq, or give --rocq-bin")
        version_line = _output([coqc, "--print-version"]).split()
        return cls(
            bin_dir=bin_dir,
            sysroot=_sysroot(bin_dir),
            version=version_line[0],
            ocaml=version_line[1] if len(version_line) > 1 else "",
            coqlib=Path(_output([coqc, "-where"]).strip()),
            protocol=protocol_for(version_line[0]),
        )

    def executable(self, name: str) -> str:
        """The path (or PATH name) of one of the toolchain's executables."""
        return str(self.bin_dir / name) if self.bin_dir else name

    def command(self, name: str, *args: str) -> list[str]:
        """The argument list that runs executable `name` with `args`."""
        return [self.executable(name), *args]

    @functools.cached_property
    def idetop(self) -> str:
        """coqidetop's executable: the first of the version's names that exists."""
        for name in self.protocol.idetop_names:
            candidate = self.executable(name)
            if (self.bin_dir and Path(candidate).exists()) or (
                not self.bin_dir and shutil.which(name)
            ):
                return candidate
        names = " or ".join(self.protocol.idetop_names)
        raise ToolchainError(f"Rocq {self.version}: no {names} beside coqc")

    def host(self, path: Path) -> Path:
        """Where a path that Rocq prints is seen from this process."""
        return self.sysroot / path.relative_to("/") if path.is_absolute() else path

    @property
    def theories(self) -> Path:
        """Rocq's own library as Rocq names it (`coqdep` prints paths under it)."""
        return self.coqlib / "theories"

    @property
    def core_prefix(self) -> str:
        """The logical prefix of `theories`: `Coq` up to 8.20, `Corelib` since Rocq 9."""
        return self.protocol.core_prefix

    @property
    def user_contrib(self) -> Path:
        """The installed libraries (MathComp, Stdlib on Rocq 9, …), seen from this process."""
        return self.host(self.coqlib / "user-contrib")

    def load_path(self) -> list[tuple[Path, str, str]]:
        """Where Rocq finds installed files, as it loads them: `(folder as Rocq names it,
        logical prefix, coqdep option)`. Rocq's own library is `-R` (its short names resolve),
        each package of user-contrib `-Q` (it must be named: `From mathcomp Require …`)."""
        contrib = self.coqlib / "user-contrib"
        folders = self.user_contrib.iterdir() if self.user_contrib.is_dir() else ()
        packages = sorted(p.name for p in folders if p.is_dir())
        return [(self.theories, self.core_prefix, "-R")] + [
            (contrib / name, name, "-Q") for name in packages
        ]

    def logical_name(self, path: Path) -> str | None:
        """The logical name of an installed file given by Rocq's path (`.v` or `.vo`), else
        None (a file outside the load path, e.g. of the library being built)."""
        for root, prefix, _ in self.load_path():
            if path.is_relative_to(root):
                parts = path.relative_to(root).with_suffix("").parts
                return ".".join((prefix, *parts))
        return None

    def default_library(self) -> Path:
        """The MathComp this Rocq has installed: rocqcot's default library."""
        return self.user_contrib / "mathcomp"

    @functools.cached_property
    def libraries(self) -> dict[str, str]:
        """Installed Rocq packages and their versions, from the root's Debian package database
        (`coq`, `libcoq-mathcomp-ssreflect`, …); empty where there is none."""
        status = self.sysroot / "var/lib/dpkg/status"
        try:
            text = status.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
        return _rocq_packages(text)

    def describe(self) -> dict[str, Any]:
        """What a database, a status line and a dataset card record of the toolchain."""
        return {"rocq": self.version, "ocaml": self.ocaml, "libraries": self.libraries}

    def summary(self) -> str:
        """One line: `Rocq 8.20.1 (OCaml 5.3.0), mathcomp 2.3.0`."""
        return summary(self.describe())


def summary(description: dict[str, Any]) -> str:
    """One line for a toolchain's `describe()`, also when read back from a database."""
    libraries = description.get("libraries") or {}
    mathcomp = sorted({v for k, v in libraries.items() if k.startswith("libcoq-mathcomp")})
    stdlib = libraries.get("libcoq-stdlib")
    extra = "".join(
        f", {name} {version}"
        for name, version in (("mathcomp", ", ".join(mathcomp)), ("stdlib", stdlib))
        if version
    )
    return f"Rocq {description['rocq']} (OCaml {description.get('ocaml') or '?'}){extra}"


_PACKAGE = re.compile(r"^(coq|rocq|libcoq-[\w.+-]+|librocq-[\w.+-]+)$")


def _rocq_packages(status: str) -> dict[str, str]:
    """Installed Rocq packages and their upstream versions from a dpkg status file."""
    packages = {}
    for paragraph in status.split("\n\n"):
        lines = (line for line in paragraph.splitlines() if ": " in line and line[0] != " ")
        fields = dict(line.split(": ", 1) for line in lines)
        name, version = fields.get("Package", ""), fields.get("Version", "")
        if _PACKAGE.match(name) and fields.get("Status", "").endswith(" installed"):
            packages[name] = _upstream(version)
    return dict(sorted(packages.items()))


def _upstream(version: str) -> str:
    """A Debian version without its epoch, revision and repacking suffix: `2.3.0`."""
    version = re.sub(r"^\d+:", "", version)
    version = re.sub(r"-[^-]*$", "", version)
    return re.sub(r"[+~]dfsg.*$", "", version)


def _sysroot(bin_dir: Path | None) -> Path:
    """The root named by a wrappers' folder, else `/`."""
    marker = bin_dir / SYSROOT_FILE if bin_dir else None
    if marker is None or not marker.exists():
        return Path("/")
    return Path(marker.read_text(encoding="utf-8").strip())


def _output(command: list[str]) -> str:
    """What a toolchain executable prints; a clear error when it cannot run."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise ToolchainError(f"cannot run {' '.join(command)}: {detail.strip()}") from error


def select(bin_dir: Path | None) -> None:
    """Use the Rocq of `bin_dir` from now on, in this process and the processes it starts."""
    if bin_dir is not None:
        os.environ[ENVIRONMENT] = str(bin_dir.resolve())


def current() -> Toolchain:
    """The toolchain chosen by `ROCQCOT_ROCQ_BIN`, or the one on PATH."""
    chosen = os.environ.get(ENVIRONMENT) or None
    return _found(chosen)


@functools.cache
def _found(bin_dir: str | None) -> Toolchain:
    return Toolchain.find(Path(bin_dir) if bin_dir else None)
