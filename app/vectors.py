"""Dictionary entries' vectors in pgvector: one model's space, its statements, and the sync.

Embeddings live in `object_embeddings`, one row per (entry, model) with its dimension and a
hash of the embedded text (`app.entries.dense_text`), so a sync embeds only the entries whose
text changed (a new docstring, a changed statement).
Every entry is embedded, docstring or not. Each (model, dimension) gets its own partial HNSW
cosine index, created at run time, so a new model needs no migration: `vector` up to 2,000
dimensions, `halfvec` up to 4,000 (Qwen3-Embedding-4B has 2,560), an exact scan beyond.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from app.db.models import ObjectEmbedding
from app.embedding import Embedder
from app.entries import EntryFacts, dense_text

log = logging.getLogger(__name__)

INDEXED_TYPES = (("vector", 2000), ("halfvec", 4000))
"""pgvector's types for HNSW indexes and the most dimensions each can index."""
SYNC_LOCK = 7_301_009
"""Advisory lock key: one sync per model at a time, however many workers start together."""
UPSERT_ROWS = 512


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- One model's vectors in pgvector ---------------------------------------------------------


@dataclass(frozen=True)
class VectorSpace:
    """The stored vectors of one model and dimension, and the SQL that reads them.

    The model name is written into the SQL as a literal, not a parameter, so that the planner
    matches the partial index of this model even with a cached generic plan.
    """

    model: str
    dimensions: int

    @property
    def index_type(self) -> str | None:
        """The pgvector type the HNSW index casts to, or None if none can index this size."""
        for name, most in INDEXED_TYPES:
            if self.dimensions <= most:
                return name
        return None

    @property
    def cast(self) -> str:
        return f"{self.index_type or 'vector'}({self.dimensions})"

    @property
    def index_name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.model.lower()).strip("_")[:28]
        digest = hashlib.sha256(self.model.encode()).hexdigest()[:8]
        return f"ix_emb_hnsw_{slug}_{digest}_{self.dimensions}"

    def where(self, alias: str = "e.") -> str:
        """This space's rows of `object_embeddings`, as its partial index states them."""
        model = "'" + self.model.replace("'", "''") + "'"
        return f"{alias}model = {model} AND {alias}dimensions = {self.dimensions}"

    def distance(self) -> str:
        return f"(e.embedding::{self.cast} <=> CAST(:query AS {self.cast}))"


_AVAILABLE = (
    "(o.file_id = ANY(:required_files) OR (o.file_id = :file_id AND o.library_order < :before))"
)


@functools.cache
def statements(space: VectorSpace) -> dict[str, sa.TextClause]:
    """The named statements of one vector space."""
    rows = f"object_embeddings e JOIN library_objects o ON o.id = e.object_id WHERE {space.where()}"
    query = sa.bindparam("query", type_=Vector())
    nearest = (
        f"SELECT o.id, o.fqn, o.kind, o.name, o.fullname, coalesce(o.docstring, ''), "
        f"1 - {space.distance()} AS score FROM {rows} AND {_AVAILABLE} "
        f"ORDER BY {space.distance()}"
    )
    search = f"{nearest} LIMIT :k"
    return {
        # The k nearest available entries, nearest first.
        "search": sa.text(search).bindparams(query),
        # The same, equally near entries in a fixed order (a sort the index cannot give: an
        # exact scan).
        "exact": sa.text(f"{nearest}, o.id LIMIT :k").bindparams(query),
        # How PostgreSQL runs that search.
        "explain": sa.text(f"EXPLAIN ANALYZE {search}").bindparams(query),
        # The HNSW cosine index of this space, if it has none yet.
        "index": sa.text(
            f"CREATE INDEX IF NOT EXISTS {space.index_name} ON object_embeddings "
            f"USING hnsw ((embedding::{space.cast}) {space.index_type}_cosine_ops) "
            f"WHERE {space.where(alias='')}"
        ),
    }


# --- Syncing the dictionary's embeddings ------------------------------------------------------


# --- Syncing the dictionary's embeddings ------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """What a sync did."""

    entries: int
    """Entries of the dictionary (all embedded after the sync)."""
    embedded: int
    """Entries embedded now: new, or their text changed."""
    seconds_embedding: float


ENTRY_COLUMNS = "o.id, o.fqn, o.kind, o.name, o.fullname, o.docstring, o.docstring_source"
_ENTRIES = sa.text(
    f"SELECT {ENTRY_COLUMNS}, e.text_hash, e.dimensions "
    "FROM library_objects o LEFT JOIN object_embeddings e "
    "ON e.object_id = o.id AND e.model = :model ORDER BY o.library_order, o.id"
)


@contextmanager
def _sync_lock(engine: Engine, model: str) -> Iterator[None]:
    """Held while one process syncs a model; others wait, then find nothing to do."""
    with engine.connect() as connection:
        key = {"key": SYNC_LOCK, "model": model}
        connection.execute(sa.text("SELECT pg_advisory_lock(:key, hashtext(:model))"), key)
        connection.commit()  # the lock belongs to the session: no transaction stays open
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key, hashtext(:model))"), key)
            connection.commit()


def _stale(connection: Connection, model: Embedder) -> tuple[int, list[tuple[int, str, str]]]:
    """How many entries there are, and (id, text, hash) of those to embed."""
    rows = connection.execute(_ENTRIES, {"model": model.name}).all()
    facts = [EntryFacts(*row[:7]) for row in rows]
    stale = []
    for entry, (*_, stored_hash, dimensions) in zip(facts, rows, strict=True):
        text = dense_text(entry)
        digest = text_hash(f"{model.variant}\0{text}")
        if digest != stored_hash or dimensions != model.dimensions:
            stale.append((entry.id, text, digest))
    # Texts of like length batch together: a batch is padded to its longest text.
    return len(rows), sorted(stale, key=lambda item: (len(item[1]), item[0]))


def _upsert(engine: Engine, model: Embedder, chunk: list[tuple[int, str, str]]) -> float:
    """Embed and write one chunk (its own transaction: an interrupted sync keeps its work);
    returns the seconds spent embedding."""
    started = time.perf_counter()
    vectors = model.documents([text for _, text, _ in chunk])
    seconds = time.perf_counter() - started
    rows = [
        {
            "object_id": object_id,
            "model": model.name,
            "dimensions": model.dimensions,
            "text_hash": digest,
            "embedding": vector,
        }
        for (object_id, _, digest), vector in zip(chunk, vectors, strict=True)
    ]
    statement = insert(ObjectEmbedding).values(rows)
    with engine.begin() as connection:
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["object_id", "model"],
                set_={c: statement.excluded[c] for c in ("dimensions", "text_hash", "embedding")},
            )
        )
    return seconds


def sync_embeddings(engine: Engine, model: Embedder) -> SyncReport:
    """Bring the model's embeddings in line with the dictionary, then make sure its index
    exists (built after the bulk insert, which is faster than growing it row by row). An
    entry that is deleted takes its embeddings with it (a cascade)."""
    with _sync_lock(engine, model.name):
        with engine.begin() as connection:
            total, stale = _stale(connection, model)
        seconds = sum(
            _upsert(engine, model, stale[i : i + UPSERT_ROWS])
            for i in range(0, len(stale), UPSERT_ROWS)
        )
        space = VectorSpace(model.name, model.dimensions)
        if space.index_type is not None:
            with engine.begin() as connection:
                connection.execute(statements(space)["index"])
    log.info(
        "embeddings synced",
        extra={"model": model.name, "entries": total, "embedded": len(stale)},
    )
    return SyncReport(total, len(stale), seconds)
