"""What a dictionary entry says, as the retrieval engine reads it.

Every entry is searchable, docstring or not: its text is built from everything known about
it: its name, split and glossed by the naming conventions; its docstring, or else the offline
describer's description; its statement with its notations; the header documentation of the
definitions its statement mentions (`size s == the number of items in s` for a lemma about
`size`). Two texts, for two rankings:

- `dense_text`, embedded by the model: the name's gloss and the docstring or description,
  short, because encoding time grows with length and every entry of the library is embedded;
- `lexical_text`, indexed by BM25: everything, synonyms of the glosses included, since a
  term that is not there cannot match.

`lexical_tokens` cuts both the entries' and the queries' texts into BM25 terms.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import snowballstemmer

from app.describe import SYNONYMS, description, gist, statement_body
from app.naming import name_parts, split_identifier

DENSE_CHARS = 200
"""About 40 word pieces: encoding time grows with length (on this project's 2 shared cores,
MiniLM encodes names alone 6 times faster than names, descriptions and statements)."""
MENTION_CHARS = 120
MENTIONS = 2
OFFLINE = "offline"
# fmt: off
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "if", "in",
    "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "then", "there",
    "these", "this", "those", "to", "what", "when", "where", "which", "with", "does", "do",
    "how", "i", "can", "get", "about", "lemma", "fact", "theorem", "s", "x", "y", "n", "m",
})
# fmt: on
_PUNCTUATION = frozenset({":", ":=", "|", "'", "=>", "@", "&", "_"})
_IDENTIFIER = re.compile(r"[A-Za-z_][\w']*")
_TERM = re.compile(r"[A-Za-z_][\w']*|\d+|\\[A-Za-z]+|[^\w\s()\[\]{},;.]+")


@dataclass(frozen=True)
class EntryFacts:
    """A dictionary entry as its texts are built from."""

    id: int
    fqn: str
    kind: str
    name: str
    fullname: str | None
    docstring: str | None
    docstring_source: str | None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def written_docstring(self) -> str | None:
        """A docstring that says more than the describer would (not one it wrote)."""
        return self.docstring if self.docstring and self.docstring_source != OFFLINE else None


def header_docs(entries: Iterable[EntryFacts]) -> dict[str, str]:
    """Short name → the first line of its header documentation, for the definitions that
    have one (`size` → `size s == the number of items in s`)."""
    found: dict[str, str] = {}
    for entry in entries:
        if entry.docstring_source == "header" and entry.docstring and entry.kind != "not":
            found.setdefault(entry.short_name, entry.docstring.split("\n")[0][:MENTION_CHARS])
    return found


def mentions(entry: EntryFacts, headers: dict[str, str]) -> list[str]:
    """The header docs of the definitions the entry's statement names (not itself)."""
    names = dict.fromkeys(_IDENTIFIER.findall(statement_body(entry.fullname or "")))
    return [headers[n] for n in names if n in headers and n != entry.short_name][:MENTIONS]


def gloss(entry: EntryFacts) -> str:
    """The name split and glossed: `addnA: addition of natural numbers, associativity`."""
    if entry.kind == "not":
        return entry.name
    return f"{entry.short_name}: {'; '.join(p.words for p in name_parts(entry.short_name))}"


def dense_text(entry: EntryFacts) -> str:
    """The embedded text: the gloss, then the docstring (else the description), cut short.
    What it means, in words: the statement's symbols and the mentioned definitions' docs are
    the lexical text's (they cost the model most and say least to it)."""
    about = entry.written_docstring or description(entry.kind, entry.name, entry.fullname or "")
    return f"{gloss(entry)}\n{' '.join(about.split())}"[:DENSE_CHARS]


def lexical_text(entry: EntryFacts, headers: dict[str, str]) -> str:
    """The text BM25 indexes: the gloss, the docstring, the description, the statement, the
    header docs of the definitions it mentions, and the synonyms of every notion the name and
    statement name."""
    g = gist(entry.kind, entry.name, entry.fullname or "")
    said = " ".join((*g.topics, *g.notions))
    synonyms = [other for known, others in SYNONYMS.items() if known in said for other in others]
    parts = [
        gloss(entry),
        entry.written_docstring or "",
        description(entry.kind, entry.name, entry.fullname or ""),
        statement_body(entry.fullname or ""),
        *mentions(entry, headers),
        *synonyms,
    ]
    return "\n".join(part for part in parts if part)


def lexical_tokens(text: str) -> list[str]:
    """BM25 terms: identifiers whole and split into words, numbers, notation symbols; words
    lowercased, stopwords out, stemmed (`remainders` and `remainder` are one term)."""
    tokens: list[str] = []
    for term in _TERM.findall(text):
        if _IDENTIFIER.fullmatch(term):
            words = split_identifier(term)
            if len(words) > 1:
                tokens.append(term.lower())
            tokens += [_stem(w) for w in words if w not in STOPWORDS]
        elif term not in _PUNCTUATION and (not term.isdigit() or len(term) < 3):
            tokens.append(term)
    return tokens


_STEMMER = snowballstemmer.stemmer("english")
_STEMMING = threading.Lock()


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """Snowball's English stem (a stemmer keeps state between calls: one at a time)."""
    with _STEMMING:
        return _STEMMER.stemWord(word)
