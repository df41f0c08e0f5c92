"""Readers written from the original Crrrocq scripts' formats: each takes a seed export the way
the original script of the next step read its input (the keys it indexed, the strings it
concatenated, the lists it took the first element of), and fails where that script would.
They return what they read, so tests can also check the values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_BLOCK = re.compile(r"<(?P<kind>\w+)>\s*(?P<content>.*?)\s*<\/\1>", re.DOTALL | re.MULTILINE)
_KEYWORD = re.compile(r"(Proof|Qed|Defined)\.")


def read_theorems(data: dict[str, Any]) -> list[Path]:
    """Steps 2 to 4 read step 1 to 3's theorems: the file to open, the position to start at,
    the proof to cut into chains."""
    paths = []
    for theorem in data.values():
        path = Path(theorem["filepath_prefix"], theorem["filepath"])
        assert path.is_file(), path
        position = theorem["position"]
        assert isinstance(position["line"], int) and isinstance(position["character"], int)
        assert theorem["proof"].strip() and theorem["statement"].strip()
        paths.append(path)
    return paths


def read_errors(errors: dict[str, Any]) -> list[str]:
    """Step 2's `_errors.json`: the theorem with its error."""
    return [error["error"] for error in errors.values() if read_theorems({"t": error})]


def dependency_text(dependency: dict[str, Any]) -> str:
    """Step 5's `dependency_to_str`: name and type, then the docstring when there is info."""
    text = dependency["name"].strip() + " : " + dependency["type"].strip()
    if "info" in dependency:
        text += "\n" + dependency["info"]["docstring"]
    return text


def read_notations(table: dict[str, Any]) -> list[str]:
    """`{"scope": {scope: {qualid: {name, info}}}, "noscope": {qualid: {name, info}}}`."""
    names = []
    for scoped in table["scope"].values():
        names += [notation["name"] for notation in scoped.values()]
    names += [notation["name"] for notation in table["noscope"].values()]
    return names


def read_evaluations(data: dict[str, Any]) -> int:
    """Step 5 reads step 4: the goal before each tactic (`goals[0]`), its chain and its
    dependencies; also the statement, the global variables and the statement's notations."""
    tactics = 0
    for theorem in data.values():
        assert theorem["statement"].strip() and theorem["initial_goal"].strip()
        assert theorem["initial_goal_with_gvars"].strip()
        for variable in theorem["global_variables"]:
            assert variable["pp"].startswith(("Variable", "Let"))
            read_notations(variable["notations"])
            [dependency_text(d) for d in variable["dependencies"]]
        read_notations(theorem["statement_notations"])
        [dependency_text(d) for d in theorem["statement_dependencies"]]
        previous = {"goals": [theorem["initial_goal"]]}
        for step in theorem["evaluation"]:
            if not _KEYWORD.search(step["chain"].strip()):
                goal = previous["goals"][0]
                assert isinstance(goal, str) and goal
                text = "Goal:\n" + goal + "\n\nTactic:\n" + step["chain"].strip()
                text += "".join(dependency_text(d) for d in step["dependencies"])
                tactics += 1
            assert all(isinstance(goal, str) for goal in step["goals"])
            assert all(isinstance(goal, str) for goal in step["goals_with_gvars"])
            assert isinstance(step["goal_diff"], str)
            previous = step
        assert theorem["evaluation"][-1]["goals"] == []  # the proof is done
    return tactics


def read_explained(data: dict[str, Any]) -> list[list[dict[str, str]]]:
    """Step 6 reads step 5: the dependencies lacking a docstring (by `fqn`), and step 8 the
    `CoT` text as blocks."""
    cots = []
    for entry in data.values():
        assert entry["statement_description"] and entry["proof_description"]
        for step in entry["evaluation"]:
            for c in step["dependencies"]:
                if "info" not in c or "docstring" not in c["info"]:
                    f"Lemma {c['name']}: {c['type']}" + c["fqn"]
            if not _KEYWORD.search(step["chain"].strip()):
                assert step["detail"] and step["scenario"] and step["summary"]
        blocks = [m.groupdict() for m in _BLOCK.finditer(entry["CoT"])]
        assert blocks and all(b["kind"] in ("think", "search", "script", "have") for b in blocks)
        cots.append(blocks)
    return cots


def read_searched(data: dict[str, Any], top_k: int) -> int:
    """Step 7 (and step 8) read the searched CoTs: each dependency's info (`fullname`,
    `docstring`), each search's results as `(score, element, fqn)`, a `searchs` block's
    queries."""
    searches = 0
    for entry in data.values():
        assert entry["fqn"]
        for step in entry["evaluation"]:
            for c in step["dependencies"]:
                if "info" in c and "docstring" in c["info"]:
                    (c["name"], c["info"]["fullname"], c["info"]["docstring"], "force_result" in c)
        for block in entry["output_blocks"]:
            if block["kind"] == "search":
                first = ""
                for _, element, _ in block["search_result"][:top_k]:
                    first += element["fullname"] + "\n its docstring: " + element["docstring"]
                searches += 1
            if block["kind"] == "searchs":
                assert all(isinstance(query, str) for query in block["content"])
            if "target" in block:
                assert isinstance(block["target"]["name"], str)
                assert isinstance(block["target"]["force_result"], bool)
    return searches


def read_chosen(data: dict[str, Any], top_k: int) -> int:
    """Step 9 reads step 8: the dependencies with a docstring by name, each search followed by
    a think, its results' names, its target `{name, force_result}` (a forced one looked up
    among the dependencies by name, for its `fqn`)."""
    found = 0
    for entry in data.values():
        dependencies = {}
        for step in entry["evaluation"]:
            for c in step["dependencies"]:
                if "info" in c and "docstring" in c["info"]:
                    dependencies[c["name"]] = c["info"]
        blocks = entry["output_blocks"]
        for before, after, _ in zip(blocks, blocks[1:], blocks[2:], strict=False):
            assert before["kind"] != "searchs"  # step 8 chose among a repair's queries
            if before["kind"] != "search" or after["kind"] != "think":
                continue  # step 9 leaves a search without think out
            names = [element["name"] for _, element, _ in before["search_result"][:top_k]]
            if "target" not in before:
                continue
            target = before["target"]["name"]
            if before["target"]["force_result"]:
                assert dependencies[target]["fqn"]
            found += target in names
        assert entry["initial_goal"]
    return found


def read_examples(data: list[dict[str, Any]], split: bool) -> int:
    """Step 10 reads step 9, and training reads step 10: `{name, blocks, initial_goal}`, each
    block `{kind, content}` (with `ignore` after step 10), a search's target `{name,
    force_result}`."""
    blocks = 0
    for entry in data:
        assert entry["name"] and entry["initial_goal"]
        for block in entry["blocks"]:
            text = f"{block['kind']}\n{block['content']}\n\n"
            assert text
            if split:
                assert isinstance(block["ignore"], bool)
            if "target" in block:
                assert isinstance(block["target"]["name"], str)
                assert isinstance(block["target"]["force_result"], bool)
            blocks += 1
    return blocks


def no_nulls(data: Any, where: str = "") -> None:
    """The original never writes null: no value anywhere is None."""
    if isinstance(data, dict):
        for key, value in data.items():
            no_nulls(value, f"{where}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            no_nulls(value, f"{where}[{index}]")
    else:
        assert data is not None, f"null at {where}"
