"""`rocqcot run` end to end on the small `demo` library of the step-4 tests (every step, real
Rocq, PostgreSQL and embeddings, the offline writers), `rocqcot verify` on its dataset and on
altered copies, a second run that does nothing, a run killed at several points that finishes
with the same dataset; and (slow) the default run on MathComp's ssreflect part."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from app.cot import Block
from app.db import engine as db
from app.db.models import Cot, Theorem
from app.exports.examples import TrainingExample
from app.exports.turns import user_turn
from app.split import Marked
from tests import original_readers
from tests.conftest import _clear_engine_caches
from tests.test_step_4 import make_demo

ARGS = ("--prefix", "demo", "--k-have", "4", "--k-wo-have", "1", "--no-progress")
DATASET = Path("export/dataset/train.jsonl")


@dataclass(frozen=True)
class Workspace:
    """A folder to run in (the export goes to its `export/`) and its database."""

    root: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app", *args]

    def rocqcot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip

    def run(self, library: Path) -> subprocess.CompletedProcess[str]:
        return self.rocqcot("run", "--input", str(library), *ARGS)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "in")


@pytest.fixture(scope="module")
def new_workspace(pg_server, tmp_path_factory: pytest.TempPathFactory):
    """Makes fresh databases and folders (module-scoped: `database_url` is per test)."""
    names = []

    def make() -> Workspace:
        name = f"test_run_{uuid.uuid4().hex[:10]}"
        pg_server.psql(f"CREATE DATABASE {name};")
        names.append(name)
        env = dict(os.environ, DATABASE_URL=pg_server.get_uri(database=name, driver="psycopg"))
        env |= {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"}
        return Workspace(tmp_path_factory.mktemp("run"), env)

    yield make
    for name in names:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture(scope="module")
def done(new_workspace, library: Path) -> Workspace:
    """A workspace where `rocqcot run` went through once."""
    place = new_workspace()
    first = place.run(library)
    assert first.returncode == 0, first.stdout + first.stderr
    return place


@pytest.fixture
def connected(done: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """This process on the done workspace's database too."""
    monkeypatch.setenv("DATABASE_URL", done.env["DATABASE_URL"])
    _clear_engine_caches()
    yield done
    db.engine().dispose()
    _clear_engine_caches()


def test_the_main_job_makes_a_verified_chat_dataset(done: Workspace) -> None:
    dataset = done.root / DATASET
    lines = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert lines and all(line["messages"][2]["role"] == "assistant" for line in lines)
    assert (dataset.parent / "train_card.md").exists()
    assert (dataset.parent / "proof_lengths.png").exists()
    report = json.loads((dataset.parent / "train_verify.json").read_text())
    assert report["examples"] == len(lines) and report["failures"] == []
    import datasets  # a test requirement (pyproject's `test` extra): missing, the test fails

    loaded = datasets.load_dataset(
        "json", data_files=str(dataset), split="train", cache_dir=str(done.root / "hf")
    )
    assert loaded.num_rows == len(lines)


def test_a_second_run_does_no_work_already_done(done: Workspace, library: Path) -> None:
    before = (done.root / DATASET).read_bytes()
    again = done.run(library)
    assert again.returncode == 0, again.stdout + again.stderr
    for line in ("demo unchanged", "0 files extracted", "0 theorems done", "unchanged (same",
                 "evaluated 0 now", "0 chains of thought written", "0 searched",
                 "0 blocks chosen", "step 9: nothing to judge", "0 CoTs split now",
                 "unchanged since its last verification", " 0 failures"):  # fmt: skip
        assert line in again.stdout, again.stdout
    assert (done.root / DATASET).read_bytes() == before


def example_file(place: Workspace, name: str, examples: list[TrainingExample]) -> Path:
    path = place.root / name
    path.write_text("".join(json.dumps(e.to_json()) + "\n" for e in examples))
    return path


def cot_of(fqn: str) -> TrainingExample:
    """A theorem's CoT as written by step 5 (kept or not), as one example."""
    with db.session_factory()() as session:
        blocks = session.execute(
            sa.select(Cot.blocks).join(Theorem, Theorem.id == Cot.theorem_id)
            .where(Theorem.fqn == fqn)
        ).scalar_one()  # fmt: skip
    marked = tuple(Marked(Block.from_json(block), False) for block in blocks)
    return TrainingExample(fqn, 0, "", "offline", marked)


def test_verify_replays_haves_with_their_proofs(connected: Workspace) -> None:
    names = ["demo.proofs.dk_pos", "demo.proofs.branchy", "demo.proofs.anon",
             "demo.proofs.split_me", "demo.proofs.dk_pos_have_1"]  # fmt: skip
    cots = [cot_of(name) for name in names]
    assert all(any(m.block.kind == "have" for m in cot.blocks) for cot in cots[:4])
    path = example_file(connected, "haves.jsonl", cots)
    result = connected.rocqcot("verify", "--input", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 examples of 5 theorems checked and replayed in Rocq" in result.stdout
    assert " 0 failures" in result.stdout


def test_verify_reports_what_does_not_recheck(connected: Workspace) -> None:
    anon, dk_pos, branchy = (cot_of(f"demo.proofs.{n}") for n in ("anon", "dk_pos", "branchy"))
    wrong = list(anon.blocks)
    first = next(i for i, m in enumerate(wrong) if m.block.kind == "script")
    wrong[first] = Marked(Block("script", "rewrite nosuchlemma."), False)
    last = max(i for i, m in enumerate(dk_pos.blocks) if m.block.kind == "script")
    swapped = tuple(reversed([m for m in branchy.blocks if m.block.kind in ("script", "have")]))
    unnamed = Marked(Block("script", "try exact never_named_xyz."), False)  # Rocq runs it
    bullets = cot_of("demo.proofs.bullets").blocks
    split_me = [
        Marked(Block("have", "have h : n <= n."), False) if m.block.kind == "have" else m
        for m in cot_of("demo.proofs.split_me").blocks
    ]
    examples = [
        TrainingExample(anon.name, 0, "", "", tuple(wrong)),
        TrainingExample(dk_pos.name, 0, "", "", dk_pos.blocks[:last]),  # its end is missing
        TrainingExample(branchy.name, 0, "", "", swapped),
        TrainingExample("demo.proofs.split_me", 0, "", "", tuple(split_me)),
        TrainingExample("demo.proofs.bullets", 0, "", "", cot_of("demo.proofs.bullets").blocks),
        TrainingExample("demo.proofs.no_such", 0, "", "", anon.blocks),
        TrainingExample("demo.proofs.bullets", 1, "", "", (unnamed, *bullets)),  # replays
    ]
    path = example_file(connected, "bad.jsonl", examples)
    result = connected.rocqcot("verify", "--input", str(path))
    assert result.returncode == 1 and "6 examples do not re-check" in result.stderr
    report = json.loads(path.with_name("bad_verify.json").read_text())
    # One reason an example: a replay that fails says more than the identifier check, which
    # also flags `nosuchlemma` (anon) and `e` (branchy, its haves swapped away); an example
    # that replays fails on a name nothing introduces.
    failures = {(f["name"].rpartition(".")[2], f["index"]): f["reason"] for f in report["failures"]}
    assert len(failures) == len(report["failures"])
    assert failures[("bullets", 1)] == (
        "script block 1 uses `never_named_xyz`, which nothing before it introduces"
    )
    reasons = {name: reason for (name, index), reason in failures.items() if index == 0}
    assert set(reasons) == {"anon", "dk_pos", "branchy", "split_me", "no_such"}
    assert reasons["anon"].startswith("code block 1 `rewrite nosuchlemma.`: ")
    assert reasons["dk_pos"] == "goals remain after the last code block"
    assert reasons["branchy"].startswith("code block 1 `by rewrite e.`: ")
    assert reasons["split_me"].startswith("have block 2 `have h : n <= n.` is not one of")
    assert reasons["no_such"] == "no such theorem in the database"


def test_verify_runs_only_tactics_from_a_dataset(connected: Workspace) -> None:
    """Every hostile script of `tests/test_tactics.py` replaces the first script of a CoT that
    re-checks: each example fails with the refusal as its reason, and nothing ran (no file
    written, though the commands would write one in the working folder)."""
    from tests.test_tactics import HOSTILE

    anon = cot_of("demo.proofs.anon")
    first = next(i for i, m in enumerate(anon.blocks) if m.block.kind == "script")
    examples = []
    for index, script in enumerate(HOSTILE):
        blocks = list(anon.blocks)
        blocks[first] = Marked(Block("script", script.replace('"out"', f'"out{index}"')), False)
        examples.append(TrainingExample(anon.name, index, "", "", tuple(blocks)))
    path = example_file(connected, "hostile.jsonl", [*examples, anon])
    result = connected.rocqcot("verify", "--input", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{len(HOSTILE)} examples do not re-check" in result.stderr
    report = json.loads(path.with_name("hostile_verify.json").read_text())
    reasons = {failure["index"]: failure["reason"] for failure in report["failures"]}
    assert set(reasons) == set(range(len(HOSTILE)))
    number = sum(m.block.kind in ("script", "have") for m in anon.blocks[: first + 1])
    for index, expected in enumerate(HOSTILE.values()):
        assert reasons[index].startswith(f"script block {number}: sentence "), reasons[index]
        assert expected in reasons[index]
    assert not list(connected.root.glob("out*")), "a vernacular command ran"


def run_until(place: Workspace, args: tuple[str, ...], marker: str, after: float = 0.0) -> None:
    """Start `rocqcot run`, kill it (and its Rocq processes) `after` seconds after `marker` is
    printed (an empty marker: after the start)."""
    process = subprocess.Popen(
        place.command("run", *args), cwd=place.root, env=place.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 900
    if marker:
        for line in process.stdout:
            if marker in line or time.monotonic() > deadline:
                break
    time.sleep(after)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_killed_run_finishes_with_the_same_dataset(
    done: Workspace, new_workspace, library: Path
) -> None:
    place = new_workspace()
    for marker in ("step 1:", "step 3:", "step 6:", "step 8:"):
        run_until(place, ("--input", str(library), *ARGS), marker)
    final = place.run(library)
    assert final.returncode == 0, final.stdout + final.stderr
    assert (place.root / DATASET).read_bytes() == (done.root / DATASET).read_bytes()


@pytest.mark.slow
def test_the_default_run_on_mathcomp_ssreflect(
    new_workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run: every example passes the identifier check and replays, and every
    step's seed export loads in the original formats' readers."""
    place = new_workspace()
    started = time.monotonic()
    result = place.rocqcot("run", "--no-progress")
    print(result.stdout, f"\n{time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout and "left out" not in result.stdout
    card = yaml.safe_load(
        (place.root / DATASET).with_name("train_card.md").read_text().split("---")[1]
    )
    assert card["export"]["left_out"] == {}
    monkeypatch.chdir(place.root)
    check_seed_exports(place)
    import datasets  # a test requirement (pyproject's `test` extra): missing, the test fails

    loaded = datasets.load_dataset(
        "json", data_files=str(place.root / DATASET), split="train",
        cache_dir=str(place.root / "hf"),
    )  # fmt: skip
    assert loaded.num_rows > 0


@pytest.mark.slow
def test_the_default_run_on_the_other_release(new_workspace, other_toolchain) -> None:
    """The main job on the other Debian release's toolchain (its MathComp's ssreflect part):
    it finishes, and every exported example replays."""
    place = new_workspace()
    bin_dir = str(other_toolchain.bin_dir)
    result = place.rocqcot("run", "--no-progress", "--rocq-bin", bin_dir)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"toolchain: {other_toolchain.summary()}" in result.stdout
    assert " 0 failures" in result.stdout


@pytest.mark.slow
def test_a_killed_default_run_finishes_with_the_same_dataset(new_workspace) -> None:
    """The acceptance of the main job: killed in the build, in the middle of the evaluation,
    of the searches and of the split, then started again, it writes the dataset that one
    uninterrupted run writes, byte for byte."""
    reference = new_workspace()
    whole = reference.rocqcot("run", "--no-progress")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    place = new_workspace()
    for marker, after in (("", 20.0), ("step 3:", 60.0), ("step 6:", 20.0), ("step 9:", 1.0)):
        run_until(place, ("--no-progress",), marker, after)
    final = place.rocqcot("run", "--no-progress")
    print(final.stdout)
    assert final.returncode == 0, final.stdout + final.stderr
    assert " 0 failures" in final.stdout
    assert (place.root / DATASET).read_bytes() == (reference.root / DATASET).read_bytes()


# --- The datasets researchers train on (issue #16) ---------------------------------------------

PLAIN_V = """Section Lists.
Variable A : Type.
Hypothesis dec : forall x y : A, {x = y} + {x <> y}.

Fixpoint count (a : A) (l : list A) : nat :=
  match l with
  | nil => 0
  | cons x rest => if dec a x then S (count a rest) else count a rest
  end.

Lemma count_nil (a : A) : count a nil = 0.
Proof. simpl. reflexivity. Qed.

Lemma count_same (a : A) (l : list A) : count a (cons a l) = S (count a l).
Proof.
simpl.
destruct (dec a a) as [e|n].
- reflexivity.
- exfalso. apply n. reflexivity.
Qed.

Lemma count_other (a b : A) (l : list A) : a <> b -> count a (cons b l) = count a l.
Proof.
intros d.
simpl.
destruct (dec a b) as [e|n].
- contradiction.
- reflexivity.
Qed.
End Lists.
"""


def chat_lines(place: Workspace) -> list[dict]:
    return [json.loads(line) for line in (place.root / DATASET).read_text().splitlines()]


def test_the_user_turn_is_the_whole_proof_state_and_the_system_the_library(
    connected: Workspace,
) -> None:
    done = connected
    lines = chat_lines(done)
    with db.session_factory()() as session:
        evaluations = dict(session.execute(sa.select(Theorem.fqn, Theorem.evaluation)).all())
    for line in lines:
        assert line["messages"][1]["content"] == user_turn(evaluations[line["name"]])
    shown = user_turn(evaluations["demo.proofs.dk_pos"])
    assert "k : nat" in shown and "k_pos : 0 < k" in shown and "kk := k + k : nat" in shown
    assert (
        shown.endswith("0 < dk")
        and "k_pos" not in evaluations["demo.proofs.dk_pos"]["initial_goal"]
    )
    system = lines[0]["messages"][0]["content"]
    assert "the library demo (logical path demo), in SSReflect style" in system
    assert "Rocq 8." in system and "MathComp" not in system
    card = (done.root / DATASET).with_name("train_card.md").read_text()
    assert "\n".join(f"> {line}" for line in system.splitlines()) in card
    assert "in SSReflect style, built with Rocq 8." in card


def check_seed_exports(place: Workspace) -> dict[int, Any]:
    """Export every step as seed (in the current folder) and read each export as the original
    scripts did."""
    data = {}
    for step in range(1, 11):
        out = Path("seed") / f"step_{step}.json"
        exported = place.rocqcot("export", "--step", str(step), "--out", str(out.resolve()))
        assert exported.returncode == 0, exported.stderr
        data[step] = json.loads(out.read_text())
        assert data[step], f"step {step} exported nothing"
        original_readers.no_nulls(data[step], f"step {step}")
    assert len(original_readers.read_theorems(data[1])) == len(data[1]) > len(data[3])
    assert original_readers.read_theorems(data[2]) and original_readers.read_theorems(data[3])
    original_readers.read_errors(json.loads(Path("seed/step_2_errors.json").read_text()))
    assert original_readers.read_evaluations(data[4]) > 0
    assert {e["initial_goal_with_gvars"] for e in data[4].values()} != {
        e["initial_goal"] for e in data[4].values()
    }
    cots = original_readers.read_explained(data[5])
    assert len(cots) == len(data[5]) and original_readers.read_explained(data[6])
    assert original_readers.read_searched(data[7], 10) > 0
    assert original_readers.read_chosen(data[8], 10) > 0
    assert original_readers.read_examples(data[9], split=False) > 0
    assert original_readers.read_examples(data[10], split=True) > 0
    written = json.loads(Path("seed/step_6_new_docstring.json").read_text())
    assert all(entry["docstring"] and entry["fqn"] == fqn for fqn, entry in written.items())
    return data


def test_every_seed_export_loads_in_readers_of_the_original_formats(
    done: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(done.root)  # filepath_prefix is relative to where the export ran
    data = check_seed_exports(done)
    assert all(path.startswith("demo/") for path in (e["filepath"] for e in data[1].values()))


def test_reprocessing_with_nothing_changed_gives_the_same_dataset(
    done: Workspace, library: Path
) -> None:
    before = (done.root / DATASET).read_bytes()
    for fqn, stage in (("demo.proofs.dk_pos", "evaluate"), ("demo.proofs.anon", "haves")):
        reset = done.rocqcot("reprocess", fqn, "--from", stage)
        assert reset.returncode == 0, reset.stderr
    again = done.run(library)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "evaluated 2 now" in again.stdout and " 0 failures" in again.stdout
    assert (done.root / DATASET).read_bytes() == before


def test_an_edited_selected_proof_is_redone_and_stays_in_the_dataset(
    new_workspace, tmp_path: Path
) -> None:
    library = make_demo(tmp_path / "edited")
    place = new_workspace()
    first = place.run(library)
    assert first.returncode == 0, first.stdout + first.stderr
    before = chat_lines(place)
    names = {line["name"] for line in before}
    edited = "demo.proofs.bullets"  # and demo.proofs.anon_have_1, after it, only moves
    assert edited in names and "demo.proofs.anon_have_1" in names
    proofs = library / "proofs.v"
    text = proofs.read_text()
    old = "Proof.\nsplit.\n- by [].\n"
    assert old in text
    proofs.write_text(text.replace(old, "Proof.\nsplit.\nidtac.\n- by [].\n"))
    second = place.run(library)
    assert second.returncode == 0, second.stdout + second.stderr
    after = chat_lines(place)
    assert {line["name"] for line in after} == names
    redone = [line for line in after if line["name"].startswith(edited)]
    assert any("<script>\nidtac.\n</script>" in line["messages"][2]["content"] for line in redone)
    unchanged = [line for line in before if not line["name"].startswith(edited)]
    assert unchanged == [line for line in after if not line["name"].startswith(edited)]
    assert " 0 failures" in second.stdout


def test_a_library_without_any_have_runs_with_the_defaults(new_workspace, tmp_path) -> None:
    library = tmp_path / "plain"
    library.mkdir()
    (library / "lists.v").write_text(PLAIN_V)
    place = new_workspace()
    result = place.rocqcot("run", "--input", str(library), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pool with_have has 0 candidates (with 2 to 14 tactics), fewer than --k-have 10" in (
        result.stdout
    )
    assert " 0 failures" in result.stdout
    lines = chat_lines(place)
    assert {line["name"] for line in lines} >= {"plain.lists.count_same", "plain.lists.count_other"}
    system = lines[0]["messages"][0]["content"]
    assert "without SSReflect" in system
    same = next(line for line in lines if line["name"] == "plain.lists.count_same")
    assert "dec : forall x y : A" in same["messages"][1]["content"]
