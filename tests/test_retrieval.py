"""The retrieval engine on a small library in the real PostgreSQL with pgvector, embedded with
the bundled all-MiniLM-L6-v2 (loaded once per test run)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.orm import Session

from app.availability import availability
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Library, LibraryObject, ObjectEmbedding, SourceFile, Theorem
from app.dictionary import library_order
from app.embedding import Embedder, EmbeddingSettings, FreeCores, embedder
from app.entries import EntryFacts, dense_text, lexical_text, lexical_tokens
from app.retrieval import Retriever
from app.vectors import VectorSpace

# (file, byte offset, short name, docstring); file `b` holds the theorem at byte 5000.
OBJECTS = [
    ("a", 100, "addnC", "Addition of natural numbers is commutative."),
    ("a", 200, "addnA", "Addition of natural numbers is associative."),
    ("a", 300, "muln0", "Multiplying a natural number by zero gives zero."),
    ("a", 400, "leq_trans", "The order on natural numbers is transitive."),
    ("a", 500, "subnn", "A natural number minus itself is zero."),
    ("a", 600, "ltnS", "m is less than n plus one if and only if m is at most n."),
    ("a", 700, "odd_double", "The double of a natural number is never odd."),
    ("a", 800, "size_cat", "The size of the concatenation of two sequences is the sum of sizes."),
    ("a", 900, "rev_rev", "Reversing a sequence twice gives the sequence back."),
    ("a", 1000, "mem_cat", "An element is in a concatenation iff it is in one of the two parts."),
    ("a", 1100, "nth_default", "Reading a sequence past its end gives the default value."),
    ("a", 1200, "no_doc", None),
    ("b", 100, "dvdn_add", "If d divides m and n then d divides their sum m + n."),
    ("b", 300, "dvdn_mull", "If d divides n then d divides any multiple of n."),
    ("b", 1000, "modn_small", "A natural number smaller than d is its own remainder modulo d."),
    ("b", 5006, "dvdn_trans", "Divisibility of natural numbers is transitive."),
    ("b", 6000, "gcdnC", "The greatest common divisor of two numbers is commutative."),
    ("b", 7000, "coprime_sym", "Being coprime is a symmetric relation on natural numbers."),
    ("c", 100, "prime_gt1", "A prime number is greater than one."),
    ("c", 200, "even_prime", "Two is the only even prime number."),
    ("c", 300, "pdiv_dvd", "The smallest prime divisor of a number divides it."),
]
FILES = {"a": (0, []), "b": (1, ["lib.a"]), "c": (2, ["lib.a"])}
"""File → (dependency order, transitive requirements): `c` is not required by `b`."""
THEOREM = "lib.b.dvdn_trans"
THEOREM_BYTE = 5000
AVAILABLE = {"addnC", "addnA", "muln0", "leq_trans", "subnn", "ltnS", "odd_double"}
AVAILABLE |= {"size_cat", "rev_rev", "mem_cat", "nth_default", "dvdn_add", "dvdn_mull"}
AVAILABLE |= {"modn_small", "no_doc"}
"""What a proof of the theorem may use (every entry is embedded, `no_doc` too)."""


@dataclass(frozen=True)
class SmallLibrary:
    files: dict[str, int]
    """File name → id."""
    theorem_id: int


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The default model, loaded once for the whole test run."""
    return embedder(EmbeddingSettings())


def add_object(
    session: Session, file_id: int, order: int, byte: int, name: str, doc: str | None,
    kind: str = "thm",
) -> LibraryObject:  # fmt: skip
    """A dictionary entry of file `file_id` (dependency order `order`) at byte `byte`."""
    logical = session.get(SourceFile, file_id).logical_path
    row = LibraryObject(
        file_id=file_id,
        fqn=f"{logical}.{name}",
        kind=kind,
        name=name,
        fullname=f"Lemma {name} : statement of {name}.",
        library_order=library_order(order, byte),
        docstring=doc,
        docstring_source="header" if doc else None,
        stage=Stage.evaluate,
        status=Status.done,
    )
    session.add(row)
    session.flush()
    return row


def add_library(session: Session, name: str) -> Library:
    """A built library named `name`, of prefix `lib` (as every test library here)."""
    library = Library(
        name=name, input_path=f"/in/{name}", output_path=f"/out/{name}", logical_prefix="lib",
        stage=Stage.build, status=Status.done,
    )  # fmt: skip
    session.add(library)
    session.flush()
    return library


def build_library(session: Session) -> SmallLibrary:
    """Three files, the dictionary above and the theorem `lib.b.dvdn_trans`."""
    library = add_library(session, "lib")
    files = {}
    for name, (order, requires) in FILES.items():
        source = SourceFile(
            library_id=library.id, path=f"{name}.v", logical_path=f"lib.{name}",
            content_hash=name, cleaned_text="", dependency_order=order, requires=requires,
            stage=Stage.extract, status=Status.done,
        )  # fmt: skip
        session.add(source)
        session.flush()
        files[name] = source.id
    for file, byte, name, doc in OBJECTS:
        add_object(session, files[file], FILES[file][0], byte, name, doc)
    theorem = Theorem(
        fqn=THEOREM, file_id=files["b"], kind="Lemma", byte_start=THEOREM_BYTE, line=40,
        statement="Lemma dvdn_trans d m n : d %| m -> m %| n -> d %| n.",
        proof="Proof. by move=> /dvdnP[k ->]; apply: dvdn_mull. Qed.",
        stage=Stage.extract, status=Status.done, selected=True,
    )  # fmt: skip
    session.add(theorem)
    session.flush()
    return SmallLibrary(files, theorem.id)


@pytest.fixture
def small_library(migrated: str) -> SmallLibrary:
    with db.session_factory().begin() as session:
        return build_library(session)


@pytest.fixture
def retriever(small_library: SmallLibrary, minilm: Embedder) -> Retriever:
    found = Retriever(minilm, db.engine())
    found.sync()
    return found


def _names(hits) -> list[str]:
    return [hit.entry.name for hit in hits]


def _availability(theorem_id: int):
    with db.session_factory()() as session:
        return availability(session, theorem_id)


def test_every_available_object_and_nothing_else_comes_back(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    theorem = _availability(small_library.theorem_id)
    queries = [doc for *_, doc in OBJECTS if doc] + ["prime numbers", "greatest common divisor"]
    for query in queries:
        hits = retriever.search(query, 50, theorem)
        assert set(_names(hits)) == AVAILABLE, query
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)


def test_an_object_inserted_after_the_theorem_never_comes_back(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    doc = "Divisibility is preserved by the least common multiple of two numbers."
    with db.session_factory().begin() as session:
        add_object(session, small_library.files["b"], 1, THEOREM_BYTE + 1, "later_lemma", doc)
        add_object(session, small_library.files["b"], 1, THEOREM_BYTE - 1, "earlier_lemma", doc)
        add_object(session, small_library.files["c"], 2, 50, "unrequired_lemma", doc)
    assert retriever.sync().embedded == 3
    theorem = _availability(small_library.theorem_id)
    for top_k in (1, 3, 50):
        names = _names(retriever.search(doc, top_k, theorem))
        assert names[0] == "earlier_lemma"
        assert "later_lemma" not in names and "unrequired_lemma" not in names


def test_rocq_files_count_whichever_library_built_them(small_library: SmallLibrary) -> None:
    """The dictionary keeps one row per object: a Rocq file another library built is available
    where it is required; another library's own file of a required name is not."""
    with db.session_factory().begin() as session:
        other = add_library(session, "other")
        ids = {}
        for logical, from_rocq in (("Coq.ssr.ssrbool", True), ("lib.x", False)):
            source = SourceFile(
                library_id=other.id, path=f"{logical}.v", logical_path=logical,
                from_rocq=from_rocq, content_hash=logical, cleaned_text="", dependency_order=0,
                stage=Stage.build, status=Status.done,
            )  # fmt: skip
            session.add(source)
            session.flush()
            ids[logical] = source.id
        b = session.get(SourceFile, small_library.files["b"])
        b.requires = [*b.requires, "Coq.ssr.ssrbool", "lib.x"]
    required = _availability(small_library.theorem_id).required_files
    assert ids["Coq.ssr.ssrbool"] in required and ids["lib.x"] not in required
    assert small_library.files["a"] in required


def test_a_have_sub_theorem_sees_what_its_theorem_sees(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    with db.session_factory().begin() as session:
        have = Theorem(
            fqn=f"{THEOREM}_have_1", file_id=small_library.files["b"], kind="Lemma",
            parent_id=small_library.theorem_id, byte_start=THEOREM_BYTE + 200,
            statement="d %| n", proof="", stage=Stage.extract, status=Status.done,
        )  # fmt: skip
        session.add(have)
        session.flush()
        have_id = have.id
    assert _availability(have_id) == _availability(small_library.theorem_id)


def test_a_theorem_of_the_first_file_sees_only_what_precedes_it(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    with db.session_factory().begin() as session:
        early = Theorem(
            fqn="lib.a.early", file_id=small_library.files["a"], kind="Lemma", byte_start=350,
            statement="", proof="", stage=Stage.extract, status=Status.done,
        )  # fmt: skip
        session.add(early)
        session.flush()
        early_id = early.id
    hits = retriever.search("transitive order", 10, _availability(early_id))
    assert set(_names(hits)) == {"addnC", "addnA", "muln0"}


def test_ranks_inside_and_beyond_k_and_of_unavailable_targets(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    theorem = _availability(small_library.theorem_id)
    query = "Reversing a sequence twice gives the sequence back."
    assert retriever.lookup([query], 3, theorem, None)[0].rank is None
    rev = retriever.lookup([query], 3, theorem, "lib.a.rev_rev")[0]
    assert rev.rank == 1 and rev.target_score == pytest.approx(rev.hits[0].score)
    far = retriever.lookup([query], 3, theorem, "lib.b.modn_small")[0]
    full = retriever.search(query, 50, theorem)
    assert far.rank == _names(full).index("modn_small") + 1 > 3
    assert retriever.lookup([query], 3, theorem, "lib.b.gcdnC")[0].rank is None  # later
    assert retriever.lookup([query], 3, theorem, "lib.a.no_doc")[0].rank > 3  # no docstring


def test_only_changed_texts_are_embedded_again(
    small_library: SmallLibrary, retriever: Retriever
) -> None:
    assert retriever.sync().embedded == 0
    with db.session_factory().begin() as session:
        rows = {o.name: o for o in session.execute(sa.select(LibraryObject)).scalars()}
        rows["addnC"].docstring = "The sum of two natural numbers does not depend on their order."
        rows["no_doc"].docstring, rows["no_doc"].docstring_source = "Written by step 6.", "llm"
        rows["subnn"].docstring = None
    report = retriever.sync()
    assert (report.entries, report.embedded) == (len(OBJECTS), 3)
    with db.session_factory()() as session:
        stored = session.execute(
            sa.select(LibraryObject.name)
            .join(ObjectEmbedding, ObjectEmbedding.object_id == LibraryObject.id)
            .where(LibraryObject.name.in_(["addnC", "no_doc", "subnn"]))
        ).scalars()
        assert set(stored) == {"addnC", "no_doc", "subnn"}
    assert retriever.sync().embedded == 0


def test_the_model_has_its_hnsw_index_and_searches_use_it(
    small_library: SmallLibrary, retriever: Retriever, minilm: Embedder
) -> None:
    space = VectorSpace(minilm.name, minilm.dimensions)
    with db.engine().connect() as connection:
        definition = connection.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
            {"name": space.index_name},
        ).scalar_one()
        assert "hnsw" in definition and "vector_cosine_ops" in definition
        connection.execute(sa.text("SET enable_seqscan = off"))
        plan = connection.execute(
            sa.text(
                "EXPLAIN SELECT e.id FROM object_embeddings e "
                f"WHERE {space.where()} ORDER BY {space.distance()} LIMIT 5"
            ),
            {"query": str([0.0] * (minilm.dimensions - 1) + [1.0])},
        ).scalars()
        assert space.index_name in "\n".join(plan)


def test_exact_searches_rank_as_numpy_does_and_break_ties_by_entry(
    small_library: SmallLibrary, retriever: Retriever, minilm: Embedder
) -> None:
    """What the pipeline searches with: the same results whatever the index holds."""
    doc = "The same words twice give the same vector, so equally near entries."
    with db.session_factory().begin() as session:
        for kind in ("prf", "thm"):  # the same name and sentence: the same embedded text
            add_object(session, small_library.files["a"], 0, 900, "twin", doc, kind).fullname = None
    exact = Retriever(minilm, db.engine(), mode="dense")
    exact.sync()
    theorem = _availability(small_library.theorem_id)
    with db.engine().connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT o.id, o.name, e.embedding FROM object_embeddings e "
                "JOIN library_objects o ON o.id = e.object_id "
                "WHERE o.file_id = ANY(:files) OR (o.file_id = :file AND o.library_order < :before)"
            ).columns(embedding=Vector()),
            {"files": list(theorem.required_files), "file": theorem.file_id,
             "before": theorem.before},
        ).all()  # fmt: skip
    for query in (doc, "prime numbers", "greatest common divisor"):
        vector = minilm.queries([query])[0]
        cosine = {
            (object_id, name): float(np.dot(e, vector) / np.linalg.norm(e) / np.linalg.norm(vector))
            for object_id, name, e in stored
        }
        expected = sorted(cosine, key=lambda key: (-round(cosine[key], 5), key[0]))
        names = _names(exact.search(query, 4, theorem))
        assert names == [name for _, name in expected[:4]], query
    twins = [hit.entry for hit in exact.search(doc, 2, theorem)]
    assert {e.kind for e in twins} == {"thm", "prf"} and twins[0].id < twins[1].id


def _facts(name: str, fullname: str, docstring: str | None = None, source: str | None = None):
    return EntryFacts(1, f"lib.{name}", "thm", name, fullname, docstring, source)


def test_an_entry_text_glosses_the_name_then_says_what_it_means() -> None:
    long = _facts("addnA", "Lemma addnA : associative addn.", "The docstring. " * 40, "header")
    text = dense_text(long)
    assert text.startswith("addnA: addition of natural numbers, associativity\nThe docstring.")
    assert len(text) == 200
    size = _facts("size_cat", "Lemma size_cat s1 s2 : size (s1 ++ s2) = size s1 + size s2.")
    assert dense_text(size) == (
        "size_cat: size of a sequence; concatenation of sequences\n"
        "Lemma about size of a sequence and concatenation of sequences: an equation "
        "involving sum."
    )
    headers = {"size": "size s == the number of items in s"}
    lexical = lexical_text(size, headers).split("\n")
    assert "size (s1 ++ s2) = size s1 + size s2" in lexical and headers["size"] in lexical
    assert "length of a list" in lexical  # a synonym of what the name says


def test_lexical_terms_split_identifiers_and_are_stemmed() -> None:
    assert lexical_tokens("The remainders of modnD: (m + n) %% d") == [
        "remaind", "modnd", "modn", "d", "+", "%%", "d",
    ]  # fmt: skip
    assert lexical_tokens("swapping") == lexical_tokens("swap")


def test_large_models_are_indexed_as_halfvec_or_scanned_exactly() -> None:
    assert VectorSpace("m", 384).cast == "vector(384)"
    assert VectorSpace("Qwen/Qwen3-Embedding-4B", 2560).cast == "halfvec(2560)"
    assert VectorSpace("huge", 5000).index_type is None
    assert len(VectorSpace("x" * 200, 4096).index_name) <= 63


def test_an_entry_without_docstring_is_found_by_what_its_name_and_statement_say(
    small_library: SmallLibrary, minilm: Embedder
) -> None:
    with db.session_factory().begin() as session:
        row = add_object(session, small_library.files["a"], 0, 1300, "modnD", None)
        row.fullname = "Lemma modnD m n d : 0 < d -> (m + n) %% d = m %% d + n %% d - d."
    found = Retriever(minilm, db.engine())
    found.sync()
    theorem = _availability(small_library.theorem_id)
    for query in ("remainder of a sum", "the modulo of a sum"):
        assert "modnD" in _names(found.search(query, 3, theorem)), query


def test_the_hybrid_ranking_fuses_the_dense_and_lexical_ones_by_reciprocal_rank(
    small_library: SmallLibrary, retriever: Retriever, minilm: Embedder
) -> None:
    theorem = _availability(small_library.theorem_id)
    query = "sum of the sizes of two sequences"
    ranked = {
        mode: Retriever(minilm, db.engine(), mode).search(query, 50, theorem)
        for mode in ("dense", "lexical", "hybrid")
    }
    assert set(_names(ranked["hybrid"])) == AVAILABLE
    fused: dict[int, float] = {hit.entry.id: 0.0 for hit in ranked["dense"]}
    for mode in ("dense", "lexical"):
        for rank, hit in enumerate(ranked[mode], 1):
            if mode == "dense" or hit.score > 0:
                fused[hit.entry.id] += 1 / (60 + rank)
    expected = sorted(fused, key=lambda key: (-round(fused[key], 12), key))
    assert [hit.entry.id for hit in ranked["hybrid"]] == expected
    assert _names(ranked["lexical"])[0] == "size_cat"
    assert [hit.score for hit in ranked["hybrid"]] == pytest.approx(
        [fused[key] for key in expected]
    )


def test_a_search_sees_a_docstring_written_after_its_index_was_loaded(
    small_library: SmallLibrary, retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index in memory follows the stored embeddings (checked again after a while)."""
    from app import search_index

    theorem = _availability(small_library.theorem_id)
    query = "a quantity that is unrelated to everything else here, like a zebra"
    assert _names(retriever.search(query, 1, theorem)) != ["no_doc"]
    with db.session_factory().begin() as session:
        row = session.execute(
            sa.select(LibraryObject).where(LibraryObject.name == "no_doc")
        ).scalar_one()
        row.docstring, row.docstring_source = "A zebra, unrelated to everything else.", "llm"
    retriever.sync()
    monkeypatch.setattr(search_index, "RECHECK_SECONDS", 0.0)
    assert _names(retriever.search(query, 1, theorem)) == ["no_doc"]


def _rocqcot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_rocqcot_search_answers_a_query_and_a_file_of_queries(
    small_library: SmallLibrary, subprocess_env: dict[str, str], tmp_path
) -> None:
    one = _rocqcot(subprocess_env, "search", "reversing a list twice", "--k", "3", "--json")
    assert one.returncode == 0, one.stderr
    answer = json.loads(one.stdout)
    assert answer["query"] == "reversing a list twice" and len(answer["hits"]) == 3
    first = answer["hits"][0]
    assert (first["rank"], first["fqn"], first["kind"]) == (1, "lib.a.rev_rev", "thm")
    assert first["statement"] == "Lemma rev_rev : statement of rev_rev." and first["score"] > 0
    queries = tmp_path / "queries.txt"
    queries.write_text("greatest common divisor\n\nprime numbers that are even\n")
    lines = _rocqcot(subprocess_env, "search", "--file", str(queries), "--k", "2").stdout
    answers = [json.loads(line) for line in lines.splitlines()]
    assert [a["query"] for a in answers] == [
        "greatest common divisor",
        "prime numbers that are even",
    ]
    assert answers[0]["hits"][0]["fqn"] == "lib.b.gcdnC"
    assert answers[1]["hits"][0]["fqn"] == "lib.c.even_prime"
    text = _rocqcot(subprocess_env, "search", "the size of a concatenation").stdout
    assert text.splitlines()[0].startswith("  1. lib.a.size_cat (thm)")
    neither = _rocqcot(subprocess_env, "search")
    assert neither.returncode == 1 and "give either a QUERY or --file FILE" in neither.stderr


def test_embedding_leaves_the_cores_other_processes_keep_busy() -> None:
    """With every core kept busy by other processes, documents are encoded on one thread: two
    threads on a busy core wait for each other."""
    cores = FreeCores()
    spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(psutil.cpu_count())]
    try:
        time.sleep(0.5)
        cores.free()  # a window that starts with the spinners running
        time.sleep(0.5)
        assert cores.free() == 1
    finally:
        for spinner in spinners:
            spinner.wait()
