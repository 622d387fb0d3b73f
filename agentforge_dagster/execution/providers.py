"""The model-provider interface and the built-in offline model.

Every provider answers a :class:`ModelRequest` with a :class:`ModelResponse` carrying the raw text
and its usage. The offline model is a deterministic template writer: no network, no weights, no
cost. It is honest about what it is (its model name says so) and exists so the pipeline, its retries
and its tests run anywhere. It exercises the review loop on purpose: about one first draft in four
leaves out the plan's last section, and a revision that is told so puts it back.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from agentforge_dagster.domain.limits import MAX_TOKEN_COUNT
from agentforge_dagster.domain.models import SERVICE_OUTLINES

OFFLINE_MODEL_NAME = "agentforge-offline-template-v1"

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


# Tone and length per service; the sections are the service's outline (SERVICE_OUTLINES).
_STYLES: dict[str, tuple[str, int]] = {
    "blog_post": ("friendly", 600),
    "product_description": ("persuasive", 250),
    "email_campaign": ("direct", 200),
    "press_release": ("formal", 450),
}
_STOPWORDS = frozenset(
    "about after also been before being from have into just like make more most much only "
    "other over some such than that their them then there these they this those through "
    "very what when where which while with would your write please need want ".split()
)


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


def keywords_of(text: str, limit: int = 5) -> list[str]:
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", text)]
    seen: dict[str, None] = {}
    for word in words:
        if word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:limit] or ["service"]


class OfflineModel:
    """Deterministic offline model: the same request always gets the same answer."""

    name = "offline"
    model = OFFLINE_MODEL_NAME

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        writers = {"plan": self._plan, "draft": self._draft, "revise": self._draft}
        if request.task not in writers:
            raise ValueError(f"the offline model has no writer for task {request.task!r}")
        text = json.dumps(writers[request.task](request), ensure_ascii=False)
        return ModelResponse(
            text=text,
            provider=self.name,
            model=self.model,
            input_tokens=estimate_tokens(request.prompt),
            output_tokens=estimate_tokens(text),
            cost_usd=0.0,
            latency_s=time.perf_counter() - started,
            served_model=self.model,
        )

    @staticmethod
    def _plan(request: ModelRequest) -> dict[str, Any]:
        order = request.context["order"]
        sections = list(SERVICE_OUTLINES[order["service"]])
        tone, words = _STYLES[order["service"]]
        brief_words = order["brief"].split()
        title = " ".join(brief_words[:8]).rstrip(".,;:") or "Untitled"
        return {
            "title": title[:300],
            "sections": sections,
            "tone": tone,
            "word_target": words,
            "keywords": keywords_of(order["brief"]),
        }

    @staticmethod
    def _draft(request: ModelRequest) -> dict[str, Any]:
        plan = request.context["plan"]
        sections = list(plan["sections"])
        digest = int(hashlib.sha256(request.prompt.encode("utf-8")).hexdigest()[:8], 16)
        if request.task == "draft" and len(sections) > 1 and digest % 4 == 0:
            sections = sections[:-1]  # the simulated lapse the review is there to catch
        keywords = plan["keywords"]
        per_section = max(20, plan["word_target"] // max(1, len(plan["sections"])))
        body_sections = []
        for index, heading in enumerate(sections):
            keyword = keywords[index % len(keywords)]
            sentence = (
                f"In a {plan['tone']} voice, this part covers {keyword} as asked in the brief "
                f"and explains what it means for the reader."
            )
            repeats = max(1, per_section // len(sentence.split()))
            body_sections.append({"heading": heading, "body": " ".join([sentence] * repeats)})
        return {"title": plan["title"], "sections": body_sections}
