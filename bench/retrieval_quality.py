"""How well the search engine finds MathComp facts asked for in plain words.

    python -m bench.retrieval_quality [--database-url URL] [--questions FILE] [--part P]
                                      [--model-name M] [--shown N]

`bench/data/retrieval_questions.tsv` holds questions about MathComp's ssreflect facts, written
as a person would ask them (never copied from a docstring, a header doc or a statement), each
with the lemma that answers it (`div.modnDm`: matched as the end of a fully qualified name).
Each question is searched in the whole dictionary three ways, dense only (the model's cosine),
lexical only (BM25) and fused (the pipeline's hybrid ranking), and the gold lemma's rank gives
hit@1, hit@10 and the mean reciprocal rank. A gold name the dictionary does not have (MathComp
1.15 and 2.x name a few facts apart; Rocq's `ssrbool` has no glob in Debian's package) is
reported and left out, not counted as a miss. Targets with the default model: hit@10 >= 0.6,
MRR >= 0.4.

Its dictionary: with `--database-url`, the one a run built (e.g. the default `rocqcot run`:
header docs, offline docstrings); otherwise the one `bench.search` builds from the installed
MathComp's globs (`--part ssreflect` by default). The last line is the fused ranking's figures:
`RESULT hit1=... hit10=... mrr=... queries=...`.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from app.db import engine as db
from app.describe import jaccard
from app.embedding import DEFAULT_MODEL, EmbeddingSettings, embedder
from app.retrieval import Retriever
from app.search_index import MODES, SearchIndex, search_index
from bench.rocq import add_rocq_bin
from bench.search import dictionary_database

QUESTIONS = Path(__file__).parent / "data" / "retrieval_questions.tsv"
TOP_K = 10


@dataclass(frozen=True)
class Question:
    text: str
    gold: str
    """The gold lemma's fully qualified name in this dictionary."""


def read_questions(path: Path, index: SearchIndex) -> tuple[list[Question], list[str]]:
    """The questions whose gold lemma the dictionary has, and the gold names it lacks."""
    by_suffix: dict[str, str] = {}
    for fqn in index.rows_of:
        parts = fqn.split(".")
        by_suffix.setdefault(".".join(parts[-2:]), fqn)
    found, missing = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        gold, text = line.split("\t", 1)
        if gold in by_suffix:
            found.append(Question(text.strip(), by_suffix[gold]))
        else:
            missing.append(gold)
    return found, missing


def figures(ranks: list[int | None]) -> dict[str, float]:
    """hit@1, hit@10 and MRR of the gold ranks."""
    return {
        "hit1": statistics.fmean(rank == 1 for rank in ranks),
        "hit10": statistics.fmean(rank is not None and rank <= TOP_K for rank in ranks),
        "mrr": statistics.fmean(1 / rank if rank else 0.0 for rank in ranks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a database where a run built the dictionary")
    add_rocq_bin(parser)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--part", default="ssreflect", help="MathComp part (no --database-url)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL)
    parser.add_argument("--shown", type=int, default=15, help="fused misses to print")
    args = parser.parse_args()
    with dictionary_database(args.database_url, args.part, args.rocq_bin):
        retriever = Retriever(embedder(EmbeddingSettings(args.model_name)), db.engine())
        report = retriever.sync()
        index = search_index(retriever.engine, retriever.space)
        questions, missing = read_questions(args.questions, index)
        print(f"{report.entries} entries ({report.embedded} embedded now); "
              f"{len(questions)} questions, {len(missing)} gold names not in the dictionary: "
              f"{', '.join(missing) or 'none'}")  # fmt: skip
        texts = [q.text for q in questions]
        vectors = retriever.model.queries(texts)
        results: dict[str, dict[str, float]] = {}
        for mode in MODES[::-1]:
            ranked = [
                index.rank(vector, q.text, TOP_K, None, q.gold, mode)
                for vector, q in zip(vectors, questions, strict=True)
            ]
            results[mode] = figures([r.rank for r in ranked])
            print(f"{mode:>8}: " + " ".join(f"{k}={v:.3f}" for k, v in results[mode].items()))
        _show_misses(questions, ranked, index, args.shown)
    fused = results["hybrid"]
    print(
        f"RESULT hit1={fused['hit1']:.3f} hit10={fused['hit10']:.3f} mrr={fused['mrr']:.3f} "
        f"queries={len(questions)}"
    )


def _show_misses(questions: list[Question], ranked: list, index: SearchIndex, shown: int) -> None:
    """The fused ranking's misses, with what came first; and how close the questions are to
    their gold entry's own words (a question is not a copy)."""
    copies = 0
    for question in questions:
        entry = index.entries[index.rows_of[question.gold][0]]
        copies += jaccard(question.text, entry.docstring) > 0.8
    print(f"questions nearly their gold entry's text (token Jaccard > 0.8): {copies}")
    misses = [(q, r) for q, r in zip(questions, ranked, strict=True) if not r.rank or r.rank > 10]
    for question, result in misses[:shown]:
        first = result.hits[0].entry.fqn.rsplit(".", 2)[-2:] if result.hits else ["-"]
        print(f"  miss (rank {result.rank}): {question.text!r} -> {question.gold} "
              f"(first: {'.'.join(first)})")  # fmt: skip


if __name__ == "__main__":
    main()
