"""Model calls as OpenTelemetry GenAI client spans (semantic conventions ``gen_ai.*``).

Each call is a CLIENT span named ``{operation} {model}`` with the operation, the provider, the
model asked for and the one that answered, ``server.address``, the usage tokens, ``error.type``
when it failed, and two attributes of ours: ``agentforge.cache_hit`` (an answer served from the
response store; it then carries no usage tokens, so a viewer that prices tokens does not bill
it again) and ``agentforge.cost_usd`` (what the project recorded it cost). It carries no
``openinference.span.kind``: Phoenix reads the GenAI attributes themselves.

Prompt and completion text are exported only with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, as ``gen_ai.input.messages`` and
``gen_ai.output.messages``; secrets never, whatever the setting: every value of the process's
secret-named environment variables, and the provider's own key, is replaced before export.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

from agentforge_dagster import tracing
from agentforge_dagster.tracing.ids import OrderTrace

OPERATION = "chat"
REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|_URL)$", re.IGNORECASE)
_MIN_SECRET = 8
# What the provider names a span with: the GenAI registry's names where there is one.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "offline": "agentforge.offline"}


def _secrets(extra: Iterable[str]) -> list[str]:
    found = [
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET
    ]
    found += [value for value in extra if value and len(value) >= _MIN_SECRET]
    return sorted(set(found), key=len, reverse=True)  # a longer secret first: no partial leaks


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in _secrets(secrets):
        text = text.replace(secret, REDACTED)
    return text


def server_address(base_url: str | None) -> str | None:
    return urlsplit(base_url).hostname if base_url else None


def model_call(
    trace: OrderTrace,
    *,
    provider: str,
    model: str,
    started: datetime,
    ended: datetime | None = None,
    served_model: str | None = None,
    base_url: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost_usd: float | None = None,
    cache_hit: bool = False,
    error_type: str | None = None,
    prompt: str | None = None,
    completion: str | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """One model call's span, under the span current in this thread (the step's attempt)."""
    if not tracing.enabled():
        return
    attributes: dict[str, object] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": PROVIDER_NAMES.get(provider, provider),
        "gen_ai.request.model": model,
        "server.address": server_address(base_url),
        "agentforge.cache_hit": cache_hit,
    }
    if error_type is None:
        attributes["gen_ai.response.model"] = served_model or model
        if cost_usd is not None:
            attributes["agentforge.cost_usd"] = float(cost_usd)
        if not cache_hit:
            attributes["gen_ai.usage.input_tokens"] = input_tokens
            attributes["gen_ai.usage.output_tokens"] = output_tokens
    if tracing.capture_content():
        secrets = list(secrets)
        if prompt is not None:
            attributes["gen_ai.input.messages"] = _messages("user", redact(prompt, secrets))
        if completion is not None:
            attributes["gen_ai.output.messages"] = _messages(
                "assistant", redact(completion, secrets)
            )
    tracing.emit(
        f"{OPERATION} {model}",
        trace,
        start=started,
        end=ended,
        kind="client",
        label=None,
        attributes=attributes,
        error_type=error_type,
    )


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
