"""Model calls as GenAI client spans: the attributes a trace viewer reads, no content by default."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opentelemetry.trace import SpanKind

from agentforge_dagster import tracing
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.tracing import genai
from tests.spans import Caught

TRACE = tracing.OrderTrace("dep", "ord-1")
BRIEF = "Write about the secret recipe of ord-1"


def _call(**overrides: object) -> None:
    started = utcnow()
    fields: dict[str, object] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini-2024-07-18",
        "base_url": "http://127.0.0.1:8080/v1",
        "started": started,
        "ended": started + timedelta(seconds=1),
        "input_tokens": 120,
        "output_tokens": 40,
        "cost_usd": 0.00042,
        "prompt": BRIEF,
        "completion": "a draft",
        **overrides,
    }
    with tracing.span("step draft", TRACE, attributes={"agentforge.attempt": 1}):
        genai.model_call(TRACE, **fields)  # type: ignore[arg-type]


def test_a_model_call_is_a_client_span_with_the_genai_attributes(spans: Caught) -> None:
    _call()
    call = spans.one("chat gpt-4o-mini")
    assert call.kind is SpanKind.CLIENT
    assert spans.parent_of(call) is spans.one("step draft")
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 40,
        "server.address": "127.0.0.1",
        "agentforge.cache_hit": False,
        "agentforge.cost_usd": 0.00042,
    }
    assert {key: call.attributes.get(key) for key in expected} == expected
    assert "openinference.span.kind" not in call.attributes
    assert spans.one("step draft").attributes["openinference.span.kind"] == "CHAIN"


def test_prompt_and_completion_are_not_exported_by_default(spans: Caught) -> None:
    _call()
    for span in spans.all():
        text = repr(dict(span.attributes))
        assert "secret recipe" not in text and "a draft" not in text


def test_a_cache_hit_carries_no_usage_tokens(spans: Caught) -> None:
    _call(cache_hit=True, cost_usd=0.0)
    call = spans.one("chat gpt-4o-mini")
    assert call.attributes["agentforge.cache_hit"] is True
    assert "gen_ai.usage.input_tokens" not in call.attributes
    assert "gen_ai.usage.output_tokens" not in call.attributes


def test_a_failed_call_says_its_error_type(spans: Caught) -> None:
    _call(error_type="RateLimited")
    call = spans.one("chat gpt-4o-mini")
    assert call.attributes["error.type"] == "RateLimited"
    assert not call.status.is_ok
    assert "gen_ai.usage.input_tokens" not in call.attributes


def test_content_is_captured_only_when_asked_and_secrets_never(
    spans: Caught, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnop")
    _call(
        prompt=BRIEF + " sk-test-abcdefghijklmnop",
        completion="key is prov-secret-0123456789",
        secrets=["prov-secret-0123456789"],
    )
    call = spans.one("chat gpt-4o-mini")
    assert "secret recipe" in call.attributes["gen_ai.input.messages"]
    assert "key is" in call.attributes["gen_ai.output.messages"]
    text = repr(dict(call.attributes))
    assert "sk-test-abcdefghijklmnop" not in text and "prov-secret-0123456789" not in text
    assert text.count(genai.REDACTED) == 2
