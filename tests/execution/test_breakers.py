"""The providers' shared circuit breakers: opened by failures across orders, probed, closed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentforge_dagster.domain.errors import TransientError
from agentforge_dagster.domain.limits import BreakerPolicy
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.execution.gateway import CircuitOpen, ModelGateway
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse
from agentforge_dagster.persistence.breakers import BreakerState
from agentforge_dagster.persistence.schema import provider_breakers
from agentforge_dagster.persistence.store import BusinessStore

REQUEST = ModelRequest(task="plan", prompt="Plan a blog post about reliable pipelines.")
POLICY = BreakerPolicy(threshold=3, window_s=60, cooldown_s=600)


class Provider:
    """A model provider (outside what is tested) that is down until told otherwise."""

    def __init__(self, name: str, *, down: bool) -> None:
        self.name, self.model, self.down, self.calls = name, "m1", down, 0

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.down:
            raise TransientError(f"{self.name} answers 503")
        return ModelResponse(
            text="{}",
            provider=self.name,
            model=self.model,
            input_tokens=10,
            output_tokens=10,
            cost_usd=0.0,
            latency_s=0.0,
        )


def ask(store: BusinessStore, providers: list[Provider], order: int) -> str:
    """One call for one order, as a fresh step would make it; which provider answered."""
    gateway = ModelGateway(
        store=store,
        providers=providers,
        order_id=f"o-{order}",
        step="plan",
        run_id=f"run-{order}",
        attempt=1,
        fallback_after=2,
        breaker=POLICY,
    )
    return gateway.complete(REQUEST).provider


def cool_down(store: BusinessStore) -> None:
    """The cool-down is over: its end moved to the past (no test waits ten minutes)."""
    with store.begin() as conn:
        conn.execute(provider_breakers.update().values(open_until=utcnow() - timedelta(seconds=1)))


def audited(store: BusinessStore, event: str) -> list[dict[str, object]]:
    return [row["detail"] for row in store.audit.audit_rows() if row["event"] == event]


def test_a_provider_down_for_everyone_is_skipped_by_every_order_until_a_probe_closes_it(
    store: BusinessStore,
) -> None:
    primary, backup = Provider("primary", down=True), Provider("backup", down=False)
    chain = [primary, backup]
    for order in (1, 2):  # each order's first failure is its own: its step retries
        with pytest.raises(TransientError):
            ask(store, chain, order)
    assert ask(store, chain, 3) == "backup"  # the third failure, any order's, opens it
    assert [b.state for b in store.breakers.breakers()] == [BreakerState.OPEN]
    assert ask(store, chain, 4) == "backup" and ask(store, chain, 5) == "backup"
    assert primary.calls == 3  # orders 4 and 5 went straight to the backup
    (opened,) = audited(store, "breaker_opened")
    assert opened["provider"] == "primary:m1" and "3 transient failures" in str(opened["after"])

    cool_down(store)  # one probe, which fails and opens it again
    assert ask(store, chain, 6) == "backup"
    assert primary.calls == 4 and "a failed probe" in str(audited(store, "breaker_opened")[1])

    primary.down = False
    cool_down(store)
    assert ask(store, chain, 7) == "primary"  # the probe answers: closed
    assert [b.state for b in store.breakers.breakers()] == [BreakerState.CLOSED]
    assert audited(store, "breaker_closed")[0]["provider"] == "primary:m1"
    assert store.audit.verify_audit().ok


def test_when_every_provider_is_open_no_call_is_made_and_the_step_retries(
    store: BusinessStore,
) -> None:
    only = Provider("only", down=True)
    for order in range(3):
        with pytest.raises(TransientError):
            ask(store, [only], order)
    with pytest.raises(CircuitOpen, match="every model provider's circuit breaker is open"):
        ask(store, [only], 9)
    assert only.calls == 3
