"""The Rocq toolchains the tests run on, and the truths the tests read from them.

The machine's own toolchain (ROCQCOT_ROCQ_BIN, else PATH), the other Debian release's (trixie on
Debian 12, bookworm on Debian 13) and Rocq 9.2 (forky): the last two live in Debian roots that
`scripts/rocq-root.sh` makes under `${ROCQCOT_ROOTS:-/var/cache/rocqcot/roots}` (a few minutes
the first time, seconds after). Expected counts, texts and paths come from the toolchain in use
(its `coqc -time`, its installed `.glob` and `.v` files), never from one version's constants.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from app.rocq.positions import SourceText
from app.rocq.timing import Sentence, parse_timing
from app.rocq.toolchain import Toolchain

PROJECT = Path(__file__).resolve().parents[1]
ROOTS = Path(os.environ.get("ROCQCOT_ROOTS", "/var/cache/rocqcot/roots"))
KINDS = ("Theorem", "Lemma", "Fact", "Remark", "Corollary", "Proposition", "Property")
"""The seven kinds of statements step 1 extracts."""
LOOP = (
    "let x := eval vm_compute in ((fix spin (n : nat) (b : bool) {struct n} : bool :=\n"
    "  match n with 0 => negb b | S m => spin m (spin m b) end) 80 true) in idtac x."
)
"""A tactic no Rocq finishes: 2^80 steps of the VM, in constant memory, and interruptible."""
_KIND_BEFORE_NAME = re.compile(rf"\b(?:{'|'.join(KINDS)})\s+$")
_PRF = re.compile(r"^prf (\d+):\d+ +(\S+) +(\S+)$", re.MULTILINE)


def other_release() -> str:
    """The Debian release whose Rocq this machine does not have: trixie on 12, bookworm on 13."""
    version = Path("/etc/debian_version").read_text(encoding="utf-8").strip()
    major = version.split(".")[0]
    releases = {"12": "trixie", "13": "bookworm"}
    if major not in releases:
        raise RuntimeError(f"/etc/debian_version is {version!r}: neither Debian 12 nor 13")
    return releases[major]


def rooted(suite: str) -> Toolchain:
    """The toolchain of a Debian root, made (or only mounted) by `scripts/rocq-root.sh`."""
    script = PROJECT / "scripts" / "rocq-root.sh"
    done = subprocess.run(
        ["bash", str(script), suite, str(ROOTS / suite)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"rocq-root.sh {suite} failed: {done.stderr.strip()[-2000:]}")
    return Toolchain.find(Path(done.stdout.splitlines()[-1]))


def mathcomp(toolchain: Toolchain) -> Path:
    """The toolchain's MathComp, seen from this process; a missing one fails the test."""
    library = toolchain.default_library()
    if not (library / "ssreflect").is_dir():
        raise AssertionError(f"{toolchain.summary()}: no MathComp under {library}")
    return library


def stdlib_file(toolchain: Toolchain, relative: str) -> Path:
    """A file of Rocq's standard library, seen from this process: in `user-contrib/Stdlib`
    where Stdlib is its own package (Rocq 9), else in Rocq's `theories`."""
    for folder in (toolchain.user_contrib / "Stdlib", toolchain.host(toolchain.theories)):
        if (folder / relative).is_file():
            return folder / relative
    raise AssertionError(f"{toolchain.summary()}: no {relative} in its standard library")


def timed_sentences(toolchain: Toolchain, file: Path, *args: str) -> list[Sentence]:
    """The sentences the toolchain's `coqc -time` executes in a file (its .vo goes beside)."""
    command = toolchain.command("coqc", *args, "-time", str(file))
    compiled = subprocess.run(command, cwd=file.parent, capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    return parse_timing(compiled.stdout, SourceText(file.read_text(encoding="utf-8")))


def glob_theorems(glob_path: Path) -> set[str]:
    """The theorems of the seven kinds a `.glob` file names, read from its raw `prf` lines and
    the keyword just before each name in the source beside it (not through rocqcot's reader)."""
    text = glob_path.read_text(encoding="utf-8")
    library = re.search(r"^F(\S+)$", text, re.MULTILINE)
    assert library is not None, f"{glob_path}: no F line"
    source = SourceText(glob_path.with_suffix(".v").read_text(encoding="utf-8"))
    found = set()
    for match in _PRF.finditer(text):
        start = source.byte_to_char(int(match.group(1)))
        before = source.text[source.text.rfind("\n", 0, start) + 1 : start]
        if _KIND_BEFORE_NAME.search(before):
            path = [] if match.group(2) == "<>" else [match.group(2)]
            found.add(".".join([library.group(1), *path, match.group(3)]))
    return found
