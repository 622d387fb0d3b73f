"""A model provider's answer is untrusted input: every lie, over a real socket, in both dialects.

The fake server (tests/fakes/llm_server.py, ``lying``) answers through the official SDKs with
waits too long to honour, usage counts that are negative, absurd or not numbers, another model
than the one asked for, bodies too large, compressed bombs, drips, bytes that are not UTF-8 and
fields of the wrong type. Each comes out as one of our error classes naming the provider, or as
an answer whose counts, cost and model can be believed; nothing is stored that did not validate.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from pydantic import BaseModel

from agentforge_dagster.domain.errors import AgentForgeError, ModelCallTimeout, TransientError
from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S, RateLimits
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.backoff import StepBackoff
from agentforge_dagster.execution.gateway import ModelGateway, cache_key, month_of
from agentforge_dagster.execution.llm.anthropic import AnthropicProvider
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse, estimate_tokens
from agentforge_dagster.execution.llm.openai import OpenAICompatibleProvider
from agentforge_dagster.execution.llm.sdk import MalformedResponse, ProviderTimeout, RateLimited
from agentforge_dagster.persistence.schema import model_responses, provider_rate_limits
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order
from tests.execution.llm.test_providers import (  # noqa: F401 (loopback_only is a fixture)
    DIALECTS,
    MODEL,
    REQUEST,
    SECRET,
    loopback_only,
)
from tests.fakes.llm_server import Behaviour, FakeLLMServer, lying, ok, status

OTHER_MODEL = "fake-model-premium"
PRICES = {MODEL: (2.0, 8.0), OTHER_MODEL: (20.0, 80.0)}
ANSWER = '{"title": "Reliable pipelines"}'
Provider = OpenAICompatibleProvider | AnthropicProvider


class Title(BaseModel):
    title: str


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer=ANSWER) as fake:
        yield fake


@pytest.fixture
def make_provider(server: FakeLLMServer) -> Iterator[Callable[..., Provider]]:
    made: list[Provider] = []

    def build(dialect: str, *, timeout_s: float = 5.0, **limits: Any) -> Provider:
        provider: Provider
        if dialect == "openai":
            provider = OpenAICompatibleProvider(
                MODEL, SECRET, server.openai_base_url, timeout_s, PRICES, **limits
            )
        else:
            provider = AnthropicProvider(
                MODEL, SECRET, server.anthropic_base_url, timeout_s, 1024, PRICES, **limits
            )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


MakeProvider = Callable[..., Provider]


def raised_by(provider: Provider) -> AgentForgeError:
    with pytest.raises(AgentForgeError) as caught:
        provider.complete(REQUEST)
    return caught.value


def gateway_on(store: BusinessStore, provider: Provider, **options: Any) -> ModelGateway:
    return ModelGateway(
        store=store,
        providers=[provider],
        order_id="o-1",
        step="plan",
        run_id="run-1",
        attempt=1,
        prices=dict(PRICES),
        **options,
    )


def _http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


# --- waits a provider asks for --------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("behaviour", "asked"),
    [
        pytest.param(lambda: status(429, retry_after=999999), 999999.0, id="429-seconds"),
        pytest.param(lambda: status(429, retry_after_ms=999999000), 999999.0, id="429-ms"),
        pytest.param(
            lambda: status(429, retry_after=_http_date(timedelta(days=3 * 365))),
            3 * 365 * 86400.0,
            id="429-http-date-years-ahead",
        ),
        pytest.param(lambda: status(503, retry_after=86400), 86400.0, id="503-a-day"),
        pytest.param(lambda: status(529, retry_after=301), 301.0, id="529-just-over"),
    ],
)
def test_a_wait_longer_than_the_cap_fails_as_rate_limited_and_is_waited_no_longer(
    dialect: str,
    behaviour: Callable[[], Behaviour],
    asked: float,
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    server.script(behaviour())

    error = raised_by(make_provider(dialect))

    assert isinstance(error, RateLimited)
    assert error.retry_after == MAX_PROVIDER_WAIT_S
    assert error.asked_wait_s == pytest.approx(asked, abs=3.0)
    assert f"asked to wait {asked:.0f}"[:18] in str(error)
    assert error.provider == dialect


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("header", "expected"),
    [("-5", 0.0), ("nan", None), ("inf", None), ("1e400", None), ("300", 300.0)],
)
def test_a_wait_that_is_not_a_wait_is_none_or_nothing(
    dialect: str,
    header: str,
    expected: float | None,
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    server.script(status(429, retry_after=header))

    error = raised_by(make_provider(dialect))

    assert isinstance(error, RateLimited)
    assert error.retry_after == expected


def test_the_step_back_off_never_waits_longer_than_the_cap() -> None:
    backoff = StepBackoff(6, 1.0, 30.0, longest_asked_s=300.0)
    assert backoff.wait(1, at_least=999999.0) == 300.0
    assert backoff.wait(6, at_least=math.inf) <= 30.0
    assert backoff.wait(1, at_least=math.nan) <= 1.0
    assert backoff.wait(1, at_least=-50.0) <= 1.0
    assert backoff.wait(1, at_least=7.0) == 7.0


def test_a_429_pauses_the_shared_limits_no_longer_than_the_cap(store: BusinessStore) -> None:
    limits = RateLimits(requests_per_minute=60)
    for asked in (999999.0, math.inf, math.nan, -5.0):
        store.rate_limits.throttle("openai:m", limits, asked, longest_s=300.0)
        with store.engine.connect() as conn:
            paused = conn.execute(provider_rate_limits.select()).mappings().one()["paused_until"]
        if paused.tzinfo is None:
            paused = paused.replace(tzinfo=UTC)
        assert paused - utcnow() <= timedelta(seconds=300), asked
    assert store.rate_limits.throttle is not None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_order_whose_provider_asks_for_eleven_days_is_delivered_in_seconds(
    dialect: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, instance: DagsterInstance
) -> None:
    from agentforge_dagster.definitions import build_definitions
    from agentforge_dagster.orchestration.runner import run_order
    from tests.execution.test_model_pipeline import configure
    from tests.fakes.brain import offline_brain

    with FakeLLMServer(answer=offline_brain) as llm:
        llm.script(status(429, retry_after=999999))
        models = (
            f"openai:gpt-test@{llm.openai_base_url}"
            if dialect == "openai"
            else f"anthropic:claude-test@{llm.anthropic_base_url}"
        )
        settings = configure(
            monkeypatch, tmp_path, models, AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS="1"
        )
        store = BusinessStore.from_url(settings.storage.resolved_database_url())
        store.upgrade()
        order = store.orders.submit(make_order())
        started = time.monotonic()
        result = run_order(build_definitions(settings), instance, store, order.order_id)
        elapsed = time.monotonic() - started

    assert result.status is OrderStatus.COMPLETED
    assert elapsed < 120, "the step waited what the provider asked for"
    [failed] = [
        r for r in store.audit.audit_rows(order.order_id) if r["event"] == "model_call_failed"
    ]
    assert failed["detail"]["error_type"] == "RateLimited"
    assert "asked to wait 999999 s" in failed["detail"]["message"]


# --- usage and cost ---------------------------------------------------------------------------------


LYING_COUNTS = [
    pytest.param(-1_000_000, -500_000, id="negative"),
    pytest.param(10**12, 10**15, id="absurd"),
    pytest.param("lots", "-300", id="strings"),
    pytest.param(12.5, 3.75, id="fractions"),
    pytest.param(True, True, id="booleans"),
    pytest.param(0, 0, id="zero"),
    pytest.param({"n": 1}, [1], id="objects"),
    pytest.param(None, None, id="missing"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("input_tokens", "output_tokens"), LYING_COUNTS)
def test_counts_that_cannot_be_believed_are_estimated_and_cost_is_never_negative(
    dialect: str,
    input_tokens: Any,
    output_tokens: Any,
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    server.script(lying(ANSWER, input_tokens=input_tokens, output_tokens=output_tokens))

    response = make_provider(dialect).complete(REQUEST)

    assert 1 <= response.input_tokens <= 10_000
    assert response.output_tokens == estimate_tokens(ANSWER)
    assert type(response.input_tokens) is int and type(response.output_tokens) is int
    assert response.cost_usd > 0
    price_in, price_out = PRICES[MODEL]
    expected = (response.input_tokens * price_in + response.output_tokens * price_out) / 1e6
    assert response.cost_usd == pytest.approx(expected)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_provider_cannot_lower_the_months_budget_spend(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider, store: BusinessStore
) -> None:
    gateway = gateway_on(store, make_provider(dialect), default_budget_usd=Decimal("100"))
    gateway.ask(ModelRequest(task="plan", prompt="An honest call."), Title)
    before = store.model_calls.month_spend(month_of())
    assert before > 0

    server.script(lying(ANSWER, input_tokens=-4_000_000_000, output_tokens=-1_000_000_000))
    gateway.ask(ModelRequest(task="plan", prompt="A call that credits the budget."), Title)

    after = store.model_calls.month_spend(month_of())
    assert after > before
    assert all(Decimal(str(row["cost_usd"])) >= 0 for row in store.model_calls.model_call_rows())
    assert store.model_calls.budget_in_flight(month_of()) == 0


class CreditingProvider:
    """A provider of any kind (not ours) whose answer says it cost less than nothing."""

    name = "crediting"
    model = MODEL

    def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(ANSWER, self.name, self.model, -100, -100, -9.45, 0.0)


def test_the_gateway_and_the_store_refuse_a_negative_cost(store: BusinessStore) -> None:
    gateway = ModelGateway(
        store=store,
        providers=[CreditingProvider()],
        order_id="o-1",
        step="plan",
        run_id="run-1",
        attempt=1,
        prices=dict(PRICES),
        default_budget_usd=Decimal("100"),
    )
    gateway.ask(REQUEST, Title)

    [row] = store.model_calls.model_call_rows()
    assert Decimal(str(row["cost_usd"])) > 0 and row["input_tokens"] > 0
    assert store.model_calls.month_spend(month_of()) > 0
    with pytest.raises(ValueError, match="never negative"):
        store.model_calls.record_model_call(
            order_id="o-1",
            step="plan",
            run_id="run-1",
            attempt=1,
            provider="p",
            model="m",
            input_tokens=1,
            output_tokens=1,
            cost_usd=-9.45,
            latency_s=0.0,
            started_at=utcnow(),
            ended_at=utcnow(),
            cache_hit=False,
        )


# --- the model that answered ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("said", "served", "priced_as"),
    [
        pytest.param(OTHER_MODEL, OTHER_MODEL, OTHER_MODEL, id="another-known-model"),
        pytest.param("fake-model-1-2026-12-01", "fake-model-1-2026-12-01", MODEL, id="an-alias"),
        pytest.param(42, None, MODEL, id="not-a-name"),
        pytest.param("x" * 500, None, MODEL, id="too-long"),
        pytest.param(None, None, MODEL, id="not-said"),
    ],
)
def test_the_model_that_answered_is_recorded_and_priced(
    dialect: str,
    said: Any,
    served: str | None,
    priced_as: str,
    server: FakeLLMServer,
    make_provider: MakeProvider,
    store: BusinessStore,
) -> None:
    server.script(lying(ANSWER, input_tokens=1000, output_tokens=100, model=said))
    gateway = gateway_on(store, make_provider(dialect))

    gateway.ask(REQUEST, Title)

    [call] = store.model_calls.model_call_rows()
    assert (call["model"], call["served_model"]) == (MODEL, served)
    price_in, price_out = PRICES[priced_as]
    assert float(call["cost_usd"]) == pytest.approx((1000 * price_in + 100 * price_out) / 1e6)
    stored = store.model_calls.stored_response(call["cache_key"])
    assert stored is not None and stored["served_model"] == served


# --- size, drip, bytes ------------------------------------------------------------------------------

CAP = 64 * 1024


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(lying(size=30 * 1024 * 1024), id="30MB-with-its-length"),
        pytest.param(lying(size=30 * 1024 * 1024, no_length=True), id="30MB-no-length"),
        pytest.param(lying(size=2 * CAP, content_length=CAP // 2), id="length-says-less"),
        pytest.param(lying(size=50 * 1024 * 1024, gzip=True), id="gzip-bomb"),
        pytest.param(status(500, body="x" * (30 * 1024 * 1024)), id="30MB-error-body"),
    ],
)
def test_an_answer_over_the_size_cap_is_not_read_and_not_stored(
    dialect: str,
    behaviour: Behaviour,
    server: FakeLLMServer,
    make_provider: MakeProvider,
    store: BusinessStore,
) -> None:
    server.script(behaviour)
    gateway = gateway_on(store, make_provider(dialect, max_response_bytes=CAP))

    with pytest.raises(TransientError) as caught:
        gateway.ask(REQUEST, Title)

    error = caught.value
    if behaviour.lie is not None and behaviour.lie.content_length is not None:
        # h11 reads what Content-Length says and no more: the rest is never read either.
        assert isinstance(error, MalformedResponse | TransientError)
    else:
        assert isinstance(error, MalformedResponse), error
        assert error.provider == dialect
        assert f"{CAP} bytes" in str(error)
    with store.engine.connect() as conn:
        assert conn.execute(model_responses.select()).first() is None
    assert store.model_calls.model_call_rows() == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_content_length_over_the_cap_is_refused_before_reading(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(lying(size=100, content_length=10**9))

    error = raised_by(make_provider(dialect, max_response_bytes=CAP))

    assert isinstance(error, MalformedResponse)
    assert "Content-Length" in str(error) and str(10**9) in str(error)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_answer_under_the_cap_is_read_whole(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(lying(ANSWER, size=CAP - 1024), lying(ANSWER, size=CAP * 4, gzip=True))
    provider = make_provider(dialect, max_response_bytes=CAP)
    assert provider.complete(REQUEST).text == ANSWER
    assert isinstance(raised_by(provider), MalformedResponse)  # decoded, it is over


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_drip_ends_as_a_timeout_at_the_deadline(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(lying(ANSWER, drip_bytes=1, drip_delay_s=0.05))  # about 15 s for the body
    provider = make_provider(dialect, timeout_s=1.0)

    started = time.monotonic()
    error = raised_by(provider)
    elapsed = time.monotonic() - started

    assert isinstance(error, ProviderTimeout)
    assert error.provider == dialect
    assert elapsed < 3.0, "read on past the deadline"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_drip_past_the_gateways_deadline_leaves_no_thread_reading(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider, store: BusinessStore
) -> None:
    server.script(lying(ANSWER, drip_bytes=1, drip_delay_s=0.5))  # a byte every half second
    gateway = gateway_on(store, make_provider(dialect, timeout_s=1.5), timeout_s=1.5)

    started = time.monotonic()
    with pytest.raises((ModelCallTimeout, ProviderTimeout)):  # whichever deadline fires first
        gateway.ask(REQUEST, Title)
    assert time.monotonic() - started < 3.0

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        any(t.name.startswith("model-call") for t in threading.enumerate())
        or not server.requests[0].client_gone
    ):
        time.sleep(0.1)
    assert not any(t.name.startswith("model-call") for t in threading.enumerate())
    assert server.requests[0].client_gone, "the client kept reading the drip"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"id": "\xff\xfe\xfd", "model": "m"}', id="latin-bytes"),
        pytest.param(b"\x80" * 64, id="continuation-bytes"),
        pytest.param(b'{"model": "\xed\xa0\x80"}', id="surrogate"),
    ],
)
def test_a_body_that_is_not_utf8_is_malformed_naming_the_provider(
    dialect: str, raw: bytes, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(lying(raw=raw))

    error = raised_by(make_provider(dialect))

    assert isinstance(error, MalformedResponse)
    assert error.provider == dialect and MODEL in str(error)


# --- shapes that lie ------------------------------------------------------------------------------


def _choices(message: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


SHAPES: list[Any] = [
    pytest.param({"choices": []}, {"content": []}, id="no-answer"),
    pytest.param({"choices": {"0": 1}}, {"content": {"0": 1}}, id="not-a-list"),
    pytest.param({"choices": "yes"}, {"content": "yes"}, id="a-string"),
    pytest.param(
        _choices({"role": "assistant", "content": 42}),
        {"content": [{"type": "text", "text": 42}]},
        id="content-a-number",
    ),
    pytest.param(
        _choices({"role": "assistant", "content": {"title": "x"}}),
        {"content": [{"type": "text", "text": {"title": "x"}}]},
        id="content-an-object",
    ),
    pytest.param(
        {"choices": [{"index": 0, "message": None}]},
        {"content": [{"type": "tool_use", "id": "t", "name": "x", "input": [1, 2]}]},
        id="no-message-or-tool-input-a-list",
    ),
    pytest.param(
        {"choices": None, "error": {"message": "upstream failed", "type": "server_error"}},
        {"type": "error", "error": {"type": "api_error", "message": "upstream failed"}},
        id="a-200-with-an-error",
    ),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("openai_fields", "anthropic_fields"), SHAPES)
def test_a_body_of_the_wrong_shape_is_malformed_naming_the_provider(
    dialect: str,
    openai_fields: dict[str, Any],
    anthropic_fields: dict[str, Any],
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    server.script(lying(fields=openai_fields if dialect == "openai" else anthropic_fields))

    error = raised_by(make_provider(dialect))

    assert isinstance(error, MalformedResponse), error
    assert error.provider == dialect and MODEL in str(error)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_json_nesting_bomb_is_malformed(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(lying(raw=b"[" * 200_000 + b"]" * 200_000))

    error = raised_by(make_provider(dialect))

    assert isinstance(error, MalformedResponse)
    assert error.provider == dialect


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_huge_number_of_choices_gives_the_first(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    message = {"role": "assistant", "content": ANSWER}
    choices = [{"index": i, "message": message, "finish_reason": "stop"} for i in range(5_000)]
    blocks = [{"type": "text", "text": ANSWER}] + [{"type": "text", "text": ""}] * 5_000
    server.script(
        lying(fields={"choices": choices} if dialect == "openai" else {"content": blocks})
    )

    assert make_provider(dialect).complete(REQUEST).text == ANSWER


# --- only answers that validated are kept ---------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_only_an_answer_that_validated_is_kept(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider, store: BusinessStore
) -> None:
    server.script(ok('{"headline": "not the schema"}'), ok(ANSWER))
    provider = make_provider(dialect)
    gateway = gateway_on(store, provider)

    assert gateway.ask(REQUEST, Title).title == "Reliable pipelines"

    assert store.model_calls.stored_response(cache_key(provider, REQUEST)) is None
    with store.engine.connect() as conn:
        kept = [dict(row) for row in conn.execute(model_responses.select()).mappings()]
    assert [json.loads(row["text"]) for row in kept] == [{"title": "Reliable pipelines"}]
    invalid, valid = store.model_calls.model_call_rows()
    assert invalid["cache_key"] is None and valid["cache_key"] == kept[0]["cache_key"]
    # Asked again (a retried step), the invalid answer is not served from the store.
    server.script(ok(ANSWER))
    assert gateway.ask(REQUEST, Title).title == "Reliable pipelines"
    assert len(server.requests) == 3
