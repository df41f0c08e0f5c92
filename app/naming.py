"""MathComp's names and notations in words: what an object is about, without an LLM.

MathComp names a lemma after the operations it is about, then suffixes for the property or
the operand (its naming conventions, documented in `ssrnat.v`, `seq.v`, `finset.v`):
`addnA` is addition of natural numbers and associativity, `modnD` the remainder of a sum,
`in_setU` membership in a union, `size_cat` the size of a concatenation. Statements are
written with notations (`%%`, `:|:`, `\\in`, `#|_|`). The tables here turn the common ones into
English; a part they do not know is split into words as it is. Everything is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# fmt: off
OPERATIONS = {
    # natural numbers (ssrnat, div, prime, binomial)
    "addn": "addition of natural numbers", "subn": "subtraction of natural numbers",
    "muln": "multiplication of natural numbers", "expn": "power of natural numbers",
    "divn": "integer division", "modn": "remainder of division", "dvdn": "divisibility",
    "edivn": "euclidean division", "gcdn": "greatest common divisor",
    "lcmn": "least common multiple", "egcdn": "extended gcd", "coprime": "coprime numbers",
    "leq": "less than or equal order", "ltn": "strict order on naturals",
    "geq": "greater than or equal", "gtn": "greater than", "eqn": "equality of naturals",
    "maxn": "maximum of natural numbers", "minn": "minimum of natural numbers",
    "odd": "odd parity", "double": "doubling", "half": "halving", "uphalf": "upper half",
    "fact": "factorial", "bin": "binomial coefficient", "prime": "prime number",
    "primes": "prime divisors", "pdiv": "smallest prime divisor",
    "logn": "multiplicity of a prime factor", "totient": "euler totient",
    "partn": "part of a number", "pnat": "numbers made of given primes",
    "divisors": "list of divisors", "iter": "iteration of a function", "nat": "natural numbers",
    "succn": "successor", "predn": "predecessor", "ltngt": "comparison of naturals",
    "sqrn": "square", "nat_of_bool": "boolean as a number", "dvdn_sum": "divisibility of a sum",
    "chinese": "chinese remainder theorem", "trunc_log": "truncated logarithm",
    # booleans and logic (ssrbool, eqtype)
    "andb": "boolean conjunction", "orb": "boolean disjunction", "negb": "boolean negation",
    "implb": "boolean implication", "addb": "exclusive or", "eqb": "boolean equality",
    "andP": "conjunction", "orP": "disjunction", "negP": "negation", "eqP": "equality",
    "idP": "boolean truth", "eq": "equality", "eqxx": "equality with itself", "neq": "inequality",
    "contra": "contraposition", "pred": "predicate", "rel": "relation", "mem": "membership",
    "in": "membership", "inj": "injective function", "can": "cancellation", "ifP": "conditional",
    "if": "conditional expression", "inv": "inverse", "bij": "bijection", "comp": "composition",
    # sequences (seq, path)
    "size": "size of a sequence", "cat": "concatenation of sequences",
    "rev": "reversal of a sequence", "map": "map of a function over a sequence",
    "filter": "filtering a sequence", "count": "count of elements satisfying a predicate",
    "has": "some element satisfies a predicate", "all": "all elements satisfy a predicate",
    "nth": "nth element of a sequence", "head": "first element", "last": "last element",
    "behead": "tail of a sequence", "belast": "sequence without its last element",
    "take": "prefix of a sequence", "drop": "dropping the first elements", "rot": "rotation",
    "rotr": "right rotation", "cons": "adding an element in front",
    "rcons": "appending an element at the end", "nil": "empty sequence",
    "nseq": "constant sequence", "seq": "sequence", "index": "position of an element",
    "find": "position of the first element satisfying a predicate",
    "uniq": "sequence without duplicates", "undup": "removing duplicates",
    "rem": "removing an element", "subseq": "subsequence", "mask": "selection by a mask",
    "zip": "zipping two sequences", "unzip1": "first components", "unzip2": "second components",
    "flatten": "flattening a sequence of sequences", "iota": "sequence of consecutive numbers",
    "mkseq": "sequence of values of a function", "sumn": "sum of a sequence of numbers",
    "foldr": "right fold", "foldl": "left fold", "perm_eq": "permutation of sequences",
    "perm": "permutation", "sort": "sorting", "sorted": "sorted sequence", "path": "path",
    "cycle": "cycle", "allpairs": "all pairs", "pairmap": "map over adjacent pairs",
    "scanl": "prefix sums", "catrev": "reverse concatenation", "incr_nth": "incrementing",
    "ncons": "repeated cons", "shape": "lengths of subsequences", "tuple": "tuple",
    "merge": "merging sorted sequences", "pmap": "partial map", "pairwise": "pairwise relation",
    "subset": "inclusion", "proper": "strict inclusion", "nilp": "emptiness test",
    "ohead": "optional first element", "mem_seq": "membership in a sequence",
    # finite types and sets (fintype, finset, finfun, bigop)
    "card": "cardinality", "enum": "enumeration", "ord": "ordinal", "ordinal": "ordinal",
    "set": "finite set", "setU": "union of sets", "setI": "intersection of sets",
    "setC": "complement of a set", "setD": "difference of sets", "set0": "empty set",
    "setT": "full set", "set1": "singleton set", "setU1": "adding an element to a set",
    "setD1": "removing an element from a set", "imset": "image of a set",
    "preimset": "preimage of a set", "powerset": "powerset", "disjoint": "disjoint sets",
    "cover": "union of a family", "partition": "partition", "pick": "chosen element",
    "cards": "cardinality of a set", "big": "iterated operation", "sum": "sum",
    "prod": "product", "bigcup": "union of a family of sets",
    "bigcap": "intersection of a family of sets", "bigmax": "maximum of a family",
    "ffun": "finite function", "fun": "function", "subsetP": "inclusion", "forall": "for all",
    "exists": "there exists", "tnth": "element of a tuple", "widen": "widening an ordinal",
    "lift": "lifting an ordinal", "bump": "bumping an index", "enum_rank": "rank in an enumeration",
}

STEM_PROPERTIES = {
    "A": "associativity", "C": "commutativity", "CA": "left commutativity",
    "AC": "right commutativity", "K": "cancellation", "KV": "cancellation",
    "I": "injectivity", "W": "weakening", "E": "definition unfolded", "P": "reflection view",
    "T": "with true", "F": "with false", "Ir": "irreflexivity", "L": "on the left",
    "R": "on the right", "V": "with the inverse", "Pn": "reflection view",
}
STEM_OPERANDS = {
    "D": "a sum", "B": "a difference", "M": "a product", "X": "a power", "N": "a negation",
    "S": "a successor", "0": "zero", "1": "one", "2": "two", "b": "a boolean",
    "Sn": "a successor", "n": "a natural number",
}
SET_OPERANDS = {
    "U": "a union", "I": "an intersection", "C": "a complement", "D": "a difference",
    "T": "the full set", "0": "the empty set", "1": "a singleton", "1n": "a singleton",
    "S": "a subset", "P": "reflection view",
}
SET_STEMS = frozenset({"set", "in", "card", "cards", "mem", "big", "imset", "sub", "subset"})

WORDS = {
    "trans": "transitivity", "sym": "symmetry", "refl": "reflexivity", "inj": "injectivity",
    "mono": "monotonicity", "morph": "morphism", "id": "identity", "idem": "idempotence",
    "eq0": "equal to zero", "gt0": "positive", "ge0": "nonnegative", "lt0": "negative",
    "eq1": "equal to one", "gt1": "greater than one", "le": "at most", "lt": "less than",
    "ge": "at least", "gt": "greater than", "eqF": "different", "neq0": "nonzero",
    "add": "addition", "sub": "subtraction", "mul": "multiplication", "exp": "power",
    "div": "division", "mod": "modulo", "dvd": "divides", "gcd": "greatest common divisor",
    "lcm": "least common multiple", "max": "maximum", "min": "minimum", "pos": "positive",
    "neg": "negative", "def": "definition", "spec": "case analysis", "case": "case analysis",
    "ind": "induction", "rect": "recursion", "rec": "recursion", "cond": "conditional",
    "small": "small argument", "mull": "multiple on the left", "mulr": "multiple on the right",
    "addl": "added on the left", "addr": "added on the right", "pred": "predicate",
    "nth": "nth element", "elim": "induction principle", "anti": "antisymmetry",
    "total": "totality", "contra": "contraposition", "cancel": "cancellation", "in": "membership",
    "uniq": "no duplicates", "sorted": "sorted", "perm": "permutation", "iota": "range",
    "leqif": "inequality with equality condition", "sqr": "square", "bigcup": "big union",
    "xx": "with itself", "mem": "membership", "cardE": "cardinality",
}

NOTATIONS = (
    ("<->", "equivalence"), ("->", ""), ("<-", ""), (":=", ""),
    ("%[mod", "congruence modulo"), ("%|", "divides"), ("%%", "remainder"),
    ("%/", "quotient"), (":|:", "union"), (":&:", "intersection"), (":\\:", "difference"),
    ("~:", "complement"), ("\\subset", "inclusion"), ("\\proper", "strict inclusion"),
    ("\\in", "membership"), ("\\notin", "not a member"), ("\\sum", "sum over a range"),
    ("\\prod", "product over a range"), ("\\big", "iterated operation"),
    ("\\bigcup", "union of a family"), ("\\bigcap", "intersection of a family"),
    ("\\max", "maximum over a range"), ("#|", "cardinality"), ("++", "concatenation"),
    ("::", "cons"), ("`!", "factorial"), (".+1", "successor"), (".-1", "predecessor"),
    (".*2", "double"), ("./2", "half"), ("==>", "implication"),
    ("&&", "conjunction"), ("||", "disjunction"), ("~~", "negation"), ("!=", "different"),
    ("==", "equal"),
    ("<=", "at most"), (">=", "at least"), ("^", "power"), ("[seq", "sequence comprehension"),
    ("[set", "set comprehension"), ("[pred", "predicate"), ("[tuple", "tuple"),
    ("[ffun", "finite function"), ("reflect", "reflects"), ("exists", "there exists"),
    ("forall", "for all"), ("+", "sum"), ("*", "product"), ("-", "difference"),
    ("<", "less than"), (">", "greater than"),
)
# fmt: on

MAX_SUFFIX = 4
"""Longer tails are words (`nonPropType`), not convention suffixes (`Dml`, `CA`, `KV`)."""
_PART = re.compile(r"^(?P<stem>[a-z][a-z']*?)(?P<suffix>[A-Z0-9][A-Za-z0-9]*)?$")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9']*")


@dataclass(frozen=True)
class NamePart:
    """One underscore-separated part of a name, in words."""

    written: str
    topic: str
    """What it is about (`remainder of division`), or the part as it is written."""
    detail: str | None = None
    """A property (`associativity`) or an operand (`a sum`) its suffix names."""
    operand: bool = False
    """Whether `detail` is an operand (`of a sum`) rather than a property."""

    @property
    def words(self) -> str:
        if not self.detail:
            return self.topic
        return f"{self.topic} of {self.detail}" if self.operand else f"{self.topic}, {self.detail}"


def name_parts(name: str) -> list[NamePart]:
    """A short name cut at underscores, each part glossed by the naming conventions (an
    operation named with underscores, `perm_eq`, stays one part)."""
    pieces = [piece for piece in name.rsplit(".", 1)[-1].split("_") if piece]
    parts, i = [], 0
    while i < len(pieces):
        j = next(
            (j for j in range(len(pieces), i + 1, -1) if "_".join(pieces[i:j]) in OPERATIONS),
            i + 1,
        )
        parts.append(_part("_".join(pieces[i:j])))
        i = j
    return parts


def _part(part: str) -> NamePart:
    if part in OPERATIONS or part in WORDS:
        return NamePart(part, OPERATIONS.get(part) or WORDS[part])
    for stem in (part[:-1], part[:-2]):  # `leqnn`, `subnn`: an operation with itself
        if part.endswith("nn") and stem in OPERATIONS:
            return NamePart(part, OPERATIONS[stem], "a number with itself", True)
    for end in range(len(part) - 1, 2, -1):  # a known operation, then its suffix
        if part[:end] in OPERATIONS and re.match(r"[A-Z0-9]", part[end]):
            return _suffixed(part, part[:end], OPERATIONS[part[:end]], part[end:], False)
    match = _PART.match(part)
    if match is None or not match["suffix"] or len(match["suffix"]) > MAX_SUFFIX:
        return NamePart(part, " ".join(split_identifier(part)))
    stem, suffix = match["stem"], match["suffix"]
    # `add0n`, `mulSn`: the operand sits between the stem and the type letter.
    tail = re.sub(r"^[A-Z0-9]+", "", suffix)
    topic = OPERATIONS.get(stem) or OPERATIONS.get(stem + tail) or WORDS.get(stem) or stem
    return _suffixed(part, stem, topic, suffix, stem in SET_STEMS)


def _suffixed(part: str, stem: str, topic: str, suffix: str, set_operands: bool) -> NamePart:
    """A part whose suffix names operands or properties; sets read `U` as a union first."""
    tail = re.sub(r"^[A-Z0-9]+", "", suffix)
    letters = suffix[: len(suffix) - len(tail)]
    side = {"l": " on the left", "r": " on the right"}.get(tail, "")
    setlike = set_operands or stem in SET_STEMS or stem.startswith("set")
    operands = SET_OPERANDS if setlike else STEM_OPERANDS
    tables = [(operands, True), (STEM_PROPERTIES, False)]
    for table, operand in tables if set_operands else tables[::-1]:
        found = table.get(suffix) or table.get(letters)
        if found:
            return NamePart(part, topic, found + side, operand)
    details = [operands.get(c) or STEM_PROPERTIES.get(c) for c in letters]
    known = [d for d in details if d]
    return NamePart(part, topic, " and ".join(known) + side if known else None, bool(known))


def split_identifier(identifier: str) -> list[str]:
    """An identifier's words: cut at underscores, dots, digits and lower-to-upper changes."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", identifier.replace("_", " ").replace(".", " "))
    return [w.lower() for w in re.findall(r"[A-Za-z]+|\d+", spaced)]


def notation_words(statement: str) -> list[str]:
    """The notions a statement's notations, then its known identifiers, name (once each);
    longer symbols are read first, so `<=` is not also `<`."""
    found: dict[str, None] = {}
    rest = statement
    for symbol, words in NOTATIONS:
        if symbol.isalpha():
            if re.search(rf"(?<![\w']){re.escape(symbol)}(?![\w'])", rest):
                found.setdefault(words)
        elif symbol in rest:
            if words:
                found.setdefault(words)
            rest = rest.replace(symbol, " ")
    for word in _WORD.findall(statement):
        gloss = OPERATIONS.get(word)
        if gloss:
            found.setdefault(gloss)
    return list(found)
