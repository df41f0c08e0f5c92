"""The pipeline's search: every available entry ranked by meaning and by words, then fused.

One model's embedded entries are loaded into memory once per process (again when the stored
embeddings change), with their place in the library and a BM25 index of their lexical texts
(`app.entries`). A search scores every entry both ways, keeps the available ones and ranks:

- dense: cosine similarity of the query's and the entry's unit vectors;
- lexical: BM25 (rank_bm25's Okapi formula) of the query's terms in the entry's text;
- hybrid (the default): reciprocal rank fusion, `1 / (60 + rank)` summed over both rankings,
  an entry counting in the lexical one only when it shares a term with the query.

Scores are rounded before ranking and ties broken by entry id, so a search is exact and
deterministic: the dataset does not depend on which run built an index (pgvector's HNSW
index, `app.retrieval`, serves ad hoc searches). A scan of all of MathComp (26,593 entries
of 384 dimensions) is one matrix-vector product and one sparse one: milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.engine import Connection, Engine

from app.availability import Availability
from app.bm25 import Bm25, bm25
from app.describe import description
from app.entries import EntryFacts, header_docs, lexical_text, lexical_tokens
from app.vectors import ENTRY_COLUMNS, VectorSpace

MODES = ("hybrid", "dense", "lexical")
RRF_K = 60
DECIMALS = 6
RECHECK_SECONDS = 2.0
"""How long a loaded index is trusted before the stored embeddings are looked at again."""


@dataclass(frozen=True)
class Entry:
    """A dictionary entry as a search returns it."""

    id: int
    fqn: str
    kind: str
    name: str
    fullname: str | None
    docstring: str
    """Its docstring, else what the offline describer says of it."""


@dataclass(frozen=True)
class Hit:
    """One search result: its score (the ranking's: cosine, BM25 or fused) and the entry."""

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
            "score": round(self.score, DECIMALS),
        }
        return data | ({"forced": True} if forced else {})


@dataclass(frozen=True)
class Ranked:
    """One query's ranking of the available entries."""

    hits: tuple[Hit, ...]
    """The first k."""
    rank: int | None
    """The target's 1-based place among every available entry (None: not available)."""
    target_score: float | None


class SearchIndex:
    """A model's embedded entries in memory: vectors, places, BM25 terms."""

    def __init__(self, facts: list[EntryFacts], places: np.ndarray, vectors: np.ndarray) -> None:
        headers = header_docs(facts)
        self.entries = [
            Entry(f.id, f.fqn, f.kind, f.name, f.fullname, _said(f)) for f in facts
        ]  # fmt: skip
        self.ids = np.array([f.id for f in facts], dtype=np.int64)
        self.file_ids, self.orders = places[:, 0], places[:, 1]
        self.vectors = vectors
        self.lexical: Bm25 = bm25([lexical_tokens(lexical_text(f, headers)) for f in facts])
        self.rows_of: dict[str, list[int]] = defaultdict(list)
        for row, fact in enumerate(facts):
            self.rows_of[fact.fqn].append(row)

    def available(self, theorem: Availability | None) -> np.ndarray:
        """Which rows a theorem may use (all of them for no theorem)."""
        if theorem is None:
            return np.ones(len(self.ids), dtype=bool)
        required = np.isin(self.file_ids, np.asarray(theorem.required_files, dtype=np.int64))
        own = (self.file_ids == theorem.file_id) & (self.orders < theorem.before)
        return required | own

    def rank(
        self,
        vector: np.ndarray,
        text: str,
        top_k: int,
        theorem: Availability | None,
        target: str | None = None,
        mode: str = "hybrid",
    ) -> Ranked:
        """The first k available entries for a query, and where the target ranks."""
        rows = np.flatnonzero(self.available(theorem))
        ids = self.ids[rows]
        if mode == "dense":
            scores = np.round(self.vectors @ vector, DECIMALS)[rows]
        elif mode == "lexical":
            scores = np.round(self.lexical.query(lexical_tokens(text)), DECIMALS)[rows]
        else:
            scores = self._fused(rows, ids, vector, text)
        order = np.lexsort((ids, -scores))
        hits = tuple(Hit(float(scores[i]), self.entries[rows[i]]) for i in order[:top_k].tolist())
        if target is None:
            return Ranked(hits, None, None)
        place = np.full(len(self.ids), -1)
        place[rows[order]] = np.arange(len(order))
        found = [(place[r], r) for r in self.rows_of.get(target, ()) if place[r] >= 0]
        if not found:
            return Ranked(hits, None, None)
        best, row = min(found)
        return Ranked(hits, int(best) + 1, float(scores[np.searchsorted(rows, row)]))

    def _fused(self, rows: np.ndarray, ids: np.ndarray, vector: np.ndarray, text: str):
        """Reciprocal rank fusion of the dense ranking and the lexical one (entries with a
        positive BM25 score only)."""
        dense = np.round(self.vectors @ vector, DECIMALS)[rows]
        lexical = np.round(self.lexical.query(lexical_tokens(text)), DECIMALS)[rows]
        fused = np.zeros(len(rows))
        weights = 1.0 / (RRF_K + np.arange(1, len(rows) + 1))
        fused[np.lexsort((ids, -dense))] += weights
        matched = int(np.count_nonzero(lexical > 0))
        fused[np.lexsort((ids, -lexical))[:matched]] += weights[:matched]
        return np.round(fused, 12)


def _said(fact: EntryFacts) -> str:
    return fact.docstring or description(fact.kind, fact.name, fact.fullname or "")


# --- Loading, once per process and model --------------------------------------------------------


def _load(connection: Connection, space: VectorSpace) -> SearchIndex:
    rows = connection.execute(
        sa.text(
            f"SELECT {ENTRY_COLUMNS}, o.file_id, o.library_order, e.embedding "
            "FROM object_embeddings e JOIN library_objects o ON o.id = e.object_id "
            f"WHERE {space.where()} ORDER BY o.id"
        ).columns(embedding=Vector())
    ).all()
    facts = [EntryFacts(*row[:7]) for row in rows]
    places = np.array([row[7:9] for row in rows], dtype=np.int64).reshape(-1, 2)
    vectors = np.array([row[9] for row in rows], dtype=np.float32).reshape(-1, space.dimensions)
    return SearchIndex(facts, places, vectors)


def _fingerprint(connection: Connection, space: VectorSpace) -> tuple[int, int]:
    """Changes when an embedding or an entry's place changes."""
    return tuple(
        connection.execute(
            sa.text(
                "SELECT count(*), coalesce(sum(hashtext(e.text_hash || ':' || o.file_id || ':' "
                "|| o.library_order)::bigint), 0) FROM object_embeddings e "
                f"JOIN library_objects o ON o.id = e.object_id WHERE {space.where()}"
            )
        ).one()
    )


@dataclass
class _Cached:
    index: SearchIndex
    fingerprint: tuple[int, int]
    checked: float


_CACHE: dict[tuple[str, VectorSpace], _Cached] = {}
_CACHE_LOCK = threading.Lock()


def search_index(engine: Engine, space: VectorSpace) -> SearchIndex:
    """The process's index of a model's entries, reloaded when the stored ones changed."""
    key = (engine.url.render_as_string(), space)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        now = time.monotonic()
        if cached is not None and now - cached.checked < RECHECK_SECONDS:
            return cached.index
        with engine.connect() as connection:
            fingerprint = _fingerprint(connection, space)
            if cached is None or cached.fingerprint != fingerprint:
                cached = _Cached(_load(connection, space), fingerprint, now)
                _CACHE[key] = cached
        cached.checked = now
        return cached.index
