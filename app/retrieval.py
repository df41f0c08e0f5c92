"""The retrieval engine: the dictionary searched among the objects a theorem may use.

Every entry is embedded (`app.vectors`: sentence-transformers vectors in pgvector, synced by a
hash of each entry's text) and indexed by its words. The pipeline's searches (steps 7 and 8),
`rocqcot search` and the benchmarks go through `Retriever.lookup`: an exact, deterministic
hybrid ranking of every available entry (`app.search_index`), so a killed and restarted
`rocqcot run` writes the same dataset. pgvector's HNSW index stays for ad hoc dense searches
(`Retriever.search_vector`): its iterative scan keeps walking the graph until k available
objects are found, and when even that comes back short (a theorem early in the library sees
few objects) the search is redone exactly, so a strict filter never shrinks the results.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.availability import Availability
from app.embedding import Embedder, EmbeddingSettings, RetrievalError, embedder
from app.search_index import MODES, Entry, Hit, search_index
from app.vectors import SyncReport, VectorSpace, statements, sync_embeddings

EF_SEARCH = 100
"""HNSW's candidate list (pgvector's default is 40): recall at 10 of 0.93 on MathComp at 40."""


@dataclass(frozen=True)
class Lookup:
    """A query's results and where its target ranks among everything available."""

    hits: tuple[Hit, ...]
    rank: int | None
    """1-based, counted exactly among every available entry; None when the target is not
    available."""
    target_score: float | None = None
    """The target's score for the query, when it has a rank."""


class Retriever:
    """Searches the dictionary with one model, among what a theorem may use."""

    def __init__(self, model: Embedder, engine: Engine, mode: str = "hybrid") -> None:
        if mode not in MODES:
            raise RetrievalError(f"unknown ranking {mode!r}: one of {', '.join(MODES)}")
        self.model = model
        self.engine = engine
        self.space = VectorSpace(model.name, model.dimensions)
        self.mode = mode
        """`hybrid` (dense and lexical rankings fused), `dense` or `lexical`."""

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

    def search(self, query: str, top_k: int, theorem: Availability | None) -> list[Hit]:
        """The `top_k` best available entries for the query, best first."""
        return list(self.lookup([query], top_k, theorem, None)[0].hits)

    def lookup(
        self,
        queries: Sequence[str],
        top_k: int,
        theorem: Availability | None,
        target: str | None,
    ) -> list[Lookup]:
        """Each query's results and the rank of `target` (an fqn) among what is available
        (everything, for no theorem)."""
        if top_k < 1:
            raise RetrievalError(f"top k must be at least 1, not {top_k}")
        vectors = self.model.queries(queries) if queries else []
        index = search_index(self.engine, self.space)
        ranked = [
            index.rank(vector, query, top_k, theorem, target, self.mode)
            for vector, query in zip(vectors, queries, strict=True)
        ]
        return [Lookup(r.hits, r.rank, r.target_score) for r in ranked]

    def search_vector(
        self, connection: Connection, vector: np.ndarray, top_k: int, theorem: Availability
    ) -> list[Hit]:
        """The nearest available entries to an embedded query by the HNSW index (dense, ad
        hoc: approximate), else (fewer than k found) by an exact scan."""
        params = {"query": vector, "k": top_k, **theorem.params()}
        named = statements(self.space)
        _configure(connection, top_k)
        rows = connection.execute(named["search"], params).all()
        if len(rows) < top_k:
            connection.execute(sa.text("SELECT set_config('enable_indexscan', 'off', true)"))
            rows = connection.execute(named["exact"], params).all()
        connection.rollback()  # ends the settings with the transaction
        return [Hit(float(score), Entry(*entry)) for *entry, score in rows]

    def explain(self, vector: np.ndarray, top_k: int, theorem: Availability) -> str:
        """The plan PostgreSQL runs for an HNSW search, with timings (is the index used?)."""
        params = {"query": vector, "k": top_k, **theorem.params()}
        with self.engine.connect() as connection:
            _configure(connection, top_k)
            plan = connection.execute(statements(self.space)["explain"], params).scalars()
            return "\n".join(plan)


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


def retriever(settings: EmbeddingSettings, mode: str = "hybrid") -> Retriever:
    """A retriever with the process's instance of the model, on the process's database."""
    from app.db.engine import engine

    return Retriever(embedder(settings), engine(), mode)


def answers(
    queries: Sequence[str], top_k: int, settings: EmbeddingSettings, mode: str = "hybrid"
) -> list[dict[str, Any]]:
    """`rocqcot search`: each query's first k entries of the whole dictionary (the engine the
    dataset's results come from), as JSON: the query, then rank, fqn, kind, statement,
    docstring and score of each hit."""
    found = retriever(settings, mode)
    if found.sync().entries == 0:
        raise RetrievalError("the dictionary is empty: run steps 0 and 4 first")
    lookups = found.lookup(queries, top_k, None, None)
    return [
        {
            "query": query,
            "hits": [
                {
                    "rank": rank,
                    "fqn": hit.entry.fqn,
                    "kind": hit.entry.kind,
                    "statement": hit.entry.fullname,
                    "docstring": hit.entry.docstring,
                    "score": round(hit.score, 6),
                }
                for rank, hit in enumerate(lookup.hits, 1)
            ],
        }
        for query, lookup in zip(queries, lookups, strict=True)
    ]


@dataclass(frozen=True)
class Retrievers:
    """A stage's per-worker resource: retrievers by model name with this process's device and
    batch size, their embeddings synced before the first search."""

    device: str | None = None
    batch_size: int = 64

    def __call__(self, model_name: str) -> Retriever:
        found = retriever(EmbeddingSettings(model_name, self.device, self.batch_size))
        found.ensure_synced()
        return found

    def sync(self, model_name: str) -> SyncReport:
        """Sync a model's embeddings now (a step does before its workers start)."""
        return retriever(EmbeddingSettings(model_name, self.device, self.batch_size)).sync()
