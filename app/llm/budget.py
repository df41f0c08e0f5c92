"""What calls cost, and `--budget-usd` kept as a promise: a request is sent only when its worst
cost still fits in the budget, next to what was spent and what requests in flight may cost."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import LlmCall
from app.llm.errors import BudgetReached, LlmConfigError
from app.llm.settings import LlmSettings

log = logging.getLogger(__name__)

TEMPLATE_TOKENS_PER_MESSAGE = 16
"""Room for what a chat template adds around each message (role markers: a few tokens in
every known template)."""
ROUNDING_USD = 1e-12


def cost_of(response: Mapping[str, Any], settings: LlmSettings) -> float:
    """What a call cost: as the endpoint reports it, else from the configured prices."""
    usage = response.get("usage") or {}
    reported = usage.get("cost")
    if isinstance(reported, int | float) and math.isfinite(reported):
        return float(reported)
    prompt_tokens = usage.get("prompt_tokens") or 0
    completion_tokens = usage.get("completion_tokens") or 0
    return (
        prompt_tokens * settings.prompt_usd_per_million
        + completion_tokens * settings.completion_usd_per_million
    ) / 1e6


def worst_case_usd(
    messages: list[dict[str, str]], params: Mapping[str, Any], settings: LlmSettings
) -> float:
    """The most a request can cost at the configured prices: every byte of what is sent taken
    for a prompt token (no tokenizer makes a token of less than a byte), the template's markers,
    and the whole `max_tokens` of answer."""
    sent = json.dumps({"messages": messages, "params": params}, ensure_ascii=False).encode()
    prompt_tokens = len(sent) + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)
    completion_tokens = settings.max_completion_tokens or 0
    return (
        prompt_tokens * settings.prompt_usd_per_million
        + completion_tokens * settings.completion_usd_per_million
    ) / 1e6


class Budget:
    """`--budget-usd` as a promise. Before a request is sent its worst cost is reserved, and it
    is sent only if what was spent (every call recorded in `llm_calls`, by any process) plus what
    this process reserved for its requests in flight plus that worst cost stays within the limit;
    the answer's real cost then replaces the reservation. Checking the spent cost alone (as one
    did before) let every thread that passed the check at once overshoot by a call each.

    The worst cost needs a bound on the answer (`max_tokens`) and prices; an endpoint that reports
    a higher cost than the prices give is warned about. Requests in flight in other processes
    are not seen: processes that share a budget each keep within it with what they know."""

    def __init__(self, settings: LlmSettings, recorded: Callable[[], float]) -> None:
        missing = []
        if not settings.max_completion_tokens:
            missing.append("`max_tokens` in request_config")
        if settings.prompt_usd_per_million <= 0 or settings.completion_usd_per_million <= 0:
            missing.append("`prompt_usd_per_million` and `completion_usd_per_million`")
        if missing:
            raise LlmConfigError(
                f"--budget-usd needs {' and '.join(missing)} (the step's YAML file, --config): "
                "a call's worst cost is reserved before it is sent"
            )
        self.settings = settings
        self.limit = float(settings.budget_usd or 0.0)
        self._recorded = recorded
        self._reserved = 0.0
        self._paid = 0.0
        """The cost of this process's answers, in case a record of one did not reach the table."""
        self._floor: float | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def reserved(
        self, messages: list[dict[str, str]], params: Mapping[str, Any]
    ) -> Iterator[Callable[[float], None]]:
        """Reserve the request's worst cost for the block (`BudgetReached` if it does not fit);
        the block reports the answer's real cost through the function it is given."""
        worst = worst_case_usd(messages, params, self.settings)
        with self._lock:
            spent = self._spent()
            if spent + self._reserved + worst > self.limit + ROUNDING_USD:
                raise BudgetReached(
                    f"budget reached: ${spent:.4f} spent and ${self._reserved:.4f} reserved "
                    f"of --budget-usd {self.limit:g}; the next call may cost ${worst:.4f}"
                )
            self._reserved += worst

        def paid(cost: float) -> None:
            if cost > worst + ROUNDING_USD:
                log.warning(
                    "a call cost $%.6f, more than its worst case at the configured prices "
                    "($%.6f): raise the prices in the step's settings",
                    cost,
                    worst,
                )
            with self._lock:
                self._paid += cost

        try:
            yield paid
        finally:
            with self._lock:
                self._reserved -= worst

    def _spent(self) -> float:
        """The recorded cost, and never less than this process knows it paid."""
        recorded = self._recorded()
        if self._floor is None:
            self._floor = recorded
        return max(recorded, self._floor + self._paid)


@dataclass(frozen=True)
class LlmUsage:
    """What the LLM calls recorded so far cost, for `rocqcot status`."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def line(self) -> str:
        if not self.calls:
            return "llm: no calls yet"
        return (
            f"llm: {self.calls:,} calls, {self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion tokens, ${self.cost_usd:.4f}"
        )


def usage(session: Session) -> LlmUsage:
    """Calls, tokens and cost recorded in `llm_calls`."""
    row = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(LlmCall.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(LlmCall.completion_tokens), 0),
            sa.func.coalesce(sa.func.sum(LlmCall.cost_usd), 0.0),
        )
    ).one()
    return LlmUsage(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


def retry_budget_failures(session: Session, table: sa.Table, stage: Stage) -> int:
    """Make rows that failed only because the budget was reached ready again (a new run may
    have a larger budget); returns how many."""
    result = session.execute(
        sa.update(table)
        .where(
            table.c.stage == stage,
            table.c.status == Status.failed,
            table.c.error.like(f"{BudgetReached.__name__}:%"),
        )
        .values(status=Status.pending, attempts=0, error=None)
    )
    return result.rowcount
