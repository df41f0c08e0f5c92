"""The session stays paired with coqidetop whatever a call is given (real coqidetop)."""

from __future__ import annotations

from pathlib import Path

from app.rocq.session import RocqSession

SCRIPT = "Lemma two : 1 + 1 = 2.\nProof.\nsimpl.\nreflexivity.\nQed.\n"


def test_a_timeout_beyond_what_poll_accepts_still_waits_for_the_answer(tmp_path: Path) -> None:
    # 600 s per sentence for a long text once gave `poll` more than its 24 days: the call
    # failed after it was sent, and the next answers were read for the wrong calls.
    source = tmp_path / "two.v"
    source.write_text(SCRIPT)
    with RocqSession(timeout=1e10) as rocq:
        start = rocq.start(source)
        state = rocq.run(start, "Lemma two : 1 + 1 = 2.")
        assert [goal.conclusion for goal in rocq.goals(state).foreground] == ["1 + 1 = 2"]
        state = rocq.run(state, "simpl.")
        assert [goal.conclusion for goal in rocq.goals(state).foreground] == ["2 = 2"]
        assert rocq.run(state, "reflexivity.").proof_finished
