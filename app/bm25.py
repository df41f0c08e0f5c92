"""BM25 over sparse matrices, with rank_bm25's `BM25Okapi` semantics.

k1 = 1.5, b = 0.75, idf floored at epsilon = 0.25 times the mean idf for a term in more than
half the documents; a query term counts once per occurrence. rank_bm25 scores one query by
walking every document in Python; here the documents' weights are one sparse matrix, so a
query is one sparse product (step 3 compares every statement with every other, retrieval
scores every dictionary entry per search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

K1, B, EPSILON = 1.5, 0.75, 0.25


@dataclass(frozen=True)
class Bm25:
    """A BM25Okapi index of N documents over a vocabulary of V terms, as sparse rows."""

    term_counts: sp.csr_matrix
    """N x V: how often each term occurs in each document (a query's weights)."""
    weights: sp.csr_matrix
    """N x V: idf times the saturated, length-normalised term frequency (a document's)."""
    self_scores: np.ndarray
    """s(a, a) for each document."""
    vocabulary: dict[str, int]
    """Term → column."""

    def scores(self) -> np.ndarray:
        """The dense N x N matrix of s(q, d): for tests and small corpora only."""
        return (self.term_counts @ self.weights.T).toarray()

    def query(self, tokens: Sequence[str]) -> np.ndarray:
        """Every document's score for a query (unknown terms weigh nothing)."""
        columns = [self.vocabulary[t] for t in tokens if t in self.vocabulary]
        counts = np.bincount(columns, minlength=self.weights.shape[1]).astype(float)
        return self.weights @ counts


def bm25(documents: Sequence[Sequence[str]]) -> Bm25:
    """Index tokenized documents with rank_bm25's BM25Okapi formula."""
    counts, vocabulary = _term_counts(documents)
    n = counts.shape[0]
    rows = np.repeat(np.arange(n), np.diff(counts.indptr))
    lengths = np.asarray(counts.sum(axis=1)).ravel()
    average_length = lengths.mean() if n else 0.0
    frequency = counts.data
    norm = K1 * (1 - B + B * lengths[rows] / average_length)
    saturated = frequency * (K1 + 1) / (frequency + norm)
    # The weights share the counts' sparsity structure: row j's terms are at the same places.
    weights = sp.csr_matrix(
        (_idf(counts)[counts.indices] * saturated, counts.indices, counts.indptr),
        shape=counts.shape,
    )
    self_scores = np.bincount(rows, weights=frequency * weights.data, minlength=n).astype(float)
    return Bm25(counts, weights, self_scores, vocabulary)


def _term_counts(documents: Sequence[Sequence[str]]) -> tuple[sp.csr_matrix, dict[str, int]]:
    vocabulary: dict[str, int] = {}
    ids = [vocabulary.setdefault(token, len(vocabulary)) for doc in documents for token in doc]
    rows = np.repeat(np.arange(len(documents)), [len(doc) for doc in documents])
    counts = sp.csr_matrix(
        (np.ones(len(ids)), (rows, np.array(ids, dtype=np.int64))),
        shape=(len(documents), len(vocabulary)),
    )
    counts.sum_duplicates()
    return counts, vocabulary


def _idf(counts: sp.csr_matrix) -> np.ndarray:
    """Okapi idf; a term in more than half the documents gets epsilon times the mean idf."""
    n = counts.shape[0]
    frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log(n - frequency + 0.5) - np.log(frequency + 0.5)
    if idf.size:
        idf[idf < 0] = EPSILON * idf.mean()
    return idf
