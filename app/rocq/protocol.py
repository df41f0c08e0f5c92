"""coqidetop's XML protocol as lookup tables: tag → decoder, Python type → encoder.

The wire types (state ids, unions, options, records) stay private to this module: callers get
`Ok`/`Err` results holding plain values and `goals` dataclasses. Differences between Rocq
versions live here too, as small `Protocol` subclasses chosen from `_VERSIONS`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from app.rocq.goals import Goal, Goals, Hypothesis

# XML prologue that makes coqidetop's output one parseable document: a root element around the
# stream of answers, and the HTML `&nbsp;` entity (not XML) that its pretty-printer emits.
STREAM_PROLOGUE = b'<!DOCTYPE coq [<!ENTITY nbsp " ">]><coqtoproot>'


# --- Results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    """An out-of-band message (other feedback kinds are dropped), located in bytes."""

    state_id: int
    route: int
    level: str
    text: str
    span: tuple[int, int] | None
    """Byte offsets relative to the text sent with Add or Query, when Rocq gives them."""


@dataclass(frozen=True)
class Ok:
    """A call that succeeded, with its normalised value and the messages that came with it."""

    value: Any
    messages: tuple[Feedback, ...] = ()


@dataclass(frozen=True)
class Err:
    """A call that failed: Rocq's message, byte offsets, and the last good state id."""

    message: str
    span: tuple[int, int] | None
    state_id: int
    messages: tuple[Feedback, ...] = ()


@dataclass(frozen=True)
class Status:
    """Where the document is: module path and the open proof, if any."""

    path: tuple[str, ...]
    proof_name: str | None
    all_proofs: tuple[str, ...]


@dataclass(frozen=True)
class Added:
    """The answer to Add: the new state id, and the new tip when Add closed a focus."""

    state_id: int
    new_tip: int | None

    @property
    def tip(self) -> int:
        """The state id to add the next sentence after."""
        return self.state_id if self.new_tip is None else self.new_tip


# --- Wire types (private) --------------------------------------------------------------------


@dataclass(frozen=True)
class _StateId:
    id: int


@dataclass(frozen=True)
class _RouteId:
    id: int


@dataclass(frozen=True)
class _Inl:
    value: Any


@dataclass(frozen=True)
class _Inr:
    value: Any


@dataclass(frozen=True)
class _Some:
    value: Any


@dataclass(frozen=True)
class _Record:
    """A protocol record (`goal`, `goals`, `status`, …): its fields in wire order."""

    tag: str
    fields: tuple[Any, ...]


# --- Decoders: one per tag -------------------------------------------------------------------


def _decode(xml: Element) -> Any:
    """Decode any protocol value by its tag."""
    return _DECODERS.get(xml.tag, _decode_record)(xml)


def _decode_unit(_xml: Element) -> tuple[()]:
    """`<unit/>`"""
    return ()


def _decode_bool(xml: Element) -> bool:
    """`<bool val="true|false"/>`"""
    return xml.get("val") == "true"


def _decode_int(xml: Element) -> int:
    """`<int>N</int>`"""
    return int(xml.text or "0")


def _decode_text(xml: Element) -> str:
    """`<string>text</string>`, or a document the reader made plain text (`app.rocq.documents`):
    `<richpp>` as laid out, `<pptext>` on one line."""
    return "".join(xml.itertext())


def _decode_list(xml: Element) -> list[Any]:
    """`<list>v1 v2 …</list>`"""
    return [_decode(child) for child in xml]


def _decode_pair(xml: Element) -> tuple[Any, Any]:
    """`<pair>v1 v2</pair>`"""
    return _decode(xml[0]), _decode(xml[1])


def _decode_option(xml: Element) -> _Some | None:
    """`<option val="none"/>` or `<option val="some">v</option>`"""
    return _Some(_decode(xml[0])) if xml.get("val") == "some" else None


def _decode_union(xml: Element) -> _Inl | _Inr:
    """`<union val="in_l|in_r">v</union>`"""
    return (_Inl if xml.get("val") == "in_l" else _Inr)(_decode(xml[0]))


def _decode_state_id(xml: Element) -> _StateId:
    """`<state_id val="N"/>`"""
    return _StateId(int(xml.get("val", "0")))


def _decode_route_id(xml: Element) -> _RouteId:
    """`<route_id val="N"/>`"""
    return _RouteId(int(xml.get("val", "0")))


_hypothesis = functools.lru_cache(maxsize=1 << 16)(Hypothesis.parse)
"""A hypothesis from its display, parsed once: a state's context is mostly its predecessor's
(a proof's goals are fetched after each of its chains)."""


def _decode_goal(xml: Element) -> Goal:
    """`<goal><string>id</string><list>richpp…</list>richpp [option string]</goal>`

    The fourth field (the goal's user name) exists since 8.16's protocol.
    """
    hypotheses = tuple(_hypothesis(_decode_text(h)) for h in xml[1])
    name = _decode(xml[3]) if len(xml) > 3 else None
    return Goal(hypotheses, _decode_text(xml[2]), name.value if name else None)


def _decode_message(xml: Element) -> tuple[str, str, tuple[int, int] | None]:
    """`<message><message_level val="L"/><option>loc start stop</option> richpp</message>`"""
    level = xml[0].get("val", "notice")
    loc = xml[1][0] if len(xml) > 2 and len(xml[1]) else None
    span = None if loc is None else (int(loc.get("start", "0")), int(loc.get("stop", "0")))
    return level, _decode_text(xml[-1]), span


def _decode_record(xml: Element) -> _Record:
    """`<tag>field1 field2 …</tag>`: every other record (`goals`, `status`, `coq_info`)."""
    return _Record(xml.tag, tuple(_decode(child) for child in xml))


_DECODERS: dict[str, Callable[[Element], Any]] = {
    "unit": _decode_unit,
    "bool": _decode_bool,
    "int": _decode_int,
    "string": _decode_text,
    "richpp": _decode_text,
    "ppdoc": _decode_text,
    "list": _decode_list,
    "pair": _decode_pair,
    "option": _decode_option,
    "union": _decode_union,
    "state_id": _decode_state_id,
    "route_id": _decode_route_id,
    "goal": _decode_goal,
}


# --- Encoders: one per Python type -----------------------------------------------------------


def _encode(value: Any) -> str:
    """Encode a Python value as the protocol value of the matching type."""
    return _ENCODERS[type(value)](value)


def _encode_tuple(value: tuple[Any, ...]) -> str:
    """`()` → `<unit/>`, `(a, b)` → `<pair>a b</pair>`."""
    if not value:
        return "<unit/>"
    first, second = value
    return f"<pair>{_encode(first)}{_encode(second)}</pair>"


_ENCODERS: dict[type, Callable[[Any], str]] = {
    bool: lambda v: f'<bool val="{"true" if v else "false"}"/>',
    int: lambda v: f"<int>{v}</int>",
    str: lambda v: f"<string>{escape(v)}</string>",
    tuple: _encode_tuple,
    list: lambda v: f"<list>{''.join(_encode(x) for x in v)}</list>",
    type(None): lambda _v: '<option val="none"/>',
    _Some: lambda v: f'<option val="some">{_encode(v.value)}</option>',
    _StateId: lambda v: f'<state_id val="{v.id}"/>',
    _RouteId: lambda v: f'<route_id val="{v.id}"/>',
    _Inl: lambda v: f'<union val="in_l">{_encode(v.value)}</union>',
    _Inr: lambda v: f'<union val="in_r">{_encode(v.value)}</union>',
}


def _encode_record(value: _Record) -> str:
    """A record's fields in wire order: `<tag>field1 field2 …</tag>`."""
    return f"<{value.tag}>{''.join(_encode(field) for field in value.fields)}</{value.tag}>"


_ENCODERS[_Record] = _encode_record


def _call(command: str, argument: Any) -> bytes:
    """`<call val="Command">argument</call>`"""
    return f'<call val="{command}">{_encode(argument)}</call>'.encode()


# --- Normalisers: one per command, raw value → plain value -----------------------------------


def _normalise_state_id(value: _StateId) -> int:
    """Init: the initial state id."""
    return value.id


def _normalise_add(value: tuple[_StateId, _Inl | _Inr]) -> Added:
    """Add: `(state_id, in_l () | in_r tip)`."""
    state, tip = value
    return Added(state.id, tip.value.id if isinstance(tip, _Inr) else None)


def _normalise_goals(value: _Some | None) -> Goals:
    """Goal: `option goals`; the background zipper flattened to proof order."""
    if value is None:
        return Goals()
    foreground, background, shelved, given_up = value.value.fields
    before = [g for pair in background for g in pair[0]][::-1]
    after = [g for pair in background for g in pair[1]]
    return Goals(
        tuple(foreground), tuple(before + after), tuple(shelved), tuple(given_up), in_proof=True
    )


def _normalise_status(value: _Record) -> Status:
    """Status: `<status>(list string) (option string) (list string) int</status>`."""
    path, name, proofs, _proof_number = value.fields
    return Status(tuple(path), name.value if name else None, tuple(proofs))


def _ignore(_value: Any) -> None:
    """Edit_at, Query, Quit: nothing the session needs beyond success."""


_NORMALISERS: Mapping[str, Callable[[Any], Any]] = {
    "Init": _normalise_state_id,
    "Add": _normalise_add,
    "Goal": _normalise_goals,
    "Subgoals": _normalise_goals,
    "Status": _normalise_status,
    "Edit_at": _ignore,
    "Query": _ignore,
    "Quit": _ignore,
}


FLAT_PRINTING = ("--xml_format=Ppcmds",)
"""coqidetop's arguments to send texts as Pp documents, not laid out: richpp, its default,
cuts what is nested more than 50 boxes deep as `...` (a fixed limit, whatever `Set Printing
Depth` says), and such a text does not read back. Documents come back on one line."""


# --- Versions --------------------------------------------------------------------------------


class Protocol:
    """coqidetop's protocol as of 8.16.

    Another version subclasses it and overrides only what changed: launch arguments, call
    encodings, or the `normalisers` of answers.
    """

    launch_args: tuple[str, ...] = ("-main-channel", "stdfds", "-async-proofs", "off")
    idetop_names: tuple[str, ...] = ("coqidetop.opt", "coqidetop")
    """coqidetop's executable names, preferred first (Debian ships the native `.opt` one)."""
    core_prefix = "Coq"
    """The logical prefix of Rocq's own library (`coqc -where`/theories)."""
    normalisers: ClassVar[Mapping[str, Callable[[Any], Any]]] = _NORMALISERS

    def init(self) -> bytes:
        """Init with no script file: answers the initial state id."""
        return _call("Init", None)

    def add(self, text: str, state_id: int, byte_offset: int) -> bytes:
        """Add the first sentence of `text` after `state_id`, parsing only (no execution).

        `byte_offset` is where `text` starts in its document: Rocq adds it to the error
        offsets it reports, so they come back relative to the document.
        """
        sentence = (((text, -1), (_StateId(state_id), True)), byte_offset)
        return _call("Add", (sentence, (0, 0)))

    def edit_at(self, state_id: int) -> bytes:
        """Make `state_id` the tip, dropping the states after it."""
        return _call("Edit_at", _StateId(state_id))

    def goal(self) -> bytes:
        """The goals at the tip; executes pending sentences first."""
        return _call("Goal", ())

    def subgoals(self, focused_only: bool) -> bytes:
        """Less than `Goal` prints (`Subgoals`, in the protocol since 8.16): the focused goals
        whole, without the background, shelved and given-up ones that `Goal` prints with all
        their hypotheses too; or every goal with its conclusion only (short mode)."""
        mode, others = ("full", False) if focused_only else ("short", True)
        flags = (mode, True, others, others, others)  # mode, then fg, bg, shelved, given up
        return _call("Subgoals", _Record("goal_flags", flags))

    def status(self, force: bool = False) -> bytes:
        """Module path and open proof at the tip; executes pending sentences first."""
        return _call("Status", force)

    def query(self, text: str, state_id: int, route: int) -> bytes:
        """Run a query command at a state; answers come as feedback on `route`."""
        return _call("Query", (_RouteId(route), (text, _StateId(state_id))))

    def quit(self) -> bytes:
        """Ask coqidetop to exit."""
        return _call("Quit", ())

    def response(self, command: str, xml: Element, messages: tuple[Feedback, ...]) -> Ok | Err:
        """Decode `<value val="good">v</value>` or `<value val="fail" loc_s loc_e>sid pp</value>`.

        Error messages also come as error feedback; those duplicates are dropped.
        """
        if xml.get("val") == "good":
            return Ok(self.normalisers[command](_decode(xml[0])), messages)
        start, end = xml.get("loc_s"), xml.get("loc_e")
        span = None if start is None or end is None else (int(start), int(end))
        kept = tuple(m for m in messages if m.level != "error")
        return Err(_decode_text(xml[1]).strip(), span, _decode(xml[0]).id, kept)

    def feedback(self, xml: Element) -> Feedback | None:
        """Decode `<feedback object route><state_id/><feedback_content val="message">message`.

        Other feedback (processed, fileloaded, …) is dropped early: it is most of the traffic.
        """
        content = xml[1]
        if content.get("val") != "message":
            return None
        state = xml[0]
        state_id = int(state.get("val", "0")) if state.tag == "state_id" else 0
        return Feedback(state_id, int(xml.get("route", "0")), *_decode_message(content[0]))


class Protocol816(Protocol):
    """coqidetop 8.16 (protocol 20220205): the reference version."""


class Protocol820(Protocol816):
    """coqidetop 8.17 to 8.20: the calls, encodings and richpp of 8.16 (measured on 8.20.1:
    MathComp 2.3 replayed with goals after every sentence), but a failure carries its location
    as an optional `loc` element instead of `loc_s`/`loc_e` attributes."""

    def response(self, command: str, xml: Element, messages: tuple[Feedback, ...]) -> Ok | Err:
        """Decode `<value val="good">v</value>` or
        `<value val="fail">sid <option>loc start stop</option> pp</value>`."""
        if xml.get("val") == "good":
            return super().response(command, xml, messages)
        loc = xml[1][0] if xml[1].tag == "option" and len(xml[1]) else None
        span = None if loc is None else (int(loc.get("start", "0")), int(loc.get("stop", "0")))
        kept = tuple(m for m in messages if m.level != "error")
        return Err(_decode_text(xml[-1]).strip(), span, _decode(xml[0]).id, kept)


class Protocol9(Protocol820):
    """Rocq 9: the XML protocol of 8.20, but only a `coqidetop` executable (no `.opt`), and its
    own library is `Corelib` (`Coq` is a deprecated alias of it)."""

    idetop_names = ("coqidetop", "coqidetop.opt")
    core_prefix = "Corelib"


# (min version, max version, class): the first row containing the running version wins.
_VERSIONS: tuple[tuple[tuple[int, ...], tuple[int, ...], type[Protocol]], ...] = (
    ((8, 16), (8, 16, 99), Protocol816),
    ((8, 17), (8, 20, 99), Protocol820),
    ((9, 0), (9, 99, 99), Protocol9),
)


class UnsupportedVersion(Exception):
    """coqidetop's version has no protocol class."""


def protocol_for(version: str) -> Protocol:
    """The protocol class for a version string such as `8.16.1`."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    for low, high, cls in _VERSIONS:
        if low <= numbers <= high:
            return cls()
    raise UnsupportedVersion(f"no XML protocol for coqidetop {version}")
