"""A source file as a session walks it: its sentences, its statements, its skippable proofs.

A session reaches a point of a file by executing every sentence before it. Most of a file's
time is its proofs, and a proof ended by `Qed.` is opaque: what comes after sees only its
statement. So, as `coqc -vos` does, a session going past a whole proof it does not need may
run `Admitted.` in its place (`SkippableProof`). In a section, closing it generalizes a lemma
over the section variables its proof used (all of them for an `Admitted.` proof), so there the
proof is skipped only as `Proof using <what it used>. Admitted.`: the list is the file's own
`Proof using`, or what Rocq suggested when the library was built (`app.rocq.timing`). Rocq
suggests a list for every proof with a section variable in scope (all of MathComp's 12,429
agree with the text), so a proof that got none, in sections that declare no variable, is a
plain `Admitted.`. A `Let` is never skipped: admitted, it becomes an axiom, which a later
`Proof using` cannot name.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.rocq.positions import SourceText
from app.rocq.sentences import split_sentences
from app.rocq.timing import TIMING_SUFFIX, proofs_using

_STATEMENT = re.compile(
    r"(?:#\[[^\]]*\]\s*)*(?:(?:Local|Global|Program|Polymorphic|Monomorphic)\s+)*"
    r"(?:Lemma|Theorem|Fact|Remark|Corollary|Proposition|Property|Example|Definition|"
    r"Fixpoint|Instance|Let)\s+([^\s(:{\[]+)"
)
_OPAQUE_STATEMENT = re.compile(
    r"(?:#\[[^\]]*\]\s*)*(?:(?:Local|Global)\s+)?"
    r"(?:(Lemma|Theorem|Fact|Remark|Corollary|Proposition|Property)|Definition|Example)\s"
)
"""Statements whose proof may be skipped: never `Program`, `Let`, fixpoints or instances. The
first group cannot have a body (`:=` there is a `let` binder); the others are skipped only
without `:=`, so with no body."""
_SECTION_VARIABLE = re.compile(
    r"(?:#\[[^\]]*\]\s*)*(?:(?:Local|Global)\s+)?(?:Variables?|Hypothes[ie]s|Context|Let)\b"
)
_BODY_BREAK = re.compile(
    r"(?:#\[[^\]]*\]\s*)*(?:(?:Local|Global|Program)\s+)*(?:Lemma|Theorem|Fact|Remark|Corollary|"
    r"Proposition|Property|Example|Definition|Fixpoint|Instance|Let|Section|Module|End|Defined|"
    r"Admitted|Abort|Save|Next)\b"
)
"""A sentence that cannot be inside a plain proof: a proof that meets one is not skipped."""
_QED = re.compile(r"Qed\s*\.$")
_PROOF_USING = re.compile(r"Proof\s+using\b")
_SCOPE = re.compile(r"(Module|Section)\s+(?:Type\s+|Import\s+|Export\s+)?([^\s.:(<]+)")
_END = re.compile(r"End\s+([^\s.]+)")


@dataclass(frozen=True)
class SkippableProof:
    """The sentences `first`..`qed` (inclusive) of an opaque proof, and what replaces them."""

    first: int
    qed: int
    replacement: tuple[str, ...]
    """`Admitted.`, after the `Proof using` the proof needs in a section."""


@dataclass(frozen=True)
class ScriptFile:
    """A loaded source file: its sentences (byte ranges), statements and skippable proofs."""

    path: str
    source: SourceText
    sentences: tuple[tuple[int, int], ...]
    ends: tuple[int, ...]
    proofs: dict[int, SkippableProof]
    """Skippable proofs by their first sentence."""

    @classmethod
    def read(cls, path: str) -> ScriptFile:
        """Load a source file, split it into sentences and find its skippable proofs (with the
        `Proof using` suggestions of its build, when it was built by `app.rocq.build`)."""
        source = SourceText(Path(path).read_text(encoding="utf-8"))
        sentences = tuple(split_sentences(source.data))
        texts = [source.byte_slice(start, end).strip() for start, end in sentences]
        timing = Path(path + TIMING_SUFFIX)
        suggested = proofs_using(timing.read_text(errors="replace")) if timing.exists() else {}
        using = {
            i: suggested[start] for i, (start, _) in enumerate(sentences) if start in suggested
        }
        proofs = {p.first: p for p in _skippable_proofs(texts, using, timing.exists())}
        ends = tuple(end for _, end in sentences)
        return cls(path, source, sentences, ends, proofs)

    def chunk(self, index: int) -> tuple[str, int]:
        """Sentence `index` with the blanks and comments before it, and its byte offset."""
        start = self.ends[index - 1] if index else 0
        return self.source.byte_slice(start, self.ends[index]), start

    def count_before(self, byte: int) -> int:
        """How many sentences end at or before a byte offset."""
        return bisect.bisect_right(self.ends, byte)

    def skippable(self, index: int, count: int) -> SkippableProof | None:
        """The proof starting at sentence `index` if it ends within the first `count`."""
        proof = self.proofs.get(index)
        return proof if proof is not None and proof.qed < count else None

    def unfinished(self, count: int, target: int) -> SkippableProof | None:
        """The skippable proof that the first `count` sentences stop inside of, short of its
        last tactic, if a walk to the first `target` goes past its end: the rest of it need not
        run (after a proof that failed or diverged, the next theorem does not redo it)."""
        k = bisect.bisect_right(self._firsts, count - 1) - 1
        proof = self.proofs[self._firsts[k]] if k >= 0 else None
        if proof is None or not proof.first <= count - 1 < proof.qed - 1:
            return None
        return proof if proof.qed < target else None

    @functools.cached_property
    def _firsts(self) -> list[int]:
        return sorted(self.proofs)

    def statement(self, name: str) -> int:
        """The index of the sentence stating theorem `name` (short or fully qualified)."""
        parts = name.split(".")
        found = [i for i, path in self._statements() if _names_match(path, parts)]
        if not found:
            raise LookupError(f"no statement of {name} in {self.path}")
        return found[0]

    def _statements(self) -> Iterator[tuple[int, list[str]]]:
        """Index and module path (sections excluded, as in qualified names) of statements."""
        scopes = _Scopes()
        for index, (start, end) in enumerate(self.sentences):
            text = self.source.byte_slice(start, end)
            scopes.read(text)
            if m := _STATEMENT.match(text):
                yield index, [*scopes.modules, m.group(1)]


def _skippable_proofs(
    texts: Sequence[str], using: dict[int, str], recorded: bool
) -> Iterator[SkippableProof]:
    """Proofs of lemmas made of plain proof sentences up to `Qed.`, outside sections or with
    the section variables they use known (`using`: by the index of their `Qed.`; `recorded`:
    the build recorded Rocq's suggestions)."""
    sections = _Scopes()
    for index, text in enumerate(texts):
        sections.read(text)
        opaque = _OPAQUE_STATEMENT.match(text)
        if not opaque or (not opaque.group(1) and ":=" in text):
            continue
        for end in range(index + 1, len(texts)):
            if _QED.match(texts[end]):
                replacement = _replacement(texts[index + 1], using.get(end), recorded, sections)
                if replacement is not None:
                    yield SkippableProof(index + 1, end, replacement)
                break
            if _BODY_BREAK.match(texts[end]):
                break


@dataclass
class _Scopes:
    """The modules and sections open at a sentence, and whether each section declared a
    variable (or hypothesis, context, `Let`) so far."""

    open: list[tuple[str, bool]] = field(default_factory=list)
    """(name, is a section); a section that declared a variable is marked in `declaring`."""
    declaring: set[int] = field(default_factory=set)

    def read(self, text: str) -> None:
        if (m := _SCOPE.match(text)) and ":=" not in text:
            self.open.append((m.group(2), m.group(1) == "Section"))
        elif (m := _END.match(text)) and self.open and self.open[-1][0] == m.group(1):
            self.open.pop()
            self.declaring.discard(len(self.open))
        elif _SECTION_VARIABLE.match(text) and self.in_section:
            self.declaring.add(max(i for i, (_, section) in enumerate(self.open) if section))

    @property
    def in_section(self) -> bool:
        return any(section for _, section in self.open)

    @property
    def modules(self) -> list[str]:
        """The open modules' names, outermost first (a qualified name's path: no section)."""
        return [name for name, section in self.open if not section]


def _replacement(
    first: str, used: str | None, recorded: bool, sections: _Scopes
) -> tuple[str, ...] | None:
    """What runs instead of a proof: None if its section variables are unknown."""
    if not sections.in_section:
        return ("Admitted.",)
    if _PROOF_USING.match(first):
        return (first, "Admitted.")
    if used is not None:
        return (f"Proof using {used}.".replace(" .", "."), "Admitted.")
    return ("Admitted.",) if recorded and not sections.declaring else None


def _names_match(path: list[str], parts: list[str]) -> bool:
    """Whether a name given as `parts` (short, partly or fully qualified) denotes `path`."""
    common = min(len(path), len(parts))
    return path[-common:] == parts[-common:]
