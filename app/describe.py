"""The offline describer: plain language about a library object, without an LLM.

It reads what an object is about from its name (MathComp's naming conventions, `app.naming`)
and its statement (the shape of its conclusion, the notions its notations name), so that an
entry with no docstring still says something a search can match, and the offline writer can
ask for a fact the way a person would. Two uses, deliberately worded apart:

- `description`: what step 6's offline writer stores as a docstring, and the gloss every
  embedded entry carries;
- `query`: what step 5's offline writer searches with: a seeded paraphrase (other words,
  another template, a different subset of notions), so the queries for one target vary from
  theorem to theorem and are not the description again; it never contains the object's name
  or its statement.

Both depend only on the entry (kind, name, statement) and the seed: never on what step 6
wrote, so an offline CoT is the same whatever ran before it.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from app.naming import OPERATIONS, WORDS, name_parts, notation_words

# fmt: off
KIND_WORDS = {
    "thm": "lemma", "prf": "lemma", "def": "definition", "ind": "inductive type",
    "constr": "constructor", "rec": "record", "proj": "projection", "inst": "instance",
    "class": "class", "ax": "axiom", "var": "variable", "not": "notation",
    "abbrev": "abbreviation", "coe": "coercion",
}
PROPERTIES = (
    ("reflect", "reflection between a boolean test and a statement"),
    ("left_distributive", "distributivity"), ("right_distributive", "distributivity"),
    ("commutative", "commutativity"), ("associative", "associativity"),
    ("injective", "injectivity"), ("cancel", "cancellation"), ("involutive", "involution"),
    ("idempotent", "idempotence"), ("{morph", "morphism"), ("{mono", "monotonicity"),
    ("{homo", "monotonicity"), ("left_id", "neutral element"), ("right_id", "neutral element"),
    ("left_zero", "absorbing element"), ("right_zero", "absorbing element"),
    ("antisymmetric", "antisymmetry"), ("irreflexive", "irreflexivity"),
    ("transitive", "transitivity"), ("reflexive", "reflexivity"), ("symmetric", "symmetry"),
)
SYNONYMS = {
    "addition of natural numbers": ("adding naturals", "sum of two numbers", "nat addition"),
    "subtraction of natural numbers": ("truncated subtraction", "minus on naturals"),
    "multiplication of natural numbers": ("product of naturals", "multiplying numbers"),
    "power of natural numbers": ("exponentiation", "raising a number to a power"),
    "remainder of division": ("modulo", "remainder", "mod operation"),
    "integer division": ("quotient", "dividing naturals"),
    "divisibility": ("dividing", "being a divisor"), "size of a sequence": ("length of a list",),
    "concatenation of sequences": ("appending two lists", "joining sequences"),
    "reversal of a sequence": ("reversing a list",), "membership": ("belonging", "being in"),
    "cardinality": ("number of elements", "how many elements"),
    "union of sets": ("set union",), "intersection of sets": ("set intersection",),
    "less than or equal order": ("at most", "less or equal comparison"),
    "strict order on naturals": ("strictly smaller", "less than comparison"),
    "associativity": ("regrouping", "grouping does not matter"),
    "commutativity": ("swapping arguments", "order does not matter"),
    "left commutativity": ("swapping the first two terms",),
    "cancellation": ("undoing", "cancels out"), "transitivity": ("chaining", "transitive"),
    "symmetry": ("symmetric",), "reflection view": ("boolean reflection", "view lemma"),
    "equation": ("rewrite rule", "identity", "equality"),
    "equivalence": ("iff", "if and only if"), "inequality": ("bound", "comparison"),
    "sum": ("addition",), "product": ("multiplication",), "difference": ("minus",),
    "at most": ("no more than",), "sequence": ("list",), "natural numbers": ("naturals",),
    "coprime numbers": ("relatively prime numbers", "numbers whose gcd is one"),
    "prime number": ("number without nontrivial divisors", "irreducible number"),
    "odd parity": ("not even", "parity"), "count of elements satisfying a predicate": (
        "number of elements satisfying a predicate", "how many elements satisfy a test"),
    "finite function": ("function on a finite type as a table",),
    "finite set": ("set of a finite type",), "iteration of a function": ("applying f n times",),
}
# fmt: on
_QUERY_TEMPLATES = (
    "{topic} {shape}",
    "{shape} for {topic}",
    "how does {topic} behave with {notions}",
    "{topic} and {notions}",
    "a fact about {topic} with {notions}",
    "what to use for {topic}",
    "{notions}: {topic}",
    "relating {notions} for {topic}",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def kind_word(kind: str) -> str:
    """A glob kind in words: `thm` is a lemma, `def` a definition; others as they are."""
    return KIND_WORDS.get(kind, kind.lower())


@dataclass(frozen=True)
class Gist:
    """What an object is about, in words."""

    kind: str
    topics: tuple[str, ...]
    """Its name's parts in words (`remainder of division of a sum`)."""
    shape: str
    """What its conclusion is: an equation, an equivalence, a reflection view, ..."""
    notions: tuple[str, ...]
    """The notions its statement's notations and identifiers name, not already in topics."""
    hypotheses: int

    @property
    def topic(self) -> str:
        return " and ".join(self.topics) if self.topics else "an object"


def statement_body(statement: str) -> str:
    """A statement without its header (`Lemma name binders :`, `forall x : T,`) and period."""
    body = statement.strip().removesuffix(".")
    if re.match(r"(?:#\[[^\]]*\]\s*)?[A-Z][a-z]+\b", body) and not body.startswith("forall"):
        head, colon = _top_level(body, ":")
        body = body[colon + 1 :] if colon is not None and head else body
    while body.lstrip().startswith("forall"):
        _, comma = _top_level(body, ",")
        if comma is None:
            break
        body = body[comma + 1 :]
    return " ".join(body.split())


def _top_level(text: str, char: str) -> tuple[bool, int | None]:
    """Whether text precedes it and where `char` first occurs outside brackets (a `:` of
    `:=` or `::` does not count)."""
    depth = 0
    for index, c in enumerate(text):
        depth += (c in "([{") - (c in ")]}")
        double = text[index + 1 : index + 2] in ("=", ":") or text[index - 1 : index] == ":"
        if c == char and depth == 0 and not (char == ":" and double):
            return index > 0, index
    return False, None


def premises(body: str) -> list[str]:
    """The body cut at its top-level implications: hypotheses, then the conclusion."""
    parts, depth, start = [], 0, 0
    for index, c in enumerate(body):
        depth += (c in "([{") - (c in ")]}")
        if depth == 0 and body.startswith("->", index) and body[index - 1 : index] != "<":
            parts.append(body[start:index].strip())
            start = index + 2
    return [*parts, body[start:].strip()]


def shape(conclusion: str, kind: str) -> str:
    """What the conclusion states, in a word or two."""
    if kind not in ("thm", "prf", "ax"):
        return kind_word(kind)
    for keyword, words in PROPERTIES:
        if re.search(rf"(?<![\w']){re.escape(keyword)}(?![\w'])", conclusion):
            return words
    if "<->" in conclusion:
        return "equivalence"
    if re.search(r"(?<![<>=:!])=(?![=>])", conclusion):
        return "equation"
    if "==" in conclusion or "!=" in conclusion:
        return "boolean equality"
    if re.search(r"<=|<|>=|>", conclusion):
        return "inequality"
    if "exists" in conclusion:
        return "existence statement"
    return "property"


@functools.lru_cache(maxsize=1 << 16)
def gist(kind: str, name: str, statement: str) -> Gist:
    """What an object is about, from its name and statement."""
    short = name.rsplit(".", 1)[-1]
    topics = tuple(dict.fromkeys(p.words for p in name_parts(short))) if kind != "not" else ()
    body = statement_body(statement or "")
    parts = premises(body) if kind in ("thm", "prf", "ax") else [body]
    said = " ".join(topics)
    read = notation_words(parts[-1] if kind != "not" else short)
    notions = tuple(n for n in read if n not in said)
    return Gist(kind, topics, shape(parts[-1], kind), notions, len(parts) - 1)


def description(kind: str, name: str, statement: str) -> str:
    """The docstring the offline writer gives an object: its kind and topic, then the shape
    of its statement and the notions involved."""
    g = gist(kind, name, statement)
    if kind == "not":
        return f"Notation for {_listed(g.notions) or 'an expression'}."
    text = f"{kind_word(kind).capitalize()} about {g.topic}"
    if kind in ("thm", "prf", "ax"):
        text += f": {_article(g.shape)} {g.shape}"
        if g.notions:
            text += f" involving {_listed(g.notions[:5])}"
        if g.hypotheses:
            text += f", under {_count(g.hypotheses)} {_plural('hypothesis', g.hypotheses)}"
    elif g.notions:
        text += f", in terms of {_listed(g.notions[:4])}"
    return without_word(text, name.rsplit(".", 1)[-1]) + "."


def query(kind: str, name: str, statement: str, seed: str) -> str:
    """A search for an object as someone who needs it might write it: a template, synonyms
    and notions drawn with `seed` (the same seed, the same query)."""
    g = gist(kind, name, statement)
    short = name.rsplit(".", 1)[-1]
    rng = random.Random(seed)
    notions = [_paraphrase(n, rng) for n in g.notions[:4]]
    rng.shuffle(notions)
    # A name no convention explains says nothing once it is left out: its notions speak.
    topic = _unnamed(g.topic, short, rng) if g.topics else ""
    if not topic:
        plain = kind_word(kind) if g.shape == kind_word(kind) else f"{kind_word(kind)} {g.shape}"
        topic, notions = _listed(notions[:2]) or plain, notions[2:]
    picked = _listed(notions[: rng.randint(1, 2)])
    usable = [t for t in _QUERY_TEMPLATES if picked or "{notions}" not in t]
    template = rng.choice(usable)
    shape = _paraphrase(g.shape, rng) if g.shape != topic else "object"
    text = template.format(topic=_paraphrase(topic, rng), shape=shape, notions=picked)
    return " ".join(without_word(text, short).split())


def _unnamed(topic: str, short: str, rng: random.Random) -> str:
    """The topic without the name: a synonym of it that does not say the name, else the
    topic with the name left out."""
    pattern = rf"(?<![\w']){re.escape(short)}(?![\w'])"
    if not re.search(pattern, topic):
        return topic
    others = [s for s in SYNONYMS.get(topic, ()) if not re.search(pattern, s)]
    return rng.choice(others) if others else without_word(topic, short)


def _paraphrase(phrase: str, rng: random.Random) -> str:
    """The phrase, or one of its synonyms; its known sub-phrases swapped likewise."""
    options = SYNONYMS.get(phrase)
    if options:
        return rng.choice((phrase, *options))
    for known, others in SYNONYMS.items():
        pattern = rf"(?<![\w']){re.escape(known)}(?![\w'])"
        if " " in known and re.search(pattern, phrase) and rng.random() < 0.6:
            phrase = re.sub(pattern, rng.choice(others), phrase)
    return phrase


def without_word(text: str, word: str) -> str:
    """The text without an object's name as a whole word: a known one is said in other
    words (`size` becomes `length of a list`), any other dropped."""
    if not word:
        return text
    pattern = rf"(?<![\w']){re.escape(word)}(?![\w'])"
    if not re.search(pattern, text):
        return text
    gloss = OPERATIONS.get(word) or WORDS.get(word) or ""
    other = next(iter(SYNONYMS.get(gloss, ())), "")
    replacement = other if other and not re.search(pattern, other) else ""
    return " ".join(re.sub(pattern, replacement, text).split())


def _listed(items: tuple[str, ...] | list[str]) -> str:
    items = list(items)
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _count(n: int) -> str:
    return ("one", "two", "three", "four")[n - 1] if n <= 4 else str(n)


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word.removesuffix("is") + "es"


def words(text: str) -> set[str]:
    """A text's lowercase words (for comparing a query with a description)."""
    return {w.lower() for w in _WORD.findall(text)}


def jaccard(a: str, b: str) -> float:
    """Token Jaccard similarity of two texts' words."""
    first, second = words(a), words(b)
    return len(first & second) / len(first | second) if first | second else 1.0
