"""The LLM layer's errors: what a row fails with, and what an answer check raises."""

from __future__ import annotations

from app.errors import RocqcotError


class LlmError(RocqcotError):
    """A request that could not be answered usefully; the row fails with this reason."""


class LlmConfigError(LlmError):
    """A configuration the user must fix (unknown key, no model for an endpoint)."""


class LlmUnavailable(LlmError):
    """The endpoint kept failing (or refused the request) after the allowed retries."""


class BudgetReached(LlmError):
    """The recorded cost reached `--budget-usd`: no new request is sent."""


class BadAnswer(Exception):
    """Raised by an answer check: the reason is told to the model when it is asked again."""


class InvalidAnswer(LlmError):
    """Answers still failed their check after the allowed re-asks."""
