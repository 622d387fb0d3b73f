"""Shared rate limits: every worker draws on one budget of requests, tokens and call slots."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from agentforge_dagster.domain.errors import ProviderRateLimited
from agentforge_dagster.domain.limits import RateLimits, parse_rate_limits
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.execution.gateway import ModelGateway
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse
from agentforge_dagster.persistence.schema import provider_rate_limits
from agentforge_dagster.persistence.store import BusinessStore


def request(order: int) -> ModelRequest:
    """Another request per order: a request answered before is served from the store, unpaid."""
    return ModelRequest(task="plan", prompt=f"Plan a blog post about reliable pipelines, {order}.")


class Provider:
    """A model provider (outside what is tested) that counts how many calls it has at once."""

    name, model = "fake", "m1"

    def __init__(self, latency_s: float = 0.0, answer_429: int = 0) -> None:
        self.latency_s, self.answer_429 = latency_s, answer_429
        self.lock = threading.Lock()
        self.now = self.most = self.calls = 0

    def complete(self, request: ModelRequest) -> ModelResponse:
        with self.lock:
            self.calls += 1
            self.now += 1
            self.most = max(self.most, self.now)
            refuse = self.calls <= self.answer_429
        try:
            if refuse:
                raise ProviderRateLimited("429 too many requests", retry_after=30)
            time.sleep(self.latency_s)
            return ModelResponse("{}", self.name, self.model, 10, 10, 0.0, self.latency_s)
        finally:
            with self.lock:
                self.now -= 1


def gateway(
    store: BusinessStore, provider: Provider, limits: RateLimits, order: int = 0
) -> ModelGateway:
    return ModelGateway(
        store=store,
        providers=[provider],
        order_id=f"o-{order}",
        step="plan",
        run_id=f"run-{order}",
        attempt=1,
        rate_limits={"fake:m1": limits},
        max_rate_wait_s=20,
    )


def test_calls_at_once_never_exceed_the_shared_concurrency(store: BusinessStore) -> None:
    provider = Provider(latency_s=0.5)
    limits = RateLimits(concurrency=2)
    with ThreadPoolExecutor(6) as pool:  # six workers, one limit
        answers = list(
            pool.map(lambda i: gateway(store, provider, limits, i).complete(request(i)), range(6))
        )
    assert len(answers) == 6 and provider.most == 2
    assert store.rate_limits.calls_in_flight("fake:m1") == 0


def test_requests_a_minute_spread_the_calls_out(store: BusinessStore) -> None:
    provider = Provider()
    limits = RateLimits(requests_per_minute=120)  # a bucket of 120, refilled by one every 0.5 s
    granted = 0
    while store.rate_limits.acquire_call("fake:m1", limits, 10).granted:  # other workers emptied it
        granted += 1
    assert 120 <= granted < 130
    started = time.monotonic()
    for order in range(3):
        gateway(store, provider, limits, order).complete(request(order))
    # Three calls waited for the bucket (about 1.5 s); the upper bound only rules out a hang.
    assert 1.0 <= time.monotonic() - started < 30.0


def test_a_429_pauses_the_provider_for_everyone_and_a_long_wait_is_a_transient_failure(
    store: BusinessStore,
) -> None:
    provider = Provider(answer_429=1)
    limits = RateLimits(requests_per_minute=600)
    with pytest.raises(ProviderRateLimited, match="429"):
        gateway(store, provider, limits, 1).complete(request(1))
    grant = store.rate_limits.acquire_call("fake:m1", limits, 10)
    assert not grant.granted and 20 < grant.wait_s <= 30  # paused for its Retry-After
    impatient = gateway(store, provider, limits, 2)
    impatient.max_rate_wait_s = 0.0
    with pytest.raises(ProviderRateLimited, match="grants no call"):
        impatient.complete(request(2))
    with store.begin() as conn:  # the pause is over (moved to the past: no test waits 30 s)
        conn.execute(
            provider_rate_limits.update().values(
                paused_until=utcnow() - timedelta(seconds=1), requests_left=10.0
            )
        )
    assert gateway(store, provider, limits, 3).complete(request(3)).provider == "fake"


def test_rate_limits_are_checked_when_read() -> None:
    assert parse_rate_limits('{"openai:gpt-4o-mini": {"rpm": 500, "concurrency": 8}}') == {
        "openai:gpt-4o-mini": RateLimits(requests_per_minute=500, concurrency=8)
    }
    for bad in ("[]", '{"a:b": {"rpm": 0}}', '{"a:b": {"rps": 5}}', "{"):
        with pytest.raises(ValueError, match="model rate limits"):
            parse_rate_limits(bad)
