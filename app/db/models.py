"""The schema of the whole pipeline (SQLAlchemy 2 declarative models).

Every table that a stage processes mixes in `StageColumns`: the row carries its own stage,
status, attempts, error and lease, so workers can claim it and users can watch it with SQL.
Results are keyed by natural unique keys so that writing a result twice gives the same rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from app.db.enums import Stage, Status

Json = dict[str, Any] | list[Any]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {Json: JSONB, dict[str, Any]: JSONB, list[Any]: JSONB}


STAGE_ENUM = Enum(Stage, name="stage", values_callable=lambda e: [m.value for m in e])
STATUS_ENUM = Enum(Status, name="status", values_callable=lambda e: [m.value for m in e])


class StageColumns:
    """Columns that let the shared worker claim, lease, retry and finish a row."""

    stage: Mapped[Stage] = mapped_column(STAGE_ENUM)
    status: Mapped[Status] = mapped_column(STATUS_ENUM, default=Status.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index(f"ix_{cls.__tablename__}_stage_status", "stage", "status"),)


class Library(StageColumns, Base):
    """A copied, comment-stripped and built library (step 0)."""

    __tablename__ = "libraries"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    input_path: Mapped[str] = mapped_column(Text)
    output_path: Mapped[str] = mapped_column(Text)
    logical_prefix: Mapped[str] = mapped_column(Text)
    rocq_version: Mapped[str | None] = mapped_column(Text)
    extractor_version: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SourceFile(StageColumns, Base):
    """One `.v` file of a library: cleaned text, build result, sentences and glob data."""

    __tablename__ = "source_files"
    __table_args__ = (
        UniqueConstraint("library_id", "logical_path"),
        Index("ix_source_files_stage_status", "stage", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    library_id: Mapped[int] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text, doc="relative to the library's copy (Rocq's)")
    logical_path: Mapped[str] = mapped_column(Text, doc="e.g. mathcomp.ssreflect.div")
    from_rocq: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default="false",
        doc="a file of Rocq's own library that the library requires, built for the dictionary",
    )
    content_hash: Mapped[str] = mapped_column(Text)
    cleaned_text: Mapped[str] = mapped_column(Text)
    build_status: Mapped[str | None] = mapped_column(Text)
    build_error: Mapped[str | None] = mapped_column(Text)
    build_seconds: Mapped[float | None] = mapped_column(Double)
    dependency_order: Mapped[int | None] = mapped_column(Integer)
    requires: Mapped[list[Any]] = mapped_column(default=list, doc="transitive requirements")
    sentences: Mapped[list[Any]] = mapped_column(default=list)
    glob: Mapped[dict[str, Any]] = mapped_column(default=dict)
    header_docs: Mapped[list[Any]] = mapped_column(default=list)
    theorems_skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Theorem(StageColumns, Base):
    """A theorem of the library, or a have sub-theorem (`parent_id` set, `<fqn>_have_<i>`)."""

    __tablename__ = "theorems"
    __table_args__ = (
        Index("ix_theorems_stage_status", "stage", "status"),
        Index("ix_theorems_file", "file_id", "byte_start"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    fqn: Mapped[str] = mapped_column(Text, unique=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("source_files.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("theorems.id", ondelete="CASCADE"))
    have_index: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    statement: Mapped[str] = mapped_column(Text)
    proof: Mapped[str] = mapped_column(Text, doc="the source text, never rewritten")
    tagged_proof: Mapped[str | None] = mapped_column(Text, doc="proof with (*<have>*) tags")
    line: Mapped[int | None] = mapped_column(Integer, doc="0-based line of the statement")
    character: Mapped[int | None] = mapped_column(Integer)
    byte_start: Mapped[int | None] = mapped_column(Integer)
    byte_end: Mapped[int | None] = mapped_column(Integer)
    source_hash: Mapped[str | None] = mapped_column(Text)
    extractor_version: Mapped[str | None] = mapped_column(Text)
    tactics: Mapped[int | None] = mapped_column(Integer, doc="sentences outside have blocks")
    selected: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    pool: Mapped[str | None] = mapped_column(Text, doc="with_have or without_have")
    select_rank: Mapped[int | None] = mapped_column(Integer)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(
        doc="initial goal(s), global variables, statement dependencies and notations"
    )


class Have(Base):
    """A tagged `have` of a theorem's proof (step 2)."""

    __tablename__ = "haves"
    __table_args__ = (UniqueConstraint("theorem_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    theorem_id: Mapped[int] = mapped_column(ForeignKey("theorems.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    tactic: Mapped[str] = mapped_column(Text)
    statement: Mapped[str] = mapped_column(Text)
    proof: Mapped[str] = mapped_column(Text)


class ProofStep(Base):
    """One replayed chain of a proof with the goals after it and its dependencies (step 4)."""

    __tablename__ = "proof_steps"
    __table_args__ = (UniqueConstraint("theorem_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    theorem_id: Mapped[int] = mapped_column(ForeignKey("theorems.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    chain: Mapped[str] = mapped_column(Text)
    goals: Mapped[str] = mapped_column(Text)
    goals_with_gvars: Mapped[str] = mapped_column(Text)
    goal_diff: Mapped[str] = mapped_column(Text)
    dependencies: Mapped[list[Any]] = mapped_column(default=list)


class LibraryObject(StageColumns, Base):
    """An entry of the dictionary: every object the globs define, with its docstring."""

    __tablename__ = "library_objects"
    __table_args__ = (
        UniqueConstraint("fqn", "kind"),
        Index("ix_library_objects_stage_status", "stage", "status"),
        Index("ix_library_objects_order", "library_order"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("source_files.id", ondelete="CASCADE"))
    fqn: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    fullname: Mapped[str | None] = mapped_column(Text, doc="its source sentence")
    type: Mapped[str | None] = mapped_column(Text, doc="as Rocq prints it")
    type_order: Mapped[int | None] = mapped_column(
        BigInteger,
        doc="`library_order` of the theorem whose start printed `type`: the earliest one's "
        "printing is kept, whichever order workers took theorems in",
    )
    scope: Mapped[str | None] = mapped_column(Text, doc="notation scope")
    line: Mapped[int | None] = mapped_column(Integer)
    historic: Mapped[str | None] = mapped_column(Text, doc="module/section path")
    library_order: Mapped[int] = mapped_column(
        BigInteger, doc="file dependency order then offset: what is defined before what"
    )
    docstring: Mapped[str | None] = mapped_column(Text)
    docstring_source: Mapped[str | None] = mapped_column(
        Text, doc="dictionary, header, llm or offline"
    )
    force_result: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class ObjectEmbedding(Base):
    """A dictionary entry's vector for one embedding model (indexed per model by later steps)."""

    __tablename__ = "object_embeddings"
    __table_args__ = (UniqueConstraint("object_id", "model"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("library_objects.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(Text)
    dimensions: Mapped[int] = mapped_column(Integer)
    text_hash: Mapped[str] = mapped_column(Text, doc="re-embed only when the text changes")
    embedding: Mapped[Any] = mapped_column(Vector())


class Annotation(Base):
    """A per-tactic code explanation or the proof explanation of a theorem (step 5)."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("theorem_id", "kind", "step_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    theorem_id: Mapped[int] = mapped_column(ForeignKey("theorems.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text, doc="tactic or proof")
    step_index: Mapped[int] = mapped_column(Integer, default=-1, server_default="-1")
    content: Mapped[str] = mapped_column(Text)
    writer: Mapped[str] = mapped_column(Text)


class Cot(StageColumns, Base):
    """A chain of thought for a theorem, as blocks; later stages check and split it."""

    __tablename__ = "cots"
    id: Mapped[int] = mapped_column(primary_key=True)
    theorem_id: Mapped[int] = mapped_column(
        ForeignKey("theorems.id", ondelete="CASCADE"), unique=True
    )
    writer: Mapped[str] = mapped_column(Text, doc="offline or llm:<model>")
    blocks: Mapped[list[Any]] = mapped_column(default=list)
    valid: Mapped[bool | None] = mapped_column(Boolean)
    invalid_reason: Mapped[str | None] = mapped_column(Text)


class SearchBlock(StageColumns, Base):
    """A `<search>` block of a CoT with its target and the results of its chosen query."""

    __tablename__ = "search_blocks"
    __table_args__ = (
        UniqueConstraint("cot_id", "block_index"),
        Index("ix_search_blocks_stage_status", "stage", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    cot_id: Mapped[int] = mapped_column(ForeignKey("cots.id", ondelete="CASCADE"))
    block_index: Mapped[int] = mapped_column(Integer)
    target_fqn: Mapped[str | None] = mapped_column(Text)
    query: Mapped[str] = mapped_column(Text)
    target_rank: Mapped[int | None] = mapped_column(Integer)
    results: Mapped[list[Any]] = mapped_column(default=list)


class SearchQuery(Base):
    """A candidate query for a search block: the original (index 0) or a repair (1 to 5)."""

    __tablename__ = "search_queries"
    __table_args__ = (UniqueConstraint("search_block_id", "candidate_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    search_block_id: Mapped[int] = mapped_column(ForeignKey("search_blocks.id", ondelete="CASCADE"))
    candidate_index: Mapped[int] = mapped_column(Integer)
    query: Mapped[str] = mapped_column(Text)
    think: Mapped[str | None] = mapped_column(Text)
    writer: Mapped[str] = mapped_column(Text)
    target_rank: Mapped[int | None] = mapped_column(Integer)
    results: Mapped[list[Any] | None] = mapped_column(doc="its first k results (step 8)")
    chosen: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class LlmCall(Base):
    """A cached LLM answer, keyed by the hash of (model, messages, parameters)."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text, unique=True)
    model: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column()
    response: Mapped[dict[str, Any]] = mapped_column()
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Double, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Example(Base):
    """A training example split from a valid CoT (step 10)."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("cot_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    cot_id: Mapped[int] = mapped_column(ForeignKey("cots.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    blocks: Mapped[list[Any]] = mapped_column(default=list)


class Job(StageColumns, Base):
    """A global step (3, 9) run as one claimed row, with its parameters and summary."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()


class ToolchainRecord(Base):
    """The Rocq a database's rows were made with (one row): data of two toolchains never mix."""

    __tablename__ = "toolchain"
    id: Mapped[int] = mapped_column(primary_key=True)
    rocq_version: Mapped[str] = mapped_column(Text)
    description: Mapped[dict[str, Any]] = mapped_column()
    """`Toolchain.describe()`: Rocq and OCaml versions, installed Rocq packages."""
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Probe(StageColumns, Base):
    """A row of the no-op `probe` stage; `writes` counts how often its result was written."""

    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    writes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


STAGED_TABLES = [
    Library,
    SourceFile,
    Theorem,
    LibraryObject,
    Cot,
    SearchBlock,
    Job,
    Probe,
]
