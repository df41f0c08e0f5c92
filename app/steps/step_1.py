"""Step 1: extract every theorem of every built file of the library (not Rocq's files, which
step 0 builds for the dictionary only).

A theorem is a glob definition (kind `prf` by default) whose sentence — found among Rocq's own
sentences from `coqc -time` — starts with one of the requested kinds; its proof runs from the
next sentence through `Qed.` or `Defined.`, sliced exactly from the built text. Proofs that end
in `Admitted.` or `Abort.`, and statements that carry their proof term (`:= …`), are skipped
and counted. No regex looks for theorems in the text.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Library, SourceFile, Theorem
from app.db.reprocess import clear_derived
from app.stages import StageSpec, register

DEFAULT_KINDS = ("Theorem", "Lemma", "Fact", "Remark", "Corollary", "Proposition", "Property")
EXTRACTOR_VERSION = "step1-1"
_ATTRIBUTES = re.compile(r"^(?:#\[[^\]]*\]\s*|(?:Local|Global|Polymorphic|Program)\s+)*")
_PROOF_END = re.compile(r"^(Qed|Defined|Admitted|Abort|Save\s+\S+)\s*\.$")
_PROOF_START = re.compile(r"^(Proof|Next Obligation)\b")


@dataclass(frozen=True)
class FileInput:
    """A built file as step 1 reads it."""

    file_id: int
    text: str
    sentences: list[dict[str, Any]]
    definitions: list[dict[str, Any]]
    kinds: tuple[str, ...]
    source_hash: str


@dataclass(frozen=True)
class ExtractedTheorem:
    fqn: str
    kind: str
    statement: str
    proof: str
    line: int
    character: int
    byte_start: int
    byte_end: int
    tactics: int


@dataclass
class Extraction:
    """The theorems of one file and what was skipped, by reason."""

    theorems: list[ExtractedTheorem] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, fqn: str) -> None:
        self.skipped.setdefault(reason, []).append(fqn)


def sentence_kind(sentence: str, kinds: tuple[str, ...]) -> str | None:
    """The theorem kind a sentence opens with (after attributes such as `Local`), if any."""
    rest = sentence[_ATTRIBUTES.match(sentence).end() :]
    word = rest.split(None, 1)[0] if rest.strip() else ""
    return word if word in kinds else None


def extract(item: FileInput) -> Extraction:
    """The theorems of a file, from its sentences and its glob definitions."""
    sentences = item.sentences
    starts = [s["byte_start"] for s in sentences]
    defining = {_sentence_at(starts, sentences, d["byte_start"]) for d in item.definitions}
    extraction = Extraction()
    for definition in item.definitions:
        index = _sentence_at(starts, sentences, definition["byte_start"])
        if index is None:
            continue
        statement = sentences[index]
        kind = sentence_kind(statement["text"], item.kinds)
        if kind is None:
            continue
        end = _proof_end(sentences, index, defining)
        fqn = definition["fqn"]
        if end is None:
            extraction.skip("no proof script", fqn)
            continue
        ending = _PROOF_END.match(sentences[end]["text"].strip()).group(1)
        if ending in ("Admitted", "Abort"):
            extraction.skip(ending, fqn)
            continue
        extraction.theorems.append(_theorem(item.text, sentences, index, end, kind, fqn))
    return extraction


def _sentence_at(starts: list[int], sentences: list[dict[str, Any]], byte: int) -> int | None:
    """The index of the sentence containing a byte offset."""
    index = bisect.bisect_right(starts, byte) - 1
    if index >= 0 and byte < sentences[index]["byte_end"]:
        return index
    return None


def _proof_end(
    sentences: list[dict[str, Any]], statement: int, defining: set[int | None]
) -> int | None:
    """The sentence that closes the proof opened by `statement`, or None if it has none."""
    for index in range(statement + 1, len(sentences)):
        if _PROOF_END.match(sentences[index]["text"].strip()):
            return index
        if index in defining:
            return None  # another definition starts: the statement had no proof script
    return None


def _theorem(
    text: str, sentences: list[dict[str, Any]], index: int, end: int, kind: str, fqn: str
) -> ExtractedTheorem:
    statement, first, last = sentences[index], sentences[index + 1], sentences[end]
    body = sentences[index + 1 : end]
    tactics = sum(1 for s in body if not _PROOF_START.match(s["text"].strip()))
    return ExtractedTheorem(
        fqn=fqn,
        kind=kind,
        statement=statement["text"],
        proof=text[first["char_start"] : last["char_end"]],
        line=statement["start"]["line"],
        character=statement["start"]["character"],
        byte_start=statement["byte_start"],
        byte_end=last["byte_end"],
        tactics=tactics,
    )


def load(session: Session, row_id: int) -> FileInput:
    """The file's text, sentences and definitions (not its many references)."""
    text, sentences, definitions, content_hash, settings = session.execute(
        sa.select(
            SourceFile.cleaned_text,
            SourceFile.sentences,
            SourceFile.glob["definitions"],
            SourceFile.content_hash,
            Library.settings,
        )
        .join(Library, SourceFile.library_id == Library.id)
        .where(SourceFile.id == row_id)
    ).one()
    kinds = tuple(settings.get("kinds") or DEFAULT_KINDS)
    glob_kinds = {"prf"} | set(settings.get("glob_kinds") or ())
    wanted = [d for d in definitions or [] if d["kind"] in glob_kinds]
    return FileInput(row_id, text, sentences, wanted, kinds, content_hash)


def run(item: FileInput) -> tuple[FileInput, Extraction]:
    return item, extract(item)


def store(session: Session, row_id: int, result: tuple[FileInput, Extraction]) -> None:
    """Upsert the file's theorems; a theorem whose text changed is extracted anew and what was
    derived from it is dropped, one that only moved keeps it; theorems gone from the file are
    deleted."""
    item, extraction = result
    upsert_theorems(session, item, extraction.theorems)
    kept = [t.fqn for t in extraction.theorems]
    session.execute(
        sa.delete(Theorem).where(
            Theorem.file_id == row_id, Theorem.parent_id.is_(None), Theorem.fqn.not_in(kept)
        )
    )
    skipped = sum(len(names) for names in extraction.skipped.values())
    session.execute(
        sa.update(SourceFile)
        .where(SourceFile.id == row_id, SourceFile.theorems_skipped != skipped)
        .values(theorems_skipped=skipped)
    )


POSITION = ("line", "character", "byte_start", "byte_end", "source_hash")
"""Where a theorem is: an edit elsewhere in its file moves it without changing it."""
TEXT = ("statement", "proof", "file_id", "kind", "extractor_version")
"""What a theorem is: when one changes, it is extracted anew and what was derived is dropped."""


def upsert_theorems(session: Session, item: FileInput, theorems: list[ExtractedTheorem]) -> None:
    """One statement for the file's theorems: those new or changed are written at `extract`
    (a changed one keeps its name and selection, and loses what was derived from its old
    text); those that only moved get their new position, and so do their have sub-theorems."""
    if not theorems:
        return
    common = {
        "file_id": item.file_id,
        "source_hash": item.source_hash,
        "extractor_version": EXTRACTOR_VERSION,
        "stage": Stage.extract,
        "status": Status.done,
        "attempts": 0,
        "error": None,
    }
    rows = [vars(theorem) | common for theorem in theorems]
    _move(session, rows)
    statement = insert(Theorem).values(rows)
    changed = sa.or_(*(Theorem.__table__.c[c] != statement.excluded[c] for c in TEXT))
    written = session.execute(
        statement.on_conflict_do_update(
            index_elements=["fqn"],
            set_={key: statement.excluded[key] for key in rows[0]},
            where=changed,
        ).returning(Theorem.id, sa.text("xmax <> 0"))
    ).all()
    for theorem_id, was_update in written:
        if was_update:
            clear_derived(session, theorem_id, Stage.haves)


_MOVE = (
    sa.update(Theorem.__table__)
    .where(
        Theorem.fqn == sa.bindparam("key"),
        sa.or_(*(Theorem.__table__.c[c].is_distinct_from(sa.bindparam(f"new_{c}")) for c in
                 POSITION)),
    )
    .values({c: sa.bindparam(f"new_{c}") for c in POSITION})
)  # fmt: skip
_MOVE_CHILDREN = sa.text(
    "UPDATE theorems AS child SET byte_start = parent.byte_start, byte_end = parent.byte_end, "
    "source_hash = parent.source_hash FROM theorems AS parent "
    "WHERE child.parent_id = parent.id AND parent.file_id = :file_id AND "
    "(child.byte_start, child.byte_end, child.source_hash) IS DISTINCT FROM "
    "(parent.byte_start, parent.byte_end, parent.source_hash)"
)


def _move(session: Session, rows: list[dict[str, Any]]) -> None:
    """New positions for the theorems already there, then for their have sub-theorems (which
    stand at their theorem's place), nested ones included."""
    session.execute(_MOVE, [{"key": r["fqn"]} | {f"new_{c}": r[c] for c in POSITION} for r in rows])
    file_id = rows[0]["file_id"]
    while session.execute(_MOVE_CHILDREN, {"file_id": file_id}).rowcount:
        pass


SPEC = register(
    StageSpec(
        stage=Stage.extract,
        model=SourceFile,
        input_stage=Stage.build,
        load=load,
        run=run,
        store=store,
        ready_filter=lambda: SourceFile.from_rocq.is_(False),  # Rocq's theorems: not the library's
        order_by=lambda: [SourceFile.dependency_order],
        batch_size=4,
    )
)


def command(
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="more sentence kinds, e.g. Definition, Instance"),
    ] = None,
    glob_kinds: Annotated[
        list[str] | None,
        typer.Option("--glob-kinds", help="more glob kinds for them, e.g. def, inst"),
    ] = None,
) -> None:
    """Extract every theorem of every built file."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    ensure_schema()
    with session_factory().begin() as session:
        set_kinds(session, kinds or [], glob_kinds or [])
    stats = run_workers([SPEC])
    with session_factory()() as session:
        theorems = session.execute(
            sa.select(sa.func.count()).select_from(Theorem).where(Theorem.parent_id.is_(None))
        ).scalar_one()
        skipped = session.execute(sa.select(sa.func.sum(SourceFile.theorems_skipped))).scalar()
    typer.echo(
        f"step 1: {stats.done} files extracted, {stats.failed} failed; "
        f"{theorems} theorems, {skipped or 0} skipped (Admitted, Abort, no proof script)"
    )


def set_kinds(session: Session, kinds: list[str], glob_kinds: list[str]) -> None:
    """Record the kinds to extract; when they change, every built file is extracted again."""
    wanted = sorted(set(DEFAULT_KINDS) | set(kinds))
    for library in session.execute(sa.select(Library)).scalars():
        settings = library.settings
        if settings.get("kinds") == wanted and settings.get("glob_kinds") == sorted(glob_kinds):
            continue
        library.settings = {**settings, "kinds": wanted, "glob_kinds": sorted(glob_kinds)}
        session.execute(
            sa.update(SourceFile)
            .where(SourceFile.library_id == library.id, SourceFile.stage == Stage.extract)
            .values(status=Status.pending, attempts=0)
        )


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
