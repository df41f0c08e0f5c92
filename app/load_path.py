"""The installed files a library loads, as `source_files` rows for the dictionary.

Step 0 records, beside the library's own files, every installed file it requires directly or
not (`app.rocq.installed`): Rocq's prelude, the Stdlib modules, an installed MathComp. Nothing
is built: each row holds the installed source as it is, its sentences (found without Rocq), its
header documentation, and its definitions, read from the installed `.glob` when the package
ships one, else from what Rocq prints of the loaded `.vo` (`Print Module`), which also gives
the names no glob defines (Include, functor applications, record constructors). A printed
object is placed at the sentence of the source that defines it when one does (its statement
as written, with notations); otherwise at a sentence after the file's end holding what Rocq
printed, so its entry still reads as a statement. The rows are marked `from_rocq` like the
SSReflect files step 0 builds: they are not the library's, step 1 skips them, and a theorem
sees all of a file its file requires.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from app.rocq.build import BuildStatus
from app.rocq.glob import read_glob
from app.rocq.installed import InstalledFile, PrintedItem, printed_modules
from app.rocq.lexer import header_docs
from app.rocq.positions import SourceText, read_source, valid_text
from app.rocq.sentences import split_sentences
from app.rocq.timing import Sentence, located_sentence
from app.rocq.toolchain import Toolchain
from app.serialize import plain

_DEFINING = re.compile(
    r"(?:#\[[^\]]*\]\s*)?(?:(?:Local|Global|Program|Polymorphic|Monomorphic|Cumulative|"
    r"NonCumulative|Private|Canonical)\s+)*(?:Lemma|Theorem|Fact|Remark|Corollary|Proposition|"
    r"Property|Definition|Fixpoint|CoFixpoint|Inductive|CoInductive|Variant|Record|Structure|"
    r"Class|Instance|Axiom|Parameter|Conjecture|Example|Let|Coercion)\s+([A-Za-z_][\w']*)"
)


def closures(files: Iterable[InstalledFile]) -> dict[str, frozenset[str]]:
    """Each installed file with everything it requires, directly or not (files in
    dependency order)."""
    closure: dict[str, frozenset[str]] = {}
    for file in files:
        closure[file.library] = frozenset({file.library}).union(
            *(closure.get(dep, {dep}) for dep in file.requires)
        )
    return closure


def installed_records(
    files: list[InstalledFile], toolchain: Toolchain, first_order: int = 0
) -> list[dict[str, Any]]:
    """The `source_files` columns of installed files (in dependency order from
    `first_order`)."""
    if not files:
        return []
    printed = printed_modules([file.library for file in files], toolchain)
    closure = closures(files)
    return [
        _record(file, printed[file.library], closure[file.library] - {file.library}, toolchain)
        | {"dependency_order": first_order + index}
        for index, file in enumerate(files)
    ]


def _record(
    file: InstalledFile, printed: list[PrintedItem], requires: frozenset[str], toolchain: Toolchain
) -> dict[str, Any]:
    source = toolchain.host(file.source)
    text = read_source(source)
    located = SourceText(text)
    data = text.encode("utf-8", "surrogateescape")
    sentences = [located_sentence(located, a, b, 0.0) for a, b in split_sentences(data)]
    glob = source.with_suffix(".glob")
    known = (
        [plain(d) for d in read_glob(glob, located).definitions if d.kind != "binder"]
        if glob.exists()
        else []
    )
    extra, sentences = _printed_definitions(file, printed, known, sentences, located, len(data))
    cleaned = valid_text(text)
    return {
        "path": str(file.source),
        "logical_path": file.library,
        "from_rocq": True,
        "content_hash": hashlib.sha256(cleaned.encode()).hexdigest(),
        "cleaned_text": cleaned,
        "build_status": BuildStatus.INSTALLED.value,
        "build_error": None,
        "build_seconds": 0.0,
        "requires": sorted(requires),
        "sentences": plain(sentences),
        "glob": {"definitions": distinct(known + extra)},
        "header_docs": [plain(doc) | {"head": doc.head} for doc in header_docs(cleaned)],
    }


def _printed_definitions(
    file: InstalledFile,
    printed: list[PrintedItem],
    known: list[dict[str, Any]],
    sentences: list[Sentence],
    located: SourceText,
    size: int,
) -> tuple[list[dict[str, Any]], list[Sentence]]:
    """Glob-shaped definitions of the printed objects the glob does not define, and the
    sentences with those printed texts appended after the file's end."""
    defined = {definition["fqn"] for definition in known}
    defining: dict[str, Sentence] = {}
    for sentence in sentences:
        if match := _DEFINING.match(sentence.text):
            defining.setdefault(match.group(1), sentence)
    extra, appended, offset = [], list(sentences), size + 1
    inductive: Sentence | None = None  # a constructor's sentence is its type's
    for item in printed:
        name = item.fqn.rpartition(".")[2]
        sentence = inductive if item.kind == "constr" else defining.get(name)
        if item.kind != "constr":
            inductive = sentence
        if item.fqn in defined:
            continue
        defined.add(item.fqn)
        if sentence is None:
            end = offset + len(item.text.encode())
            after = located.position(len(located.text))
            sentence = Sentence(offset, end, offset, end, after, after, item.text, 0.0)
            appended.append(sentence)
            if item.kind != "constr":
                inductive = sentence
            offset = end + 1
        extra.append(
            {
                "kind": item.kind,
                "name": name,
                "fqn": item.fqn,
                "byte_start": sentence.byte_start,
                "start": plain(sentence.start),
                "notation": None,
                "library": file.library,
            }
        )
    return extra, appended


def distinct(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Definitions at distinct bytes: objects that share one (an inductive and the
    constructors placed at its sentence; a class's field, which the glob defines twice) are
    moved a byte apart, so that their order in the dictionary is stable. Nothing reads an
    installed file's text at these offsets."""
    used: dict[int, int] = {}
    for definition in definitions:
        start = definition["byte_start"]
        definition["byte_start"] = start + used.get(start, 0)
        used[start] = used.get(start, 0) + 1
    return definitions
