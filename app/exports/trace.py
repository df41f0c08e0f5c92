"""The trace of a library as a product (`rocqcot trace`): one JSON record per theorem and per
have sub-theorem, in library order, in `<library>.jsonl`, with its card `<library>_card.md`.

Haves are records of their own, right after their parent (depth first), with `parent` naming
it: every record has the same shape, and a consumer that wants only top-level theorems keeps
those whose `parent` is null. A theorem that failed a step is a record too, with the step and
Rocq's message. Nothing depends on row ids, dates or dict order in memory, so a re-export of the
same database is byte-identical (and a file already holding those bytes is not rewritten).
"""

from __future__ import annotations

import collections
import filecmp
import importlib.metadata
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from app.exports import records, trace_reads
from app.exports.records import StepRecord, proof_steps
from app.exports.trace_reads import TracedFile, TracedTheorem
from app.plural import plural
from app.rocq.toolchain import summary

FAILURE_EXAMPLES = 3
"""Theorems named per failure reason on the card."""


@dataclass
class TraceCounts:
    """What a library's trace holds, for its card and for `bench/trace.py`."""

    theorems: collections.Counter[str] = field(default_factory=collections.Counter)
    """Top-level theorems by outcome (traced, failed, pending)."""
    haves: collections.Counter[str] = field(default_factory=collections.Counter)
    """Have sub-theorems by outcome."""
    proof_steps: int = 0
    premises: int = 0
    """Premises named by the proof steps (one per step that names it)."""
    failures: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(stage, reason) → the fqns that failed so."""


@dataclass(frozen=True)
class TraceInfo:
    """What a trace export wrote."""

    library: str
    path: Path
    card: Path
    records: int
    counts: TraceCounts


def write_traces(session: Session, out: Path) -> list[TraceInfo]:
    """Write the trace of every library with theorems to `out`, each with its card."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_trace(session, name, out) for name in trace_reads.library_names(session)]


def write_trace(session: Session, name: str, out: Path) -> TraceInfo:
    """Write one library's trace and card."""
    library_id = trace_reads.library_id(session, name)
    assert library_id is not None, name
    path, counts = out / f"{name}.jsonl", TraceCounts()
    definitions = trace_reads.definitions(session)
    written = path.with_name(f".{path.name}.new")
    lines = 0
    with written.open("w", encoding="utf-8") as sink:
        for file in trace_reads.files(session, library_id):
            for record in file_records(session, file, definitions, counts):
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                lines += 1
    _replace_if_changed(written, path)
    card = card_path(path)
    not_built = trace_reads.file_failures(session, library_id)
    text = card_text(session, name, path, lines, counts, not_built)
    if not card.exists() or card.read_text(encoding="utf-8") != text:
        card.write_text(text, encoding="utf-8")
    return TraceInfo(name, path, card, lines, counts)


def _replace_if_changed(written: Path, path: Path) -> None:
    """Keep the old file when it holds the same bytes (its time stamp says nothing changed)."""
    if path.exists() and filecmp.cmp(written, path, shallow=False):
        written.unlink()
    else:
        os.replace(written, path)


def card_path(path: Path) -> Path:
    """The card of a trace: `<library>_card.md` beside it."""
    return path.with_name(f"{path.stem}_card.md")


# --- Records ----------------------------------------------------------------------------------


def file_records(
    session: Session,
    file: TracedFile,
    definitions: dict[str, dict[str, Any]],
    counts: TraceCounts,
) -> list[dict[str, Any]]:
    """A file's records: each top-level theorem by offset, its haves depth first after it."""
    rows = trace_reads.theorems(session, file.id)
    chains = proof_steps(session, [row.id for row in rows])
    children: dict[int | None, list[TracedTheorem]] = collections.defaultdict(list)
    for row in rows:
        children[row.parent_id].append(row)
    fqns = {row.id: row.fqn for row in rows}
    found: list[dict[str, Any]] = []

    def visit(row: TracedTheorem) -> None:
        record = theorem_record(row, file, fqns.get(row.parent_id or -1), chains.get(row.id, []),
                                definitions)  # fmt: skip
        record["haves"] = [child.fqn for child in children[row.id]]
        _count(record, counts)
        found.append(record)
        for child in children[row.id]:
            visit(child)

    for row in children[None]:
        visit(row)
    return found


def theorem_record(
    row: TracedTheorem,
    file: TracedFile,
    parent: str | None,
    chains: list[StepRecord],
    definitions: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One record: where the theorem is, what it says, its proof and, when step 4 evaluated
    it, its initial state and its steps with their goals, diffs and premises."""
    evaluation = row.evaluation if isinstance(row.evaluation, dict) else None
    outcome = "traced" if evaluation else "failed" if row.status == "failed" else "pending"
    have = parent is not None
    record: dict[str, Any] = {
        "fqn": row.fqn,
        "parent": parent,
        "file": file.path,
        "logical_path": file.logical_path,
        "position": None if have else _position(row),
        "kind": row.kind,
        "statement": (evaluation or {}).get("statement", row.statement) if have else row.statement,
        "proof": row.proof,
        "tagged_proof": row.tagged_proof,
        "status": outcome,
        "failed_stage": row.stage if outcome == "failed" else None,
        "error": row.error if outcome == "failed" else None,
    }
    evaluation = evaluation or {}
    if have:
        record["parent_chain"] = evaluation.get("parent_chain")
        record["printing"] = evaluation.get("printing")
    variables = [
        {"text": v.get("text"), "names": v.get("names"),
         "premises": _premises(v.get("dependencies"), definitions)}
        for v in evaluation.get("global_variables") or ()
    ]  # fmt: skip
    record |= {
        "global_variables": variables,
        "initial_goal": evaluation.get("initial_goal"),
        "initial_goal_with_gvars": evaluation.get("initial_goal_with_gvars"),
        "statement_premises": _premises(evaluation.get("statement_dependencies"), definitions),
        "steps": [_step(chain, definitions) for chain in chains] if evaluation else [],
    }
    return record


def _position(row: TracedTheorem) -> dict[str, int | None]:
    return {"line": row.line, "column": row.character,
            "byte_start": row.byte_start, "byte_end": row.byte_end}  # fmt: skip


def _step(chain: StepRecord, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "index": chain.index,
        "chain": chain.chain,
        "goals": chain.goals,
        "goals_with_gvars": chain.goals_with_gvars,
        "goal_diff": chain.goal_diff,
        "premises": _premises(chain.dependencies, definitions),
    }


def _premises(
    dependencies: list[dict[str, Any]] | None, definitions: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Step 4's dependencies as premises: the name as written, the dictionary fqn, the name
    Rocq locates, kind, type, the character spans of the built file that name it (when step 4
    recorded them) and where it is defined (when the dictionary has it)."""
    return [
        {
            "name": d.get("name"),
            "fqn": d.get("fqn"),
            "located": d.get("located"),
            "kind": d.get("kind"),
            "type": d.get("type"),
            "spans": d.get("spans"),
            "defined_in": definitions.get(d.get("fqn") or ""),
        }
        for d in dependencies or ()
    ]


def _count(record: dict[str, Any], counts: TraceCounts) -> None:
    kind = counts.haves if record["parent"] else counts.theorems
    kind[record["status"]] += 1
    counts.proof_steps += len(record["steps"])
    counts.premises += sum(len(step["premises"]) for step in record["steps"])
    if record["status"] == "failed":
        key = (record["failed_stage"], failure_reason(record["fqn"], record["error"]))
        counts.failures.setdefault(key, []).append(record["fqn"])


def failure_reason(fqn: str, error: str | None) -> str:
    """An error without its theorem's name, chain and positions, so that alike failures count
    together: its first line, blanks collapsed, at most 160 characters."""
    text = (_first_line(error) or "no reason recorded").removeprefix(f"{fqn}: ")
    text = re.sub(r"`[^`]*`", "`…`", text)
    return re.sub(r"\s+", " ", text)[:160]


# --- The card ---------------------------------------------------------------------------------


def facts(
    session: Session,
    name: str,
    path: Path,
    lines: int,
    counts: TraceCounts,
    file_failures: list[tuple[str, str, str | None]],
) -> dict[str, Any]:
    """Everything the card says, as plain data (no date: a re-export gives the same card)."""
    library = next(lib for lib in records.libraries(session) if lib.name == name)
    failures = sorted(counts.failures.items(), key=lambda item: (-len(item[1]), item[0]))
    return {
        "trace": {
            "file": path.name,
            "records": lines,
            "theorems": _outcomes(counts.theorems),
            "haves": _outcomes(counts.haves),
            "proof_steps": counts.proof_steps,
            "premises": counts.premises,
        },
        "library": {
            "name": library.name,
            "logical_prefix": library.logical_prefix,
            "source": library.input_path,
            "version": library.version,
            "rocq": library.rocq_version,
            "ssreflect": library.ssreflect,
            "extractor": library.extractor_version,
        },
        "failures": [
            {
                "stage": stage,
                "reason": reason,
                "count": len(fqns),
                "examples": fqns[:FAILURE_EXAMPLES],
            }
            for (stage, reason), fqns in failures
        ],
        "files_not_traced": [
            {"file": file, "status": status, "error": _first_line(error)}
            for file, status, error in file_failures
        ],
        "toolchain": records.toolchain(session),
        "versions": {
            "rocqcot": importlib.metadata.version("rocqcot"),
            "python": platform.python_version(),
        },
    }


def _outcomes(counter: collections.Counter[str]) -> dict[str, int]:
    return {outcome: counter[outcome] for outcome in ("traced", "failed", "pending")}


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0][:300] if text and text.strip() else None


def card_text(
    session: Session,
    name: str,
    path: Path,
    lines: int,
    counts: TraceCounts,
    file_failures: list[tuple[str, str, str | None]],
) -> str:
    """The card: YAML front matter for programs, then the same facts and the record format for
    people."""
    data = facts(session, name, path, lines, counts, file_failures)
    trace, library = data["trace"], data["library"]
    theorems, haves = trace["theorems"], trace["haves"]
    version = f" {library['version']}" if library["version"] else ""
    made_with = summary(data["toolchain"]) if data["toolchain"] else "an unrecorded toolchain"
    body = [
        "---",
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# rocqcot trace: {name}{version}",
        "",
        f"`{path.name}` holds {plural(lines, 'record')}: "
        f"{plural(sum(theorems.values()), 'theorem')} of {name} (logical path "
        f"{library['logical_prefix']}) — {theorems['traced']} traced, {theorems['failed']} "
        f"failed, {theorems['pending']} pending — and {plural(sum(haves.values()), 'have')} "
        f"as sub-theorems ({haves['traced']} traced, {haves['failed']} failed, "
        f"{haves['pending']} pending); {plural(trace['proof_steps'], 'proof step')} naming "
        f"{plural(trace['premises'], 'premise')}.",
        f"Made with {made_with} (steps 0, 1, 2 and 4 --all of rocqcot "
        f"{data['versions']['rocqcot']}). Every goal and premise comes from Rocq.",
        "",
        "## Failures",
        "",
    ]
    if not data["failures"] and not data["files_not_traced"]:
        body.append("None.")
    for failure in data["failures"]:
        examples = ", ".join(f"`{fqn}`" for fqn in failure["examples"])
        body.append(
            f"- step {failure['stage']}: {failure['count']} x {failure['reason']} ({examples})"
        )
    for file in data["files_not_traced"]:
        body.append(f"- file `{file['file']}` ({file['status']}): {file['error'] or 'no message'}")
    return "\n".join([*body, "", RECORD_FORMAT])


FIELDS = (
    ("`fqn`", "fully qualified name; a have is `<parent>_have_<i>`"),
    ("`parent`", "the fqn of the theorem whose have this is; null for a top-level theorem"),
    ("`file`, `logical_path`", "the file, relative to the library's folder; its logical path"),
    ("`position`", "`{line, column, byte_start, byte_end}`: 0-based line and column of the "
     "statement, and the bytes from the statement to the proof's end in the built text "
     "(comments stripped); null for a have"),
    ("`kind`", "Lemma, Theorem, …"),
    ("`statement`", "as written; for a have, the lemma Rocq read back as its goal"),
    ("`proof`, `tagged_proof`", "the proof as written, and with its haves in `(*<have>*)` … "
     "`(*</have>*)` (the proof itself when it has none)"),
    ("`status`", "`traced`, `failed` (then `failed_stage` and `error`: the step and Rocq's "
     "message) or `pending`"),
    ("`parent_chain`, `printing`", "(haves only) the index of the parent's step that opens "
     "the have; the printing options its statement needed"),
    ("`global_variables`", "section variables in scope: `{text, names, premises}`"),
    ("`initial_goal`, `initial_goal_with_gvars`", "the goal when the proof starts, without and "
     "with the section variables"),
    ("`statement_premises`", "what the statement names"),
    ("`steps`", "per chain: `{index, chain, goals, goals_with_gvars, goal_diff, premises}`; "
     "`goals` is `No more goals.` after the last"),
    ("`haves`", "the fqns of its have sub-theorems"),
)  # fmt: skip
"""The keys of a record, in order, and what each holds (the card's table)."""

RECORD_FORMAT = "\n".join([
    "## The record format",
    "",
    "One JSON object a line, in library order (files in dependency order, theorems by offset),",
    "each have sub-theorem right after its parent (depth first):",
    "",
    "| key | what it holds |",
    "|---|---|",
    *(f"| {key} | {text} |" for key, text in FIELDS),
    "",
    "A premise is `{name, fqn, located, kind, type, spans, defined_in}`: the name as written,",
    "the dictionary's fqn, the name Rocq's `Locate` gives at that point, the glob kind, its",
    "type as Rocq prints it at the theorem's start (under its file's scopes and `Implicit",
    "Types`), the character spans of the built file where the chain names it (`[start, end]`) and",
    "`{logical_path, line}` of its definition (null for an object outside the dictionary).",
    "",
])  # fmt: skip
