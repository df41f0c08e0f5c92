"""Step 3's selection on the full MathComp: time, peak memory and diversity, in one run.

    python -m bench.select [--database-url URL] [--k-have 500] [--k-wo-have 500] [--seed S]

The timed part is exactly step 3's `run` (pools, tokenizing, BM25 indexes, greedy max-min for
both pools) on plain data; the database's load and store are not timed. Its data:

- with `--database-url`, a database where steps 0-2 ran: the candidates step 3 would load,
  with their real tactic counts and haves (and the step's default tactic bounds);
- otherwise every theorem of the installed MathComp, from its sources and `.glob` files
  (building it through steps 0 and 1 takes 10-20 minutes): each `prf` definition of a glob
  file, its statement taken as the text from the start of the definition's sentence to the
  first `.` followed by whitespace, comments removed with the lexer. This approximates step
  1's sentences, which is enough for timing and diversity, since statements only feed BM25.
  With no haves tagged yet, the pools come from a proxy: `with_have` holds the theorems whose
  proof has a `have ... :` sentence (an intermediate goal; `have ... :=` does not count).
  Every theorem is a candidate (tactic bounds 0 to 1,000,000), so all extracted theorems are.

Peak memory is the process's `ru_maxrss` after the selection (the corpus is in it too, so it
bounds the selection's own); `tracemalloc`'s peak during a second, untimed run of the
selection alone is printed too. Diversity: the mean and maximum, over the selected theorems,
of the similarity to their nearest selected neighbour in the same pool, against a random
selection of the same size from the same pools. Target: <= 30 s and <= 2 GB.
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import re
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from app.db.engine import session_factory
from app.rocq.glob import read_glob
from app.rocq.lexer import comments, strip_comments
from app.rocq.positions import SourceText
from app.selection import Similarity, bm25, tokenize
from app.steps import step_3
from bench.rocq import add_rocq_bin, chosen

_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_PROOF_END = re.compile(r"\b(?:Qed|Defined|Admitted|Abort)\s*\.")
_HAVE_GOAL = re.compile(r"\bhave\b[^.]*?:(?!=)")


def blank_comments(text: str) -> str:
    """The text with each comment replaced by spaces: offsets stay those of the glob."""
    pieces, last = [], 0
    for comment in comments(text):
        pieces += [text[last : comment.start], " " * (comment.end - comment.start)]
        last = comment.end
    return "".join([*pieces, text[last:]])


def file_theorems(source: Path, glob: Path) -> list[tuple[str, str]]:
    """(statement, proof) of each `prf` definition of one file."""
    text = source.read_text(encoding="utf-8")
    positions, blanked = SourceText(text), blank_comments(text)
    ends = [m.start() for m in _SENTENCE_END.finditer(blanked)]
    theorems = []
    for definition in read_glob(glob).definitions:
        if definition.kind != "prf":
            continue
        name = positions.byte_to_char(definition.byte_start)
        before = bisect.bisect_left(ends, name)
        start = ends[before - 1] + 1 if before else 0
        end = ends[before] + 1 if before < len(ends) else len(text)
        closing = _PROOF_END.search(blanked, end)
        proof = blanked[end : closing.end() if closing else end]
        theorems.append((strip_comments(text[start:end]).strip(), proof))
    return theorems


def source_corpus(root: Path) -> tuple[step_3.Candidate, ...]:
    """Every MathComp theorem as a candidate; the have proxy decides its pool."""
    candidates = []
    for glob in sorted(root.rglob("*.glob")):
        source = glob.with_suffix(".v")
        if not source.exists():
            continue
        for statement, proof in file_theorems(source, glob):
            tactics = len(_SENTENCE_END.findall(proof))
            has_have = bool(_HAVE_GOAL.search(proof))
            candidates.append(step_3.Candidate(len(candidates), statement, tactics, has_have))
    return tuple(candidates)


def database_corpus(url: str) -> tuple[step_3.Candidate, ...]:
    """The candidates step 3 loads from a database where steps 0-2 ran."""
    os.environ["DATABASE_URL"] = url
    with session_factory()() as session:
        return step_3.load_candidates(session)


def nearest_similarities(statements: list[str], chosen: list[int]) -> list[float]:
    """Each chosen statement's highest similarity to another chosen one (same BM25 corpus)."""
    similarity = Similarity(bm25([tokenize(s) for s in statements]))
    block = np.array([similarity.column(j)[chosen] for j in chosen])
    np.fill_diagonal(block, -np.inf)
    return block.max(axis=1).tolist()


def figures(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f}/{max(values):.4f}"


def diversity(item: step_3.SelectInput, result: step_3.SelectResult, seed: int) -> list[float]:
    """Print the nearest-neighbour similarity (mean/max) of our selection and of a random
    one of the same size, per pool; returns the random one's values for both pools."""
    by_id = {c.id: c.statement for c in item.candidates}
    drawn: list[float] = []
    for pool in result.pools:
        statements = [by_id[i] for i in pool.members]
        position = {theorem: index for index, theorem in enumerate(pool.members)}
        ours = nearest_similarities(statements, [position[i] for i in pool.chosen])
        assert np.allclose(ours, pool.nearest), "the selection's own figures are off"
        picked = random.Random(seed).sample(range(len(statements)), len(pool.chosen))
        drawn_here = nearest_similarities(statements, picked)
        drawn += drawn_here
        print(
            f"{pool.name}: {len(pool.chosen)} of {len(pool.members)}; nearest-neighbour "
            f"similarity mean/max ours {figures(ours)}, random {figures(drawn_here)}"
        )
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a database where steps 0-2 ran")
    add_rocq_bin(parser)
    parser.add_argument("--mathcomp", type=Path, help="[the toolchain's MathComp]")
    parser.add_argument("--k-have", type=int, default=500)
    parser.add_argument("--k-wo-have", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.database_url:
        candidates, bounds = database_corpus(args.database_url), (2, 14)
    else:
        mathcomp = args.mathcomp or chosen(args.rocq_bin).default_library()
        candidates, bounds = source_corpus(mathcomp), (0, 1_000_000)
    params = step_3.SelectParams(args.k_have, args.k_wo_have, *bounds, args.seed)
    item = step_3.SelectInput(params, candidates, waiting=0)
    print(f"{len(candidates)} theorems, {sum(c.has_have for c in candidates)} with a have")

    started = time.perf_counter()
    result = step_3.run(item)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    step_3.run(item)
    traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"selection: {seconds:.2f} s; process peak {peak_mb:.0f} MB; traced {traced_mb:.0f} MB")

    drawn = diversity(item, result, args.seed)
    ours = [value for pool in result.pools for value in pool.nearest]
    print(f"both pools: mean/max ours {figures(ours)}, random {figures(drawn)}")
    print(
        f"RESULT seconds={seconds:.2f} peak_mb={peak_mb:.0f} "
        f"nn_sim_ours={statistics.fmean(ours):.4f} nn_sim_random={statistics.fmean(drawn):.4f}"
    )


if __name__ == "__main__":
    main()
