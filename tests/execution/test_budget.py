"""The gateway's budget: a paid call holds its worst case while in flight, then its real cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agentforge_dagster.domain.errors import BudgetExhausted, TransientError
from agentforge_dagster.execution.gateway import DEFAULT_MAX_OUTPUT_TOKENS, ModelGateway, month_of
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse
from agentforge_dagster.execution.llm.offline import OFFLINE_MODEL_NAME
from agentforge_dagster.persistence.store import BusinessStore

PRICES = {OFFLINE_MODEL_NAME: (1.0, 4.0)}  # USD per million tokens in, out
REQUEST = ModelRequest(task="plan", prompt="Plan a blog post about reliable pipelines." * 4)


class HoldsTheBudget:
    """A provider (outside what is tested) that looks at the budget while it is asked."""

    name = "offline"
    model = OFFLINE_MODEL_NAME

    def __init__(self, store: BusinessStore, fail: bool = False) -> None:
        self.store, self.fail, self.in_flight = store, fail, Decimal(0)

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.in_flight = self.store.model_calls.budget_in_flight(month_of())
        if self.fail:
            raise TransientError("the provider is down")
        return ModelResponse(
            text="{}",
            provider=self.name,
            model=self.model,
            input_tokens=40,
            output_tokens=300,
            cost_usd=0.00124,
            latency_s=0.0,
        )


def gateway(store: BusinessStore, provider: HoldsTheBudget) -> ModelGateway:
    return ModelGateway(
        store=store,
        providers=[provider],
        order_id="o-1",
        step="plan",
        run_id="run-1",
        attempt=1,
        prices=PRICES,
        default_budget_usd=Decimal("1.00"),
    )


def test_a_paid_call_holds_its_worst_case_then_its_real_cost(store: BusinessStore) -> None:
    provider = HoldsTheBudget(store)
    gateway(store, provider).complete(REQUEST)
    worst = (len(REQUEST.prompt) // 4 * 1.0 + DEFAULT_MAX_OUTPUT_TOKENS * 4.0) / 1_000_000
    assert provider.in_flight == Decimal(str(worst)).quantize(Decimal("0.000001"))
    assert store.model_calls.budget_in_flight(month_of()) == 0  # replaced by the recorded call
    assert store.model_calls.month_spend(month_of()) == Decimal("0.00124")


def test_a_failed_call_gives_its_reservation_back(store: BusinessStore) -> None:
    provider = HoldsTheBudget(store, fail=True)
    with pytest.raises(TransientError):
        gateway(store, provider).complete(REQUEST)
    assert provider.in_flight > 0
    assert store.model_calls.budget_in_flight(month_of()) == 0


def test_a_call_whose_worst_case_does_not_fit_is_not_made(store: BusinessStore) -> None:
    store.model_calls.set_budget(
        Decimal("0.01")
    )  # under one call's worst case (4096 tokens out at 4 USD/M)
    provider = HoldsTheBudget(store)
    with pytest.raises(BudgetExhausted, match="may cost up to"):
        gateway(store, provider).complete(REQUEST)
    assert provider.in_flight == 0  # never asked
    assert store.model_calls.budget_in_flight(month_of()) == 0
