"""The real providers, through the official SDKs, against a real HTTP fake on 127.0.0.1.

Nothing of ours is mocked: the SDK builds and sends real requests, the fake answers over a socket,
and the tests check which of our error classes comes out, how many requests went over the wire,
and that the API key stays out of every exception and log line.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from agentforge_dagster.domain.errors import AgentForgeError, PermanentError, TransientError
from agentforge_dagster.domain.models import DraftProposal, PlanProposal
from agentforge_dagster.execution.llm.anthropic import AnthropicProvider
from agentforge_dagster.execution.llm.base import DEFAULT_PRICES, ModelProvider, ModelRequest
from agentforge_dagster.execution.llm.openai import OpenAICompatibleProvider
from agentforge_dagster.execution.llm.sdk import (
    AuthenticationFailed,
    BadRequest,
    ContentRefused,
    ContextTooLong,
    MalformedResponse,
    OutputTruncated,
    ProviderOverloaded,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    cost_usd,
    parse_retry_after,
    strict_compatible,
)
from tests.fakes.llm_server import (
    Behaviour,
    FakeLLMServer,
    Structured,
    content_policy_rejection,
    context_too_long,
    disconnect,
    hang,
    invalid_json,
    ok,
    refusal,
    status,
    truncated,
    user_prompt,
)

SECRET = "sk-test-SECRET-123"
MODEL = "fake-model-1"
PRICES = {MODEL: (2.0, 8.0)}
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
}
REQUEST = ModelRequest(
    task="plan", prompt="Plan a post about reliable pipelines.", output_schema=SCHEMA
)
STRICT_SCHEMA = {
    "title": "Plan Proposal",
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 1}},
    "required": ["title"],
    "additionalProperties": False,
}
DIALECTS = ["openai", "anthropic"]

Provider = OpenAICompatibleProvider | AnthropicProvider
MakeProvider = Callable[..., Provider]

_ENVIRONMENT = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_LOG",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_PROFILE",
]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every request on 127.0.0.1: no proxy or SDK setting from the environment applies."""
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def provider_at(fake: FakeLLMServer, dialect: str) -> Provider:
    """A provider of ``dialect`` pointed at a fake of the test's own (the caller closes it)."""
    if dialect == "openai":
        return OpenAICompatibleProvider(MODEL, SECRET, fake.openai_base_url, 5.0, PRICES)
    return AnthropicProvider(MODEL, SECRET, fake.anthropic_base_url, 5.0, 1024, PRICES)


@pytest.fixture
def make_provider(server: FakeLLMServer) -> Iterator[Callable[..., Provider]]:
    """Builds providers of either dialect pointed at the fake; closes them afterwards."""
    made: list[Provider] = []

    def build(dialect: str, *, timeout_s: float = 5.0, **options: Any) -> Provider:
        provider: Provider
        if dialect == "openai":
            provider = OpenAICompatibleProvider(
                model=MODEL,
                api_key=options.pop("api_key", SECRET),
                base_url=server.openai_base_url,
                timeout_s=timeout_s,
                prices=options.pop("prices", PRICES),
                **options,
            )
        else:
            provider = AnthropicProvider(
                model=MODEL,
                api_key=options.pop("api_key", SECRET),
                base_url=server.anthropic_base_url,
                timeout_s=timeout_s,
                max_tokens=options.pop("max_tokens", 1024),
                prices=options.pop("prices", PRICES),
                **options,
            )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


def raised_by(provider: ModelProvider, request: ModelRequest = REQUEST) -> AgentForgeError:
    with pytest.raises(AgentForgeError) as caught:
        provider.complete(request)
    return caught.value


# --- normal answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_answer_text_tokens_and_cost(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(ok('{"title": "Reliable pipelines"}', input_tokens=1200, output_tokens=300))
    provider = make_provider(dialect)

    response = provider.complete(REQUEST)

    assert response.text == '{"title": "Reliable pipelines"}'
    assert (response.provider, response.model) == (dialect, MODEL)
    assert (response.input_tokens, response.output_tokens) == (1200, 300)
    assert response.cost_usd == pytest.approx(1200 * 2.0 / 1e6 + 300 * 8.0 / 1e6)
    assert 0 < response.latency_s < 5
    assert len(server.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_request_carries_schema_instruction_and_prompt(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    make_provider(dialect).complete(REQUEST)

    (seen,) = server.requests
    body = seen.body
    assert body["model"] == MODEL
    assert user_prompt(body) == REQUEST.prompt
    if dialect == "openai":
        assert seen.path == "/v1/chat/completions"
        system = body["messages"][0]
        assert system["role"] == "system"
        instruction = system["content"]
        # SCHEMA leaves objects open, which strict mode refuses: it goes as a guide, not strict.
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": SCHEMA, "strict": False},
        }
    else:
        assert seen.path == "/v1/messages"
        instruction = body["system"]
        assert body["max_tokens"] == 1024
        [tool] = body["tools"]
        assert tool["name"] == "plan" and tool["input_schema"] == SCHEMA
        assert body["tool_choice"] == {"type": "tool", "name": "plan"}
    # The instruction stays: a server that ignores the structured request still sees the schema.
    assert "JSON" in instruction
    assert json.dumps(SCHEMA, indent=2, sort_keys=True) in instruction


def test_a_schema_that_strict_mode_takes_is_sent_strict(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    request = ModelRequest(task="plan", prompt="Plan it.", output_schema=STRICT_SCHEMA)

    make_provider("openai").complete(request)

    [seen] = server.requests  # the fake, like OpenAI, refuses strict on a schema it cannot take
    assert seen.body["response_format"]["json_schema"]["strict"] is True
    assert seen.body["response_format"]["json_schema"]["name"] == "Plan_Proposal"


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        pytest.param(PlanProposal.model_json_schema(), True, id="plan-proposal"),
        pytest.param(DraftProposal.model_json_schema(), True, id="draft-proposal-with-defs"),
        pytest.param(STRICT_SCHEMA, True, id="closed"),
        pytest.param(SCHEMA, False, id="open-object"),
        pytest.param({**STRICT_SCHEMA, "required": []}, False, id="optional-field"),
        pytest.param(
            {
                **STRICT_SCHEMA,
                "properties": {"meta": {"type": "object", "properties": {}}},
                "required": ["meta"],
            },
            False,
            id="open-nested-object",
        ),
        pytest.param(
            {**STRICT_SCHEMA, "properties": {"properties": {"type": "string"}}, "required": []},
            False,
            id="a-field-named-properties",
        ),
    ],
)
def test_strict_compatible(schema: dict[str, Any], strict: bool) -> None:
    assert strict_compatible(schema) is strict


@pytest.mark.parametrize("dialect", DIALECTS)
def test_structured_output_can_be_turned_off(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    make_provider(dialect, structured_output=False).complete(REQUEST)

    body = server.requests[0].body
    assert "response_format" not in body and "tools" not in body and "tool_choice" not in body


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_request_without_a_schema_asks_for_no_structured_output(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    make_provider(dialect).complete(ModelRequest(task="plan", prompt="Plan it."))

    body = server.requests[0].body
    assert "response_format" not in body and "tools" not in body


def test_anthropic_answer_is_the_forced_tools_input(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(ok('{ "title" :  "Reliable pipelines" }', input_tokens=10, output_tokens=5))

    response = make_provider("anthropic").complete(REQUEST)

    # Re-serialised from the tool_use block's input, not the scripted text as it was written.
    assert response.text == '{"title": "Reliable pipelines"}'
    assert (response.input_tokens, response.output_tokens) == (10, 5)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_server_that_ignores_structured_output_answers_in_text(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.structured = "ignore"
    server.script(ok('```json\n{"title": "Fenced"}\n```'))

    response = make_provider(dialect).complete(REQUEST)

    assert response.text == '```json\n{"title": "Fenced"}\n```'  # the gateway strips and checks
    body = server.requests[0].body
    assert "response_format" in body or "tools" in body


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_server_that_rejects_structured_output_is_asked_without_it_from_then_on(
    dialect: str,
    server: FakeLLMServer,
    make_provider: MakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.structured = "reject"
    server.script(ok('{"title": "first"}'), ok('{"title": "second"}'))
    provider = make_provider(dialect)

    first = provider.complete(REQUEST)
    second = provider.complete(REQUEST)

    assert (first.text, second.text) == ('{"title": "first"}', '{"title": "second"}')
    asked = ["response_format" in r.body or "tools" in r.body for r in server.requests]
    assert asked == [True, False, False], "refused once, then never asked for again"
    assert server.requests[0].behaviour == "structured_refused"
    assert "rejected structured output" in caplog.text
    assert provider.structured_output is False


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("mode", ["honour", "ignore", "reject"])
def test_a_400_about_something_else_is_not_taken_for_a_refusal_of_structured_output(
    dialect: str, mode: Structured, make_provider: MakeProvider
) -> None:
    with FakeLLMServer(structured=mode) as fake:
        fake.script(status(400), status(400))
        provider = provider_at(fake, dialect)
        try:
            for _ in range(2):
                assert isinstance(raised_by(provider), BadRequest)
        finally:
            provider.close()
        # A rejecting server refuses the first structured request only; the 400s are not retried.
        assert len(fake.requests) == (3 if mode == "reject" else 2)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_model_costs_nothing(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(ok(input_tokens=1000, output_tokens=1000))

    response = make_provider(dialect, prices={"some-other-model": (5.0, 5.0)}).complete(REQUEST)

    assert response.cost_usd == 0.0
    assert response.input_tokens == 1000


@pytest.mark.parametrize("dialect", DIALECTS)
def test_missing_usage_falls_back_to_an_estimate(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    answer = '{"title": "' + "x" * 400 + '"}'
    server.script(ok(answer, include_usage=False))

    response = make_provider(dialect).complete(REQUEST)

    assert response.output_tokens == len(answer) // 4
    assert response.input_tokens > len(REQUEST.prompt) // 4  # prompt plus the schema instruction


def test_default_answer_can_depend_on_the_prompt(make_provider: MakeProvider) -> None:
    with FakeLLMServer(answer=lambda body: json.dumps({"title": user_prompt(body)[::-1]})) as fake:
        for dialect in DIALECTS:
            provider = provider_at(fake, dialect)
            try:
                answer = provider.complete(REQUEST)
            finally:
                provider.close()
            assert json.loads(answer.text) == {"title": REQUEST.prompt[::-1]}
        assert len(fake.requests) == 2


def test_cost_table() -> None:
    assert cost_usd(PRICES, MODEL, 1_000_000, 1_000_000) == pytest.approx(10.0)
    assert cost_usd(PRICES, "unlisted", 1_000_000, 1_000_000) == 0.0
    assert all(len(price) == 2 and min(price) >= 0 for price in DEFAULT_PRICES.values())


# --- error classification ----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, Behaviour, type[AgentForgeError], int | None]] = [
    ("429", status(429), RateLimited, 429),
    ("500", status(500), ProviderUnavailable, 500),
    ("502-html", status(502, body="<html>502 Bad Gateway</html>"), ProviderUnavailable, 502),
    ("503", status(503), ProviderUnavailable, 503),
    ("504", status(504), ProviderTimeout, 504),
    ("529", status(529), ProviderOverloaded, 529),
    ("400-context", context_too_long(), ContextTooLong, 400),
    ("400-policy", content_policy_rejection(), ContentRefused, 400),
    ("400", status(400), BadRequest, 400),
    ("401", status(401), AuthenticationFailed, 401),
    ("403", status(403), AuthenticationFailed, 403),
    ("404", status(404), BadRequest, 404),
    ("408", status(408), ProviderTimeout, 408),
    ("409", status(409), ProviderUnavailable, 409),
    ("413", status(413), ContextTooLong, 413),
    ("501", status(501), BadRequest, 501),
    ("422", status(422), BadRequest, 422),
    ("refusal", refusal(), ContentRefused, None),
    ("length", ok('{"title": "cut', finish_reason="length"), OutputTruncated, None),
    ("invalid-json", invalid_json(), MalformedResponse, None),
    ("truncated", truncated(), ProviderUnavailable, None),
    ("disconnect", disconnect(), ProviderUnavailable, None),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("behaviour", "expected", "status_code"),
    [pytest.param(b, e, s, id=name) for name, b, e, s in ERROR_CASES],
)
def test_each_failure_maps_to_its_class(
    dialect: str,
    behaviour: Behaviour,
    expected: type[AgentForgeError],
    status_code: int | None,
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    if behaviour.finish_reason == "length" and dialect == "anthropic":
        behaviour = ok('{"title": "cut', finish_reason="max_tokens")
    server.script(behaviour)

    error = raised_by(make_provider(dialect))

    assert type(error) is expected
    assert isinstance(error, TransientError) != isinstance(error, PermanentError)
    assert error.status_code == status_code  # type: ignore[attr-defined]
    assert error.provider == dialect  # type: ignore[attr-defined]
    assert MODEL in str(error)
    assert len(server.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"unexpected": 1}, id="wrong-shape"),
        pytest.param({"choices": [], "content": []}, id="no-answer"),
        pytest.param({"choices": [{"message": None}], "content": [{"type": "text"}]}, id="no-text"),
        pytest.param("[1, 2]", id="a-list"),
    ],
)
def test_a_200_without_a_usable_answer_is_malformed(
    dialect: str, body: Any, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(status(200, body=body))

    error = raised_by(make_provider(dialect))

    assert isinstance(error, MalformedResponse)
    assert isinstance(error, TransientError)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_anthropic_style_overloaded_body_is_overloaded_whatever_the_status(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    server.script(status(500, body=body))

    assert isinstance(raised_by(make_provider(dialect)), ProviderOverloaded)


def test_connection_refused_is_transient(make_provider: MakeProvider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    for provider in (
        OpenAICompatibleProvider(MODEL, SECRET, f"http://127.0.0.1:{free_port}/v1", 2.0),
        AnthropicProvider(MODEL, SECRET, f"http://127.0.0.1:{free_port}", 2.0),
    ):
        try:
            error = raised_by(provider)
        finally:
            provider.close()
        assert isinstance(error, ProviderUnavailable)
        assert error.status_code is None
        assert "ConnectError" in str(error)


# --- Retry-After --------------------------------------------------------------------------------


def _http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("behaviour", "expected", "retry_after"),
    [
        pytest.param(lambda: status(429, retry_after=7), RateLimited, 7.0, id="429-seconds"),
        pytest.param(lambda: status(429, retry_after_ms=1500), RateLimited, 1.5, id="429-ms"),
        pytest.param(
            lambda: status(429, retry_after=_http_date(timedelta(seconds=30))),
            RateLimited,
            30.0,
            id="429-http-date",
        ),
        pytest.param(
            lambda: status(503, retry_after=3), ProviderUnavailable, 3.0, id="503-seconds"
        ),
        pytest.param(
            lambda: status(503, retry_after=_http_date(timedelta(seconds=20))),
            ProviderUnavailable,
            20.0,
            id="503-http-date",
        ),
        pytest.param(lambda: status(529, retry_after=4), ProviderOverloaded, 4.0, id="529-seconds"),
        pytest.param(lambda: status(429), RateLimited, None, id="429-no-header"),
    ],
)
def test_retry_after_reaches_the_exception(
    dialect: str,
    behaviour: Callable[[], Behaviour],
    expected: type[TransientError],
    retry_after: float | None,
    server: FakeLLMServer,
    make_provider: MakeProvider,
) -> None:
    server.script(behaviour())  # built now, so an HTTP-date is relative to this moment

    error = raised_by(make_provider(dialect))

    assert isinstance(error, expected)
    if retry_after is None:
        assert error.retry_after is None
    else:
        # HTTP-dates have one-second resolution and the clock moves while the test runs.
        assert error.retry_after == pytest.approx(retry_after, abs=2.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER-MS": "250"}, 0.25),
        ({"retry-after-ms": "2000", "retry-after": "9"}, 2.0),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"Retry-After": _http_date(timedelta(seconds=-60))}, 0.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "whenever"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    parsed = parse_retry_after({"Retry-After": _http_date(timedelta(minutes=2))})
    assert parsed == pytest.approx(120.0, abs=2.0)


# --- exactly one request per call (the SDK's own retries are off) ------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(status(429, retry_after=0), id="429"),
        pytest.param(status(500), id="500"),
        pytest.param(status(503), id="503"),
        pytest.param(status(529), id="529"),
        pytest.param(status(409), id="409"),
        pytest.param(status(500, headers={"x-should-retry": "true"}), id="500-should-retry"),
        pytest.param(disconnect(), id="disconnect"),
        pytest.param(truncated(), id="truncated"),
    ],
)
def test_one_http_request_per_call_even_when_the_sdk_would_retry(
    dialect: str, behaviour: Behaviour, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(behaviour, behaviour)  # a retry would meet the same failure again
    provider = make_provider(dialect)

    with pytest.raises(TransientError):
        provider.complete(REQUEST)
    time.sleep(0.3)  # room for a late retry to show up

    assert len(server.requests) == 1
    assert server.pending == 1
    assert server.requests[0].headers.get("x-stainless-retry-count") == "0"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_hang_past_the_timeout_raises_provider_timeout_promptly(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(hang(30))
    provider = make_provider(dialect, timeout_s=0.5)

    started = time.monotonic()
    error = raised_by(provider)
    elapsed = time.monotonic() - started
    time.sleep(0.3)

    assert isinstance(error, ProviderTimeout)
    assert error.status_code is None
    assert 0.4 <= elapsed < 15.0, "well before the 30 s hang: the timeout, not the server"
    assert len(server.requests) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_slow_answer_inside_the_timeout_succeeds(
    dialect: str, server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.script(hang(0.3, then=ok('{"title": "late but fine"}')))

    response = make_provider(dialect, timeout_s=3.0).complete(REQUEST)

    assert response.text == '{"title": "late but fine"}'
    assert response.latency_s >= 0.3


# --- the API key stays secret ------------------------------------------------------------------

SECRET_CASES: list[Behaviour] = [
    status(429, retry_after=1),
    status(500),
    status(529),
    status(401),
    context_too_long(),
    refusal(),
    invalid_json(),
    truncated(),
    disconnect(),
    hang(10),
    # A server that echoes the key back in its error message must not leak it through us.
    status(401, body={"error": {"message": f"Incorrect API key provided: {SECRET}."}}),
    status(
        400,
        body={"type": "error", "error": {"type": "invalid_request_error", "message": SECRET}},
    ),
    status(502, body=f"<html>bad gateway for key {SECRET}</html>"),
]


def _everything_said_about(error: BaseException) -> str:
    parts = [str(error), repr(error), *map(repr, error.args)]
    parts += traceback.format_exception(error)
    return "\n".join(parts)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_api_key_is_sent_but_never_shown(
    dialect: str,
    server: FakeLLMServer,
    make_provider: MakeProvider,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "anthropic", "httpx2", "httpcore2", "httpx", "httpcore", "agentforge"):
        caplog.set_level(logging.DEBUG, logger=name)
    provider = make_provider(dialect, timeout_s=0.5)
    server.script(*SECRET_CASES)

    said: list[str] = [repr(provider), str(provider)]
    errors: list[AgentForgeError] = []
    for _ in SECRET_CASES:
        errors.append(raised_by(provider))
    provider.complete(REQUEST)  # and a success, for its log lines
    for error in errors:
        said.append(_everything_said_about(error))
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    said += [formatter.format(record) for record in caplog.records]
    captured = capsys.readouterr()
    said += [captured.out, captured.err]

    requests = server.requests
    assert len(requests) == len(SECRET_CASES) + 1
    for seen in requests:
        # Both SDKs send the key as a bearer token (anthropic 2.x no longer sends x-api-key).
        assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert any(r.name.startswith(dialect) for r in caplog.records), "SDK debug logs were captured"
    assert any("[redacted]" in text for text in said), "the echoed key was scrubbed, not dropped"
    for text in said:
        assert SECRET not in text
    # Chaining keeps the SDK error for debugging, except where that error holds the key.
    assert type(errors[0].__cause__).__name__ == "RateLimitError"
    assert errors[-3].__cause__ is None and errors[-3].__context__ is None


def test_placeholder_key_for_keyless_local_servers(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    make_provider("openai", api_key=None).complete(REQUEST)
    make_provider("anthropic", api_key="").complete(REQUEST)

    openai_seen, anthropic_seen = server.requests
    assert openai_seen.headers["authorization"] == "Bearer not-needed"
    assert anthropic_seen.headers["authorization"] == "Bearer not-needed"
