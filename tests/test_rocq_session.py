# ruff: noqa: RUF001  (Greek letters on purpose: Rocq counts bytes, Python characters)
"""The coqidetop session against the machine's coqidetop and its MathComp's div.v.

One session serves most tests (opening div.v costs a fraction of a second); the tests that
break the process (timeout, kill -9, a frozen process) check that it serves the next call.
The same layer on the other toolchains, with Stdlib files: `test_rocq_toolchains.py`.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.rocq.documents import PlainDocuments
from app.rocq.goals import Goals, Hypothesis
from app.rocq.positions import Position, SourceText
from app.rocq.protocol import (
    STREAM_PROLOGUE,
    Added,
    Err,
    Ok,
    Protocol9,
    Protocol816,
    Protocol820,
    Status,
    UnsupportedVersion,
    protocol_for,
)
from app.rocq.sentences import split_sentences
from app.rocq.session import RocqSession
from app.rocq.state import RocqCrashed, RocqError, RocqSessionError, RocqTimeout, State
from app.rocq.toolchain import Toolchain
from tests.toolchains import LOOP, timed_sentences

EDIVN_EQ_TACTIC = "move=> lt_rd; have d_gt0: 0 < d by apply: leq_trans lt_rd."


@pytest.fixture(scope="module")
def div_copy(tmp_path_factory: pytest.TempPathFactory, mathcomp_dir: Path) -> Path:
    """A copy of div.v in a library tree of its own (its dependencies stay installed)."""
    root = tmp_path_factory.mktemp("lib")
    (root / "ssreflect").mkdir()
    shutil.copy(mathcomp_dir / "ssreflect" / "div.v", root / "ssreflect" / "div.v")
    return root


@pytest.fixture(scope="module")
def session(div_copy: Path, toolchain: Toolchain) -> Iterator[RocqSession]:
    with RocqSession(timeout=40, toolchain=toolchain) as rocq:
        rocq.start(div_copy / "ssreflect" / "div.v", [(str(div_copy), "mathcomp")])
        yield rocq


# --- Captured XML (coqidetop 8.16.1, -topfile …/ssreflect/div.v) -----------------------------

GOAL_WITH_DEFINITION = (
    '<value val="good"><option val="some"><goals><list><goal><string>6</string><list>'
    "<richpp><_><pp>n&nbsp;:&nbsp;<constr.variable>nat</constr.variable></pp></_></richpp>"
    "<richpp><_><pp>h&nbsp;:&nbsp;<constr.variable>n</constr.variable><constr.notation>&nbsp;="
    "</constr.notation>&nbsp;2</pp></_></richpp>"
    "<richpp><_><pp>f&nbsp;:=&nbsp;<constr.keyword>fun</constr.keyword>&nbsp;x&nbsp;:&nbsp;"
    "<constr.variable>nat</constr.variable>&nbsp;=&gt;&nbsp;<constr.variable>x</constr.variable>"
    "<constr.notation>&nbsp;+</constr.notation>&nbsp;1&nbsp;:&nbsp;<constr.variable>nat"
    "</constr.variable><constr.notation>&nbsp;-&gt;</constr.notation>&nbsp;<constr.variable>nat"
    "</constr.variable></pp></_></richpp></list>"
    "<richpp><_><pp><constr.variable>n</constr.variable><constr.notation>&nbsp;+</constr.notation>"
    "&nbsp;0<constr.notation>&nbsp;=</constr.notation>&nbsp;2<constr.notation>&nbsp;/\\"
    "</constr.notation>&nbsp;<constr.variable>True</constr.variable></pp></_></richpp>"
    '<option val="none"/></goal></list><list/><list/><list/></goals></option></value>'
)
ERROR_FEEDBACK_AND_FAIL = (
    '<feedback object="state" route="0"><state_id val="5"/><feedback_content val="message">'
    '<message><message_level val="error"/><option val="some"><loc start="14" stop="16"/></option>'
    "<richpp><_><pp>The&nbsp;reference&nbsp;α&nbsp;was&nbsp;not&nbsp;found&nbsp;in&nbsp;the&nbsp;"
    "current&nbsp;environment.</pp></_></richpp></message></feedback_content></feedback>"
    '<value val="fail" loc_s="14" loc_e="16"><state_id val="4"/><richpp><_><pp>The&nbsp;reference'
    "&nbsp;α&nbsp;was&nbsp;not&nbsp;found&nbsp;in&nbsp;the&nbsp;current&nbsp;environment.</pp></_>"
    "</richpp></value>"
)
FAIL_820 = (  # coqidetop 8.20.1: the location moved into the value, as an optional `loc`
    '<value val="fail"><state_id val="2"/><option val="some"><loc line_nb="0" bol_pos="0" '
    'line_nb_last="0" bol_pos_last="0" start="8" stop="15"/></option><richpp><_><pp>The&nbsp;'
    "variable&nbsp;foo_bar&nbsp;was&nbsp;not&nbsp;found&nbsp;in&nbsp;the&nbsp;current&nbsp;"
    "environment.</pp></_></richpp></value>"
)
QUERY_FEEDBACK = (
    '<feedback object="state" route="3"><state_id val="4"/><feedback_content val="message">'
    '<message><message_level val="notice"/><option val="none"/><richpp><_><pp>0\n'
    "&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;:&nbsp;<constr.variable>nat</constr.variable></pp></_></richpp>"
    "</message></feedback_content></feedback>"
)
STATUS = (
    '<value val="good"><status><list><string>mathcomp</string><string>ssreflect</string>'
    '<string>div</string></list><option val="some"><string>foo</string></option><list>'
    "<string>foo</string></list><int>0</int></status></value>"
)
ADD = '<value val="good"><pair><state_id val="3"/><union val="in_l"><unit/></union></pair></value>'
GOAL_FLAT = (  # coqidetop 8.16.1, `FLAT_PRINTING` (Pp documents); a break made a newline
    '<value val="good"><option val="some"><goals><list><goal><string>7</string><list>'
    '<ppdoc val="box"><pair><ppbox val="hovbox"><int>0</int></ppbox><ppdoc val="glue"><list>'
    '<ppdoc val="glue"><list><ppdoc val="string"><string>n</string></ppdoc><ppdoc val="string">'
    '<string>,</string></ppdoc><ppdoc val="break"><pair><int>1</int><int>0</int></pair></ppdoc>'
    '</list></ppdoc><ppdoc val="string"><string>m</string></ppdoc><ppdoc val="string"><string>'
    '&nbsp;:&nbsp;</string></ppdoc><ppdoc val="tag"><pair><string>constr.variable</string>'
    '<ppdoc val="string"><string>nat</string></ppdoc></pair></ppdoc></list></ppdoc></pair>'
    '</ppdoc></list><ppdoc val="box"><pair><ppbox val="hovbox"><int>0</int></ppbox><ppdoc '
    'val="glue"><list><ppdoc val="tag"><pair><string>constr.variable</string><ppdoc val="string">'
    '<string>n</string></ppdoc></pair></ppdoc><ppdoc val="tag"><pair><string>constr.notation'
    '</string><ppdoc val="string"><string>&nbsp;=</string></ppdoc></pair></ppdoc><ppdoc '
    'val="newline"/><ppdoc val="tag"><pair><string>constr.variable</string><ppdoc '
    'val="string"><string>n</string></ppdoc></pair></ppdoc></list></ppdoc></pair></ppdoc>'
    '<option val="none"/></goal></list><list/><list/><list/></goals></option></value>'
)


def _elements(xml: str) -> list[ET.Element]:
    """Top-level elements of captured output, parsed as the session parses the stream."""
    return list(ET.fromstring(STREAM_PROLOGUE + xml.encode() + b"</coqtoproot>"))


def _plain_elements(xml: str, chunk: int) -> list[ET.Element]:
    """Top-level elements of captured output read as the session reads it: in chunks of
    `chunk` bytes, its printed documents made plain text first."""
    data, documents = xml.encode(), PlainDocuments()
    plain = b"".join(documents.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return list(ET.fromstring(STREAM_PROLOGUE + plain + b"</coqtoproot>"))


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_printed_documents_are_read_as_their_text_in_any_chunks(chunk: int) -> None:
    """Whatever the chunks the output comes in, a document cut between them included, the
    answers decode as from the XML itself: laid out documents as their text, Pp documents on
    one line (breaks and newlines as spaces, tags' names left out)."""
    protocol = Protocol816()
    for command, xml in [("Goal", GOAL_WITH_DEFINITION), ("Status", STATUS), ("Add", ADD)]:
        [raw], [plain] = _elements(xml), _plain_elements(xml, chunk)
        assert protocol.response(command, plain, ()) == protocol.response(command, raw, ())
    feedback, fail = _plain_elements(ERROR_FEEDBACK_AND_FAIL, chunk)
    assert protocol.feedback(feedback) == protocol.feedback(_elements(ERROR_FEEDBACK_AND_FAIL)[0])
    assert protocol.response("Add", fail, ()) == protocol.response(
        "Add", _elements(ERROR_FEEDBACK_AND_FAIL)[1], ()
    )
    [query] = _plain_elements(QUERY_FEEDBACK, chunk)
    assert protocol.feedback(query) == protocol.feedback(_elements(QUERY_FEEDBACK)[0])
    [flat] = _plain_elements(GOAL_FLAT, chunk)
    answer = protocol.response("Goal", flat, ())
    assert isinstance(answer, Ok)
    [goal] = answer.value.foreground
    assert (goal.hypotheses, goal.conclusion) == ((Hypothesis(("n", "m"), None, "nat"),), "n = n")


def test_decode_goals_with_a_local_definition() -> None:
    [value] = _elements(GOAL_WITH_DEFINITION)
    answer = Protocol816().response("Goal", value, ())
    assert isinstance(answer, Ok)
    [goal] = answer.value.foreground
    assert goal.hypotheses == (
        Hypothesis(("n",), None, "nat"),
        Hypothesis(("h",), None, "n = 2"),
        Hypothesis(("f",), "fun x : nat => x + 1", "nat -> nat"),
    )
    assert goal.conclusion == "n + 0 = 2 /\\ True"
    assert goal.pretty.splitlines()[-2:] == ["============================", "n + 0 = 2 /\\ True"]


def test_decode_failure_keeps_offsets_and_last_good_state() -> None:
    feedback, value = _elements(ERROR_FEEDBACK_AND_FAIL)
    protocol = Protocol816()
    message = protocol.feedback(feedback)
    assert message is not None and (message.level, message.span) == ("error", (14, 16))
    answer = protocol.response("Goal", value, (message,))
    assert answer == Err("The reference α was not found in the current environment.", (14, 16), 4)


def test_decode_failure_of_8_20_keeps_message_and_offsets() -> None:
    [value] = _elements(FAIL_820)
    answer = Protocol820().response("Goal", value, ())
    assert answer == Err(
        "The variable foo_bar was not found in the current environment.", (8, 15), 2
    )


def test_decode_query_feedback_status_and_add() -> None:
    protocol = Protocol816()
    [query] = _elements(QUERY_FEEDBACK)
    message = protocol.feedback(query)
    assert message is not None and (message.route, message.state_id) == (3, 4)
    assert message.text == "0\n     : nat"
    status = protocol.response("Status", _elements(STATUS)[0], ())
    assert status == Ok(Status(("mathcomp", "ssreflect", "div"), "foo", ("foo",)))
    assert protocol.response("Add", _elements(ADD)[0], ()) == Ok(Added(3, None))


def test_encode_add_with_its_byte_offset() -> None:
    assert Protocol816().add("x < y.", 3, 7) == (
        b'<call val="Add"><pair><pair><pair><pair><string>x &lt; y.</string><int>-1</int></pair>'
        b'<pair><state_id val="3"/><bool val="true"/></pair></pair><int>7</int></pair>'
        b"<pair><int>0</int><int>0</int></pair></pair></call>"
    )


def test_protocol_versions_table() -> None:
    assert isinstance(protocol_for("8.16.1 4.13.1"), Protocol816)
    assert isinstance(protocol_for("8.20.1"), Protocol820)
    assert isinstance(protocol_for("9.2"), Protocol9)
    with pytest.raises(UnsupportedVersion):
        protocol_for("8.12.0")


def test_split_sentences_bullets_braces_comments_strings() -> None:
    text = (
        'Lemma x : "a. b" = "". (* c. "d. *)" (* e. *) *)\nProof.\n- by [].\n'
        "2: { idtac. }\n++ exact: (x, .., y).\n{ done. } Qed"
    )
    data = text.encode()
    got = [data[a:b].decode() for a, b in split_sentences(data)]
    assert got == [
        'Lemma x : "a. b" = "".', "Proof.", "-", "by [].", "2: {", "idtac.", "}",
        "++", "exact: (x, .., y).", "{", "done.", "}", "Qed",
    ]  # fmt: skip


# --- Session ---------------------------------------------------------------------------------


def test_theorem_start_gives_the_statement_goal(session: RocqSession) -> None:
    state = session.theorem_start("edivnP")
    [goal] = session.goals(state).foreground
    assert goal.hypotheses == (Hypothesis(("m", "d"), None, "nat"),)
    assert goal.conclusion == "edivn_spec m d (edivn m d)"
    assert not state.proof_finished


def test_qualified_name_and_hypothesis_with_body(session: RocqSession) -> None:
    state = session.theorem_start("mathcomp.ssreflect.div.edivnD")
    [goal] = session.goals(state).foreground
    assert goal.hypotheses[1] == Hypothesis(("offset",), "d <= m %% d + n %% d", "bool")
    located = session.query(state, "Locate edivn_eq.")  # defined by this session, not a .vo
    assert located == "Constant mathcomp.ssreflect.div.edivn_eq"


def test_run_tactics_structured_hypotheses(session: RocqSession) -> None:
    start = session.theorem_start("edivn_eq")
    state = session.run(start, EDIVN_EQ_TACTIC)
    [goal] = state.goals.foreground
    assert goal.hypotheses == (
        Hypothesis(("d", "q", "r"), None, "nat"),
        Hypothesis(("lt_rd",), None, "r < d"),
        Hypothesis(("d_gt0",), None, "0 < d"),
    )
    assert goal.conclusion == "edivn (q * d + r) d = (q, r)"
    assert state.steps == (EDIVN_EQ_TACTIC,)


def test_conclusions_only_then_whole_goals(session: RocqSession) -> None:
    """A run may fetch each goal's conclusion only; `goals` then fetches them whole, as a
    plain run gives them."""
    start = session.theorem_start("edivn_eq")
    light = session.run(start, EDIVN_EQ_TACTIC, conclusions_only=True)
    assert light.conclusions_only and light.goals is not None
    [goal] = light.goals.foreground
    assert goal.hypotheses == () and goal.conclusion == "edivn (q * d + r) d = (q, r)"
    whole = session.run(start, EDIVN_EQ_TACTIC)
    assert light == whole and not whole.conclusions_only
    assert session.goals(light) == whole.goals and whole.goals.foreground[0].hypotheses


def test_several_sentences_and_a_finished_proof(session: RocqSession) -> None:
    state = session.run(session.theorem_start("div0n"), "Proof. by case: d.")
    assert state.proof_finished and session.goals(state).pretty == "No more goals."
    assert not session.run(state, "Qed.").goals.in_proof


def test_backtracking_to_an_older_state(session: RocqSession) -> None:
    start = session.theorem_start("edivn_eq")
    first = session.run(start, EDIVN_EQ_TACTIC)
    second = session.run(first, "case: edivnP lt_rd => q' r'; rewrite d_gt0 /=.")
    other = session.run(first, "rewrite -[r]addn0.")
    assert "r + 0" in other.goals.foreground[0].conclusion
    again = session.run(first, "idtac.")
    assert again.goals == first.goals
    # `second` was dropped from coqidetop by the backtracking: it is replayed on demand.
    after_second = session.run(second, "idtac.")
    assert after_second.goals == second.goals != first.goals
    assert session.run(start, "idtac.").goals == start.goals


def test_going_back_and_forth_between_theorems(session: RocqSession) -> None:
    later = session.theorem_start("ltn_mod")
    earlier = session.theorem_start("edivnP")
    assert session.goals(earlier).foreground[0].conclusion == "edivn_spec m d (edivn m d)"
    assert session.run(later, "idtac.").goals.foreground[0].conclusion == "(m %% d < d) = (0 < d)"


def test_at_position_executes_the_prefix(session: RocqSession, div_copy: Path) -> None:
    file = div_copy / "ssreflect" / "div.v"
    source = SourceText(file.read_text())
    inside = source.position(source.text.index("rewrite -[m in edivn_spec m]"))
    state = session.at(file, inside)
    assert state.goals.foreground[0].conclusion == "edivn_spec m d (edivn m d)"
    assert session.at(file, Position(0, 0)).offset == 0


def test_failing_tactic_gives_message_and_location(session: RocqSession) -> None:
    start = session.theorem_start("edivnP")
    text = "idtac.\n  rewrite foo_bar."
    with pytest.raises(RocqError) as raised:
        session.run(start, text)
    error = raised.value
    assert "foo_bar" in error.message and "not found" in error.message
    assert error.location is not None
    assert text[error.location.start : error.location.end] == "foo_bar"
    assert session.run(start, "idtac.").goals == start.goals


def test_syntax_error_location(session: RocqSession) -> None:
    with pytest.raises(RocqError) as raised:
        session.run(session.theorem_start("edivnP"), "idtac. exact (.")
    assert raised.value.message.startswith("Syntax error")
    assert raised.value.location is not None and raised.value.location.start == 14


def test_non_ascii_locations_are_characters(session: RocqSession) -> None:
    start = session.theorem_start("edivnP")
    text = "(* ∑ α *) pose (β := 1).\n(* ⊗ *) exact: (β γ)."
    with pytest.raises(RocqError) as raised:
        session.run(start, text)
    location = raised.value.location
    assert location is not None and text[location.start : location.end] == "γ"
    assert text.encode()[location.byte_start : location.byte_end] == "γ".encode()
    assert location.byte_start > location.start
    state = session.run(start, "(* ∑ *) pose (β := 1).")
    assert state.goals.foreground[0].hypotheses[-1] == Hypothesis(("β",), "1", "nat")


def test_messages_of_run(session: RocqSession) -> None:
    state = session.run(session.theorem_start("edivnP"), "idtac. Check edivn.")
    assert [m.level for m in state.messages] == ["notice"]
    assert state.messages[0].text.startswith("edivn\n     : nat -> nat -> nat * nat")


def test_queries_return_text(session: RocqSession) -> None:
    state = session.theorem_start("ltn_mod")
    assert session.query(state, "Locate edivn.") == "Constant mathcomp.ssreflect.div.edivn"
    assert session.query(state, "Check divnMDl.").startswith("divnMDl\n     : forall q m d : nat")
    assert "Expands to: Constant mathcomp.ssreflect.div.modn" in session.query(state, "About modn.")
    printed = session.query(state, "Print divn.")
    assert printed.startswith("divn =") and "(edivn m d).1" in printed
    assert "modn_def:" in session.query(state, "Search modn edivn.")
    with pytest.raises(RocqError) as raised:
        session.query(state, "Check nope.")
    assert raised.value.location is not None and raised.value.location.start == 6


def test_timeout_interrupts_and_the_next_call_works(session: RocqSession) -> None:
    start = session.theorem_start("edivnP")
    pid, session.timeout = session.pid, 2.0
    try:
        begin = time.monotonic()
        with pytest.raises(RocqTimeout):
            session.run(start, LOOP)
        assert time.monotonic() - begin < 10
    finally:
        session.timeout = 40.0
    assert session.pid == pid  # the interrupt sufficed: no restart
    assert session.run(start, "idtac.").goals == start.goals


def test_frozen_process_is_killed_and_restarted(div_copy: Path, toolchain: Toolchain) -> None:
    with RocqSession(timeout=3.0, toolchain=toolchain, interrupt_grace=0.5) as rocq:
        rocq.start(div_copy / "ssreflect" / "div.v", [(str(div_copy), "mathcomp")])
        start = rocq.theorem_start("edivn_eq")
        frozen = rocq.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        with pytest.raises(RocqTimeout):
            rocq.run(start, "idtac.")
        assert rocq.pid != frozen
        assert rocq.run(start, EDIVN_EQ_TACTIC).goals.foreground[0].hypotheses[-1].names == (
            "d_gt0",
        )


def test_kill_9_raises_then_the_next_call_works(session: RocqSession) -> None:
    start = session.theorem_start("edivn_eq")
    state = session.run(start, EDIVN_EQ_TACTIC)
    pid = session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RocqCrashed) as raised:
        session.run(state, "idtac.")
    assert isinstance(raised.value, RocqSessionError)
    assert session.run(state, "idtac.").goals == state.goals
    assert session.pid != pid


def test_states_are_values(session: RocqSession) -> None:
    start = session.theorem_start("edivnP")
    made = State(start.file, start.offset, ("idtac.",))
    assert session.run(start, "idtac.") == made
    assert session.goals(made) == start.goals  # a state built by hand is executed to get goals
    assert session.goals(State(start.file, 0)) == Goals()


def test_sentences_match_coqc_time(div_copy: Path, toolchain: Toolchain) -> None:
    """Texts are split before `Add` (it parses one sentence): the split must be Rocq's."""
    div = div_copy / "ssreflect" / "div.v"
    timed = timed_sentences(toolchain, div, "-R", str(div_copy), "mathcomp")
    source = SourceText(div.read_text())
    assert len(timed) > 100
    assert split_sentences(source.data) == [(s.byte_start, s.byte_end) for s in timed]
