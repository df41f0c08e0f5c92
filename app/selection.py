"""Diverse selection under BM25: the pure algorithm behind step 3.

Statements are tokenized for Rocq (`tokenize`) and indexed as one BM25 corpus per pool, with
rank_bm25's `BM25Okapi` semantics (`app.bm25`). `s(q, d)` is the BM25 score of statement
`q` as a query against statement `d` as a document.

BM25 is neither symmetric nor bounded (long statements score high), so the similarity of two
statements is the mean of the two scores, each normalised by its document's self-score:

    sim(a, b) = (s(a, b) / s(b, b) + s(b, a) / s(a, a)) / 2

which is symmetric and 1 for a statement with itself. (It may exceed 1: a query counts each
occurrence of a term, so a statement that repeats another's terms outscores it on its own
terms; the greedy rule needs an order, not a bound.) A statement whose self-score is not
positive (no tokens, or only tokens too common to weigh) contributes 0 to the ratios it
normalises. Similarities are rounded to 12 decimals, so that values equal in exact arithmetic
but summed in another order (a statement and a permutation of it) tie, and break by index.

Greedy max-min diversity: start from a seeded random statement (`first_pick`), then
repeatedly add the statement whose highest similarity to the statements already chosen is
lowest; ties go to the lowest index. (Taking the lowest *minimum* similarity instead
degenerates: anything unlike one chosen statement qualifies.) The N x N score matrix is never
built: each chosen statement costs one sparse matrix-vector product over the term matrices,
O(nnz), which updates a running vector of every statement's highest similarity to the
selection, so k picks cost O(k nnz).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from app.bm25 import Bm25, bm25

DECIMALS = 12

# `Lemma name`, after attributes: the name would dominate the statement's few tokens.
_HEADER = re.compile(
    r"^\s*(?:#\[[^\]]*\]\s*|(?:Local|Global|Polymorphic|Program)\s+)*[A-Z][A-Za-z]*\s+[^\s:({\[]+"
)
_TOKEN = re.compile(
    r"(?P<ident>[^\W\d][\w']*(?:\.[^\W\d][\w']*)*)"  # identifiers, qualified ones too
    r"|(?P<number>\d+)"
    r"|(?P<keyed>\\[^\W\d_]+|%:?~?[^\W\d_]\w*)"  # \sum, \in; scopes %N and %:R as one token
    r"|(?P<bracket>[\[\]{}])"  # `[seq`, `{in`: the bracket and the word apart
    r"|(?P<symbol>[^\w\s()\[\]{},;]+)"  # notation symbols: <=, %|, *:, .+, ->, ...
)


def tokenize(statement: str) -> list[str]:
    """The BM25 terms of a statement: identifiers split on `_` and `.`, numbers, brackets,
    backslash notations (`\\sum`), scope keys (`%N`, `%:R`) and runs of notation symbols
    (`<=`, `%|`, `*:`); the `Lemma name` header, parentheses, commas and the final period are
    dropped."""
    body = _HEADER.sub("", statement, count=1).rstrip()
    body = body.removesuffix(".")
    tokens: list[str] = []
    for match in _TOKEN.finditer(body):
        if match.lastgroup == "ident":
            tokens.extend(part for part in re.split(r"[_.]", match.group()) if part)
        else:
            tokens.append(match.group())
    return tokens


class Similarity:
    """Columns of the symmetrised, normalised similarity, one sparse product each.

    With T the term counts, W the weights and D = diag(1 / s(a, a)), column j is
    (T W_j / s(j, j) + D W T_j) / 2 = [T | D W] [W_j / s(j, j) ; T_j] / 2.
    """

    def __init__(self, index: Bm25) -> None:
        scores = index.self_scores
        self._inverse = np.divide(1.0, scores, out=np.zeros_like(scores), where=scores > 0)
        self._counts, self._weights = index.term_counts, index.weights
        normalised = sp.diags(self._inverse) @ index.weights
        self._stacked = sp.hstack([index.term_counts, normalised], format="csr")
        self.size = index.term_counts.shape[0]

    def column(self, j: int) -> np.ndarray:
        """sim(i, j) for every statement i."""
        vocabulary = self._counts.shape[1]
        query = np.zeros(2 * vocabulary)
        start, end = self._weights.indptr[j], self._weights.indptr[j + 1]
        terms = self._weights.indices[start:end]
        query[terms] = self._weights.data[start:end] * self._inverse[j]
        query[vocabulary + terms] = self._counts.data[start:end]
        return np.round(0.5 * (self._stacked @ query), DECIMALS)


@dataclass(frozen=True)
class Selection:
    """The statements chosen from one pool, in the order they were chosen."""

    order: tuple[int, ...]
    """Indices into the pool's statements."""
    nearest: tuple[float, ...]
    """For each chosen statement, its highest similarity to another chosen one (-inf alone)."""


def first_pick(seed: int, pool: str, size: int) -> int:
    """The seeded random statement the selection of a pool starts from."""
    return random.Random(f"{seed}:{pool}").randrange(size)


def select_diverse(similarity: Similarity, k: int, first: int) -> Selection:
    """Greedy max-min: add the statement least similar to its most similar chosen one."""
    highest = np.full(similarity.size, -np.inf)
    order: list[int] = []
    nearest = np.full(k, -np.inf)
    chosen = first
    for rank in range(k):
        column = similarity.column(chosen)
        to_earlier = column[order]
        if order:
            nearest[rank] = to_earlier.max()
            np.maximum(nearest[:rank], to_earlier, out=nearest[:rank])
        order.append(chosen)
        np.maximum(highest, column, out=highest)
        highest[chosen] = np.inf
        chosen = int(np.argmin(highest))
    return Selection(tuple(order), tuple(nearest.tolist()))


def diverse_selection(statements: Sequence[str], k: int, seed: int, pool: str) -> Selection:
    """The k most mutually different statements of a pool (k at most its size)."""
    if k == 0:
        return Selection((), ())
    similarity = Similarity(bm25([tokenize(statement) for statement in statements]))
    return select_diverse(similarity, k, first_pick(seed, pool, len(statements)))
