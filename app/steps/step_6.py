"""Step 6: write the docstrings that the dependencies searched by the selection's CoTs lack.

A dictionary entry (`library_objects`, created by step 4 at stage `evaluate`, done) is ready
when it has no docstring and a CoT of step 3's selection searches for it (`app.gate`: CoTs
of theorems outside the selection, kept from an earlier one, do not count): retrieval (steps
7 to 9) embeds docstrings, so a target without one could never be found; `--all`, asked for
explicitly after an estimate, writes one for every entry that lacks one. The LLM answers a
JSON object `{"docstring": …}` (the request's `response_format` carries the schema): plain
language, no symbols, never the object's name, self-contained. Invalid JSON, or a docstring
that names the object, is asked again, then the entry fails with the answer kept in
`llm_calls`. Offline, the docstring is the describer's (`app.describe`): what the name and
statement say. Either way it is stored with its source (`llm` or `offline`) and
`force_result` set, so step 9 treats these entries like the original's did.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app import gate, llm
from app.cot import normalized
from app.db import queue
from app.db.enums import Stage
from app.db.models import LibraryObject
from app.describe import description
from app.stages import StageSpec, register

_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


@dataclass(frozen=True)
class ObjectInput:
    """A dictionary entry as step 6 reads it."""

    id: int
    fqn: str
    name: str
    kind: str
    type: str | None
    fullname: str | None
    """The sentence that defines it."""


@dataclass(frozen=True)
class DocstringResult:
    docstring: str
    source: str
    """`llm` or `offline`."""


Writer = Callable[[ObjectInput], DocstringResult]


def load(session: Session, row_id: int) -> ObjectInput:
    row = session.execute(
        sa.select(
            LibraryObject.fqn,
            LibraryObject.name,
            LibraryObject.kind,
            LibraryObject.type,
            LibraryObject.fullname,
        ).where(LibraryObject.id == row_id)
    ).one()
    return ObjectInput(row_id, *row)


def run(item: ObjectInput, write: Writer) -> DocstringResult:
    """Write the entry's docstring with the worker's writer."""
    return write(item)


def lacks_docstring() -> sa.ColumnElement[bool]:
    """Every entry without a docstring (`--all`): the LLM4Docq-style dictionary."""
    return sa.func.coalesce(LibraryObject.docstring, "") == ""


def store(session: Session, row_id: int, result: DocstringResult) -> None:
    """The docstring, its source, and, for an entry a CoT of the selection searches for, the
    mark that step 9 forces its result (`--all` writes for entries no such CoT searches too:
    never forced)."""
    session.execute(
        sa.update(LibraryObject)
        .where(LibraryObject.id == row_id)
        .values(
            docstring=result.docstring,
            docstring_source=result.source,
            force_result=gate.entry_searched(),
        )
    )


def docstring_messages(item: ObjectInput) -> list[dict[str, str]]:
    """The request for one entry's docstring."""
    lines = [f"Kind: {item.kind}", f"Name: {item.name}", f"Type: {item.type or '(unknown)'}"]
    if item.fullname:
        lines.append(f"Defined by:\n```coq\n{item.fullname.strip()}\n```")
    return [
        {"role": "system", "content": llm.prompt("docstring")},
        {"role": "user", "content": "\n".join(lines)},
    ]


def parse_docstring(text: str, name: str) -> str:
    """The docstring of a JSON answer `{"docstring": …}` (a Markdown fence around it is
    tolerated); a `BadAnswer` when the JSON or the docstring is not usable."""
    body = text.strip()
    if fenced := _FENCED.fullmatch(body):
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        where = f"{error.msg} at character {error.pos}"
        raise llm.BadAnswer(f"it is not valid JSON ({where})") from None
    if not isinstance(data, dict) or set(data) != {"docstring"}:
        raise llm.BadAnswer('it must be a JSON object with the one key "docstring"')
    if not isinstance(data["docstring"], str) or not data["docstring"].strip():
        raise llm.BadAnswer('"docstring" must be a non-empty string')
    docstring = normalized(data["docstring"])
    if len(name) > 2 and re.search(rf"(?<![\w']){re.escape(name)}(?![\w'])", docstring):
        raise llm.BadAnswer(f"the docstring names the object ({name}): describe it instead")
    return docstring


def offline_writer(item: ObjectInput) -> DocstringResult:
    """The offline describer's description: from the name and the statement (the defining
    sentence, else the printed type), never naming the object."""
    statement = item.fullname or item.type or ""
    return DocstringResult(description(item.kind, item.name, statement), "offline")


@dataclass(frozen=True)
class LlmDocWriter:
    """Asks the LLM for a docstring, checking the JSON and the text."""

    client: llm.LlmClient

    def __call__(self, item: ObjectInput) -> DocstringResult:
        parse = functools.partial(parse_docstring, name=item.name)
        return DocstringResult(self.client.ask(docstring_messages(item), parse), "llm")


def writer_for(settings: llm.LlmSettings) -> Writer:
    """The LLM writer when an endpoint is configured, else the offline one."""
    return LlmDocWriter(llm.LlmClient(settings)) if settings.online else offline_writer


SPEC = register(
    StageSpec(
        stage=Stage.docstring,
        model=LibraryObject,
        input_stage=Stage.evaluate,
        load=load,
        run=run,
        store=store,
        ready_filter=lacks_docstring,
        gate=gate.entry_searched,
        resources=llm.default_writer(6, writer_for),
    )
)


COMPLETION_TOKENS = 80
"""A docstring's length in tokens, for the estimate of `--all` (one or two sentences)."""


def estimate(session: Session, settings: llm.LlmSettings, spec: StageSpec) -> str:
    """What writing the ready entries' docstrings would cost: requests, tokens (four
    characters a token) and dollars at the configured prices, cached answers costing nothing;
    and how many of them no CoT of the selection searches for."""
    rows = session.execute(
        sa.select(LibraryObject.id)
        .where(queue.ready_rows(spec))
        .order_by(LibraryObject.library_order)
    ).scalars()
    prompt = requests = 0
    for row_id in rows:
        messages = docstring_messages(load(session, row_id))
        prompt += sum(len(m["content"]) for m in messages) // 4
        requests += 1
    completion = requests * COMPLETION_TOKENS
    usd = (
        prompt * settings.prompt_usd_per_million + completion * settings.completion_usd_per_million
    ) / 1e6
    return (
        f"step 6: {requests} entries without a docstring: about {prompt:,} prompt and "
        f"{completion:,} completion tokens, about ${usd:.2f} at the configured prices "
        f"(answers cached in llm_calls cost nothing; --budget-usd stops new requests); "
        f"{gate.beyond(session, spec):,} of them beyond what the selection's CoTs search for"
    )


def command(
    all_entries: Annotated[
        bool, typer.Option("--all", help="every entry without a docstring, searched or not")
    ] = False,
    max_workers: llm.MaxWorkersOption = None,
    mean_delay: llm.MeanDelayOption = None,
    budget_usd: llm.BudgetOption = None,
    config: llm.ConfigOption = None,
    base_url: llm.BaseUrlOption = None,
    model: llm.ModelOption = None,
    offline: llm.OfflineOption = False,
) -> None:
    """Write the missing docstrings of the dependencies the selection's CoTs search for
    (`--all`: of every dictionary entry, after an estimate of the cost)."""
    from app.db.engine import ensure_schema, session_factory

    flags = llm.StepFlags(config, offline, base_url, model, max_workers, mean_delay, budget_usd)
    spec = SPEC
    if all_entries:
        ensure_schema()
        spec = dataclasses.replace(SPEC, gate=None)
        settings = llm.load_settings(6, config, offline, base_url=base_url, model=model)
        with session_factory()() as session:
            typer.echo(estimate(session, settings, spec))
    report = llm.run_llm_step(
        6, spec, writer_for, flags, offline_batch=32, beyond_selection=all_entries
    )
    typer.echo(report.line(6, "docstrings written"))


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
