"""What every model provider is: a request in, a response with its usage out (no SDK here).

Every provider answers a :class:`ModelRequest` with a :class:`ModelResponse` carrying the raw text
and its usage. The offline model is a deterministic template writer: no network, no weights, no
cost. It is honest about what it is (its model name says so) and exists so the pipeline, its retries
and its tests run anywhere. It exercises the review loop on purpose: about one first draft in four
leaves out the plan's last section, and a revision that is told so puts it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agentforge_dagster.domain.limits import MAX_TOKEN_COUNT

# EXAMPLE prices only, in USD per million (input, output) tokens, copied from public price lists
# at the time of writing. They are NOT kept up to date: pass your own table for real accounting.
# A model missing from the table costs 0.0 (as local models do).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "claude-3-5-haiku-latest": (0.80, 4.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
}


@dataclass(frozen=True)
class ModelRequest:
    """One call to a model: a task name, the prompt text, structured context and the output schema."""

    task: str
    prompt: str
    context: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelResponse:
    text: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    # What the provider's rate-limit headers said was left of its limits after this answer
    # (None: it did not say); the shared limiter believes them (persistence/rate_limits.py).
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    # The model the answer says answered (its body's ``model``), beside ``model``, the one asked
    # for: they differ when a provider serves an alias or another model. None: it did not say.
    served_model: str | None = None

    def row(self, *, without: str) -> dict[str, Any]:
        """The answer's fields by name, all but ``without``: the columns a stored row keeps."""
        return {
            name: value
            for name, value in asdict(self).items()
            if name not in (without, "remaining_requests", "remaining_tokens")
        }


class ModelProvider(Protocol):
    """What every provider implements; errors are raised as our transient/permanent classes."""

    name: str
    model: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for providers that report none."""
    return max(1, len(text) // 4)


def token_count(value: object) -> int | None:
    """A token count an answer reported, if it is believable: a whole number from 1 to
    ``MAX_TOKEN_COUNT`` (not a bool, a string or a float); None: unknown, to be estimated."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= MAX_TOKEN_COUNT else None


def served_model(value: object) -> str | None:
    """The answering model an answer names, if it names one that fits the records (120 chars)."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    return name if 0 < len(name) <= 120 and name.isprintable() else None
