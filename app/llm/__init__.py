"""The LLM layer of the pipeline, one module per responsibility:

- `settings`: where and how a step asks (its YAML file, the environment, the flags), prompts;
- `client`: the endpoint asked within the concurrency, pacing and budget, retrying what is
  transient (429, 5xx, timeouts, answers that are not a chat completion);
- `answers`: the cache key of a request, the answer read from a chat completion, the checks;
- `cache`: `llm_calls`, where every answer is recorded and looked up;
- `budget`: what calls cost, and `--budget-usd` as a promise (worst cases reserved);
- `step`: an LLM step's command and summary.

The names steps and tests use are exported here, so `from app import llm` is the whole API.
"""

from app.llm.answers import Answer, answer_from_response, request_hash, require_sections
from app.llm.budget import Budget, LlmUsage, cost_of, usage, worst_case_usd
from app.llm.cache import CallCache, shared_cache
from app.llm.client import LlmClient, Pacer, backoff, redact, retry_after
from app.llm.errors import (
    BadAnswer,
    BudgetReached,
    InvalidAnswer,
    LlmConfigError,
    LlmError,
    LlmUnavailable,
)
from app.llm.settings import ENV_BASE_URL, ENV_KEY, ENV_MODEL, LlmSettings, load_settings, prompt
from app.llm.step import (
    BaseUrlOption,
    BudgetOption,
    ConfigOption,
    MaxWorkersOption,
    MeanDelayOption,
    ModelOption,
    OfflineOption,
    StepFlags,
    StepLeftFailures,
    StepReport,
    default_writer,
    run_llm_step,
    step_command,
)

__all__ = [
    "ENV_BASE_URL",
    "ENV_KEY",
    "ENV_MODEL",
    "Answer",
    "BadAnswer",
    "BaseUrlOption",
    "Budget",
    "BudgetOption",
    "BudgetReached",
    "CallCache",
    "ConfigOption",
    "InvalidAnswer",
    "LlmClient",
    "LlmConfigError",
    "LlmError",
    "LlmSettings",
    "LlmUnavailable",
    "LlmUsage",
    "MaxWorkersOption",
    "MeanDelayOption",
    "ModelOption",
    "OfflineOption",
    "Pacer",
    "StepFlags",
    "StepLeftFailures",
    "StepReport",
    "answer_from_response",
    "backoff",
    "cost_of",
    "default_writer",
    "load_settings",
    "prompt",
    "redact",
    "request_hash",
    "require_sections",
    "retry_after",
    "run_llm_step",
    "shared_cache",
    "step_command",
    "usage",
    "worst_case_usd",
]
