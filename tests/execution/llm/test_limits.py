"""The fake provider's real limits, and our shared limiter measured against them side by side."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from agentforge_dagster.domain.errors import TransientError
from agentforge_dagster.domain.limits import BreakerPolicy, RateLimits
from agentforge_dagster.execution.gateway import ModelGateway
from agentforge_dagster.execution.llm.base import ModelRequest
from agentforge_dagster.execution.llm.openai import OpenAICompatibleProvider
from agentforge_dagster.persistence.store import BusinessStore
from tests.fakes.llm_server import FakeLLMServer, ProviderLimits


def post(fake: FakeLLMServer) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"{fake.openai_base_url}/chat/completions",
        data=json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers)


def test_the_fake_provider_enforces_its_limits_with_the_providers_headers() -> None:
    with FakeLLMServer(limits=ProviderLimits(requests_per_minute=3)) as fake:
        answers = [post(fake) for _ in range(4)]
    assert [code for code, _ in answers] == [200, 200, 200, 429]
    assert [h["x-ratelimit-remaining-requests"] for _, h in answers[:3]] == ["2", "1", "0"]
    assert answers[0][1]["x-ratelimit-limit-requests"] == "3"
    assert 1 <= int(answers[3][1]["Retry-After"]) <= 60
    assert fake.rate_limited == 1


def run_orders(store: BusinessStore, fake: FakeLLMServer, limits: RateLimits | None) -> int:
    """Eight workers, one call each; how many got an answer (the rest failed transiently)."""
    provider = OpenAICompatibleProvider("m1", "key", fake.openai_base_url, 10.0, name="fake")

    def one(order: int) -> bool:
        gateway = ModelGateway(
            store=store,
            providers=[provider],
            order_id=f"o-{order}",
            step="plan",
            run_id=f"run-{order}",
            attempt=1,
            rate_limits={"fake:m1": limits} if limits is not None else {},
            breaker=BreakerPolicy(threshold=0),  # measured alone: no breaker opening
        )
        try:
            gateway.complete(ModelRequest(task="plan", prompt=f"Plan post {order}."))
        except TransientError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, range(8)))


def test_our_shared_limit_keeps_eight_workers_inside_the_providers(store: BusinessStore) -> None:
    limits = ProviderLimits(concurrency=2, latency_s=0.3)
    with FakeLLMServer(limits=limits) as plain:  # each worker for itself: the provider says 429
        answered_alone = run_orders(store, plain, None)
    with FakeLLMServer(limits=limits) as shared:  # one limit for all: no 429 at all
        answered_shared = run_orders(store, shared, RateLimits(concurrency=2))
    assert plain.rate_limited > 0 and answered_alone < 8
    assert shared.rate_limited == 0 and answered_shared == 8
    assert shared.most_at_once == 2


def test_our_limit_follows_the_providers_headers_when_set_too_high(store: BusinessStore) -> None:
    """Configured at 100 requests a minute for a provider that allows 3: from its headers the
    limiter knows after each answer what is left, and the fourth call waits here instead of
    going out to meet a 429."""
    limits = RateLimits(requests_per_minute=100)

    def four_calls(fake: FakeLLMServer, name: str) -> list[str]:
        provider = OpenAICompatibleProvider("m1", "key", fake.openai_base_url, 10.0, name=name)
        outcomes = []
        for order in range(4):
            gateway = ModelGateway(
                store=store,
                providers=[provider],
                order_id=f"{name}-{order}",
                step="plan",
                run_id=f"run-{order}",
                attempt=1,
                rate_limits={f"{name}:m1": limits},
                breaker=BreakerPolicy(threshold=0),
                max_rate_wait_s=0.0,
            )
            try:
                gateway.complete(ModelRequest(task="plan", prompt=f"Plan post {order}."))
                outcomes.append("answered")
            except TransientError as exc:
                outcomes.append(type(exc).__name__)
        provider.close()
        return outcomes

    with FakeLLMServer(limits=ProviderLimits(requests_per_minute=3)) as fake:
        outcomes = four_calls(fake, "headers")
        assert outcomes[:3] == ["answered"] * 3
        assert outcomes[3] == "ProviderRateLimited"  # our limiter's refusal: nothing was sent
        assert len(fake.requests) == 3 and fake.rate_limited == 0
