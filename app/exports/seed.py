"""The seed exports: each step's rows in the JSON the original scripts wrote and read, field by
field. This module is the one place the mapping lives; `app.exports.records` reads the rows.

- Steps 1 to 3, `{qualid: {filepath_prefix, filepath, position: {line, character}, statement,
  proof}}`: `filepath` is the file under the folder holding the library's copy, with the
  library's folders (`mathcomp/ssreflect/ssrfun.v`), `filepath_prefix` that folder relative to
  the current one. Step 2's proof is the tagged one; its failures go to `_errors.json`, each
  entry with its `error`. Step 3 keeps the selected theorems.
- Step 4, `{qualid: {statement, global_variables: [{pp, notations, dependencies}], initial_goal,
  initial_goal_with_gvars, statement_dependencies, statement_notations, evaluation: [{chain,
  dependencies, goals, goals_with_gvars, goal_diff}]}}`: `goals` is a list of goal strings
  (empty when the proof is done); notations are `{"scope": {scope: {qualid: {name, info}}},
  "noscope": {qualid: {name, info}}}`; a dependency is `{name, fqn, type, info}`, its `info`
  `{fqn, name, kind, fullname, docstring}`, never null; a string the data lacks is `""`, as
  the original never writes null where its readers concatenate or test keys.
- Steps 5 and 6: step 4's entries with `statement_description`, `proof_description`, the `CoT`
  text and each tactic's `detail`, `scenario` and `summary`; step 6 fills the docstrings it
  wrote into `info` with `force_result: true`, and writes `_new_docstring.json`.
- Steps 7 and 8: step 6's entries with `fqn` and `output_blocks`; a search block has its
  `search_result` (`[score, {name, kind, fullname, docstring}, fqn]` triples) and its `target`
  `{name, force_result}` (the name as the proof writes it, as the original's step 7 took it
  from the dependencies); step 7 follows a repaired search with the repair's think and a
  `searchs` block of its five queries; step 8 holds the query it kept, in place.
- Steps 9 and 10, `[{name, blocks, initial_goal}]`: a search block's `target` is `{name,
  force_result}` with the dictionary's short name; step 10's blocks carry `ignore`;
  `initial_goal` is the whole proof state.

Every dict also carries rocqcot's `fqn` where the original had only a short name.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.cot import Block
from app.exports import records
from app.exports.examples import TrainingExample
from app.exports.records import DictionaryEntry, SearchRecord, StepRecord, TheoremRecord
from app.goal_diff import goal_list
from app.llm import require_sections

TACTIC_FIELDS = {"detail": "Breaking it down", "scenario": "What happens", "summary": "Summary"}
PROOF_FIELDS = {"statement_description": "Statement", "proof_description": "Proof"}

Json = dict[str, Any]
Entries = dict[str, DictionaryEntry]


@dataclass(frozen=True)
class SeedExport:
    """A step's seed: the main file's data and the files written beside it (by suffix)."""

    data: Json | list[Json]
    sides: dict[str, Any] = field(default_factory=dict)


# --- Steps 1 to 3 -----------------------------------------------------------------------------


def file_location(theorem: TheoremRecord) -> tuple[str, str]:
    """`(filepath_prefix, filepath)`: the folder holding the library's copy (above its
    logical folders when the copy sits in them), relative to the current folder, and the file
    under it."""
    copy = Path(theorem.output_path)
    folders = tuple(theorem.logical_prefix.split("."))
    base = copy.parent
    if len(copy.parts) > len(folders) and copy.parts[-len(folders) :] == folders:
        base = copy.parents[len(folders) - 1]
    filepath = (copy / theorem.path).relative_to(base).as_posix()
    return os.path.relpath(base, Path.cwd()), filepath


def theorem_entry(theorem: TheoremRecord, tagged: bool) -> Json:
    prefix, filepath = file_location(theorem)
    return {
        "filepath_prefix": prefix,
        "filepath": filepath,
        "position": {"line": theorem.line or 0, "character": theorem.character or 0},
        "statement": theorem.statement,
        "proof": (tagged and theorem.tagged_proof) or theorem.proof,
    }


def step_1(session: Session) -> SeedExport:
    return SeedExport({t.fqn: theorem_entry(t, False) for t in records.extracted(session)})


def step_2(session: Session) -> SeedExport:
    errors = {
        t.fqn: theorem_entry(t, False) | {"error": t.error or ""}
        for t in records.have_failures(session)
    }
    data = {t.fqn: theorem_entry(t, True) for t in records.tagged(session)}
    return SeedExport(data, {"errors": errors})


def step_3(session: Session) -> SeedExport:
    return SeedExport({t.fqn: theorem_entry(t, True) for t in records.selected(session)})


# --- Step 4 -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Docstrings:
    """Where dependencies' docstrings come from: step 4's record, or also step 6's."""

    entries: Entries
    with_step_6: bool


def dependency(data: Json, docs: Docstrings) -> Json:
    """A dependency as the original readers take it (`info` never null, with `fqn`)."""
    fqn = data.get("fqn") or data["name"]
    info, entry = data.get("info") or {}, docs.entries.get(fqn)
    docstring, forced = info.get("docstring") or "", False
    if docs.with_step_6 and not docstring and entry is not None and entry.force_result:
        docstring, forced = entry.docstring or "", True
    short = entry.name if entry is not None else fqn.rpartition(".")[2]
    found = {
        "name": data.get("name") or short,
        "fqn": fqn,
        "type": data.get("type") or "",
        "info": {
            "fqn": fqn,
            "name": short,
            "kind": data.get("kind") or (entry.kind if entry else ""),
            "fullname": info.get("fullname") or (entry.fullname if entry else "") or "",
            "docstring": docstring,
        },
    }
    return found | ({"force_result": True} if forced else {})


def notations(items: Sequence[Json] | None) -> Json:
    """A list of notations as `{"scope": {scope: {qualid: {name, info}}}, "noscope": {…}}`."""
    table: Json = {"scope": {}, "noscope": {}}
    for item in items or ():
        fqn, info, scope = item["fqn"], item.get("info") or {}, item.get("scope") or ""
        name = item.get("notation") or fqn.rpartition(".")[2]
        value = {
            "name": name,
            "info": {
                "fqn": fqn,
                "name": name,
                "kind": "not",
                "scope": scope,
                "fullname": info.get("fullname") or "",
                "docstring": info.get("docstring") or "",
            },
        }
        where = table["scope"].setdefault(scope, {}) if scope else table["noscope"]
        where[fqn] = value
    return table


def evaluation_entry(theorem: TheoremRecord, steps: list[StepRecord], docs: Docstrings) -> Json:
    """Step 4's entry of a theorem or have sub-theorem."""
    ev = theorem.evaluation or {}
    variables = [
        {
            "pp": variable.get("text") or "",
            "notations": notations(variable.get("notations")),
            "dependencies": [dependency(d, docs) for d in variable.get("dependencies") or ()],
        }
        for variable in ev.get("global_variables") or ()
    ]
    return {
        "statement": ev.get("statement") or theorem.statement,
        "global_variables": variables,
        "initial_goal": ev.get("initial_goal") or "",
        "initial_goal_with_gvars": ev.get("initial_goal_with_gvars") or "",
        "statement_dependencies": [
            dependency(d, docs) for d in ev.get("statement_dependencies") or ()
        ],
        "statement_notations": notations(ev.get("statement_notations")),
        "evaluation": [
            {
                "chain": step.chain,
                "dependencies": [dependency(d, docs) for d in step.dependencies],
                "goals": goal_list(step.goals),
                "goals_with_gvars": goal_list(step.goals_with_gvars),
                "goal_diff": step.goal_diff,
            }
            for step in steps
        ],
    }


def _fqns(theorems: list[TheoremRecord], steps: dict[int, list[StepRecord]]) -> set[str]:
    """Every dependency fqn of these theorems."""
    found = set()
    for theorem in theorems:
        ev = theorem.evaluation or {}
        deps = [*(ev.get("statement_dependencies") or ())]
        deps += [d for v in ev.get("global_variables") or () for d in v.get("dependencies") or ()]
        deps += [d for step in steps.get(theorem.id, ()) for d in step.dependencies]
        found |= {d.get("fqn") or d["name"] for d in deps}
    return found


def _evaluations(
    session: Session, theorems: list[TheoremRecord], with_step_6: bool
) -> tuple[dict[int, Json], dict[int, list[StepRecord]]]:
    steps = records.proof_steps(session, [t.id for t in theorems])
    docs = Docstrings(records.dictionary_entries(session, _fqns(theorems, steps)), with_step_6)
    entries = {t.id: evaluation_entry(t, steps.get(t.id, []), docs) for t in theorems}
    return entries, steps


def step_4(session: Session) -> SeedExport:
    theorems = records.evaluated(session)
    entries, _ = _evaluations(session, theorems, False)
    data = {t.fqn: entries[t.id] for t in theorems}
    return SeedExport(data, {"dictionary": records.llm4docq(session)})


# --- Steps 5 and 6 ----------------------------------------------------------------------------


def cot_text(blocks: Sequence[Block]) -> str:
    """The CoT as the original's writer answered it: blocks without attributes (its readers
    match `<kind>…</kind>`)."""
    return "\n\n".join(f"<{block.kind}>\n{block.content}\n</{block.kind}>" for block in blocks)


def explained(
    entry: Json, steps: list[StepRecord], notes: records.Notes, blocks: Sequence[Block]
) -> Json:
    """Step 5's entry: step 4's with the explanations and the CoT."""
    proof = require_sections(notes.proof, tuple(PROOF_FIELDS.values())) if notes.proof else {}
    for step, evaluated in zip(steps, entry["evaluation"], strict=True):
        note = notes.tactics.get(step.index)
        if note is not None:
            sections = require_sections(note, tuple(TACTIC_FIELDS.values()))
            evaluated |= {key: sections[heading] for key, heading in TACTIC_FIELDS.items()}
    described = {key: proof.get(heading, "") for key, heading in PROOF_FIELDS.items()}
    return entry | described | {"CoT": cot_text(blocks)}


def _explained_entries(
    session: Session, with_step_6: bool
) -> tuple[list[TheoremRecord], dict[int, Json], dict[int, records.CotRecord]]:
    theorems = records.with_cots(session)
    ids = [t.id for t in theorems]
    entries, steps = _evaluations(session, theorems, with_step_6)
    notes, cots = records.annotations(session, ids), records.cots(session, ids)
    empty = records.Notes({}, "")
    for theorem in theorems:
        entries[theorem.id] = explained(
            entries[theorem.id],
            steps.get(theorem.id, []),
            notes.get(theorem.id, empty),
            cots[theorem.id].blocks,
        )
    return theorems, entries, cots


def step_5(session: Session) -> SeedExport:
    theorems, entries, _ = _explained_entries(session, False)
    return SeedExport({t.fqn: entries[t.id] for t in theorems})


def step_6(session: Session) -> SeedExport:
    theorems, entries, _ = _explained_entries(session, True)
    written = {
        entry.fqn: {
            "docstring": entry.docstring or "",
            "fqn": entry.fqn,
            "fullname": entry.fullname or "",
        }
        for entry in records.written_docstrings(session)
    }
    return SeedExport({t.fqn: entries[t.id] for t in theorems}, {"new_docstring": written})


# --- Steps 7 and 8 ----------------------------------------------------------------------------


def target(fqn: str, entries: Entries, written: dict[str, str] | None = None) -> Json:
    """A search's target: its name (as the proof writes it when known, as the original's step 7
    named targets after the dependencies; else the dictionary's short name) and whether step 6
    wrote its docstring."""
    entry = entries.get(fqn)
    short = entry.name if entry is not None else fqn.rpartition(".")[2]
    name = (written or {}).get(fqn, short)
    return {"name": name, "force_result": bool(entry and entry.force_result), "fqn": fqn}


Targets = Callable[[str], Json]


def search_result(results: Sequence[Json] | None) -> list[list[Any]]:
    """Results as the original's index returned them: `[score, element, fqn]`."""
    return [
        [
            r.get("score", 0.0),
            {
                "name": r.get("name") or r["fqn"].rpartition(".")[2],
                "kind": r.get("kind") or "",
                "fullname": r.get("fullname") or "",
                "docstring": r.get("docstring") or "",
            },
            r["fqn"],
        ]
        for r in results or ()
    ]


def _search_block(
    content: str, results: Sequence[Json] | None, fqn: str | None, targets: Targets
) -> Json:
    block: Json = {"kind": "search", "content": content, "search_result": search_result(results)}
    return block | ({"target": targets(fqn)} if fqn else {})


def repaired_blocks(
    blocks: Sequence[Block], searches: dict[int, SearchRecord], targets: Targets
) -> list[Json]:
    """Step 7's `output_blocks`: each search with its own results; a repaired one followed by
    the repair's think and its queries as a `searchs` block."""
    out: list[Json] = []
    for index, block in enumerate(blocks):
        search = searches.get(index)
        if block.kind != "search" or search is None:
            out.append({"kind": block.kind, "content": block.content})
            continue
        first = next((c for c in search.candidates if c.index == 0), None)
        results = search.results if first is None or first.results is None else first.results
        out.append(_search_block(block.content, results, search.target, targets))
        repairs = [c for c in search.candidates if c.index > 0]
        if repairs:
            out.append({"kind": "think", "content": repairs[0].think or ""})
            searchs: Json = {"kind": "searchs", "content": [c.query for c in repairs]}
            if search.target:
                searchs["target"] = targets(search.target)
            out.append(searchs)
    return out


def kept_blocks(
    blocks: Sequence[Block], searches: dict[int, SearchRecord], targets: Targets
) -> list[Json]:
    """Step 8's `output_blocks`: each search holding the query step 8 kept, and its results."""
    out: list[Json] = []
    for index, block in enumerate(blocks):
        search = searches.get(index)
        if block.kind == "search" and search is not None:
            out.append(_search_block(search.query, search.results, search.target, targets))
        else:
            out.append({"kind": block.kind, "content": block.content})
    return out


def _searched(session: Session, chosen: bool) -> SeedExport:
    theorems, entries, cots = _explained_entries(session, True)
    searches = records.searches(session, [cot.id for cot in cots.values()])
    targets = {s.target for blocks in searches.values() for s in blocks.values() if s.target}
    dictionary = records.dictionary_entries(session, targets)
    data = {}
    for theorem in theorems:
        cot = cots[theorem.id]
        found = searches.get(cot.id, {})
        wanted = [i for i, block in enumerate(cot.blocks) if block.kind == "search"]
        if set(found) != set(wanted) or (chosen and not all(s.chosen for s in found.values())):
            continue  # the step has not searched all of this CoT yet
        entry = entries[theorem.id]
        written = {d["fqn"]: d["name"] for s in entry["evaluation"] for d in s["dependencies"]}
        targets = functools.partial(target, entries=dictionary, written=written)
        shape = kept_blocks if chosen else repaired_blocks
        blocks = shape(cot.blocks, found, targets)
        data[theorem.fqn] = entry | {"fqn": theorem.fqn, "output_blocks": blocks}
    return SeedExport(data)


def step_7(session: Session) -> SeedExport:
    return _searched(session, chosen=False)


def step_8(session: Session) -> SeedExport:
    return _searched(session, chosen=True)


# --- Steps 9 and 10 ---------------------------------------------------------------------------


def example_entry(example: TrainingExample, entries: Entries, ignore: bool) -> Json:
    """`{name, blocks, initial_goal}`, a search's target as `{name, force_result}`."""
    blocks = []
    for marked in example.blocks:
        block = marked.block
        data: Json = {"kind": block.kind, "content": block.content}
        if block.target is not None:
            data["target"] = target(block.target, entries)
        blocks.append(data | ({"ignore": marked.ignore} if ignore else {}))
    return {"name": example.name, "blocks": blocks, "initial_goal": example.initial_goal}


def examples_seed(session: Session, step: int, examples: list[TrainingExample]) -> SeedExport:
    targets = {m.block.target for e in examples for m in e.blocks if m.block.target}
    entries = records.dictionary_entries(session, targets)
    return SeedExport([example_entry(e, entries, step == 10) for e in examples])


SEEDS: dict[int, Callable[[Session], SeedExport]] = {
    1: step_1,
    2: step_2,
    3: step_3,
    4: step_4,
    5: step_5,
    6: step_6,
    7: step_7,
    8: step_8,
}
"""The steps whose seed is not made of training examples (9 and 10 are)."""
