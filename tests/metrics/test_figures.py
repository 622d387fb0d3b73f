"""The daily business figures: today's partition materialises during the day, with numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dagster import DagsterInstance, Definitions, materialize

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.metrics.assets import (
    BusinessAssumptions,
    daily_business_figures,
    daily_reliability,
    todays_figures_requests,
)
from agentforge_dagster.orchestration.runner import fault_run_config, run_order
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order


def test_todays_figures_materialise_during_the_day_with_numeric_runway(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    settings: AgentForgeSettings,
) -> None:
    order = store.orders.submit(make_order(price="120.00"))
    run_order(defs, instance, store, order.order_id)
    today = utcnow().date().isoformat()
    result = materialize(
        [daily_business_figures],
        partition_key=today,
        instance=instance,
        resources={
            "store": BusinessStoreResource(database_url=settings.storage.resolved_database_url()),
            "assumptions": BusinessAssumptions(cash_on_hand=1000.0, daily_fixed_costs=200.0),
        },
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("daily_business_figures")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["revenue"] == 120.0 and metadata["orders_delivered"] == 1
    assert metadata["net_burn"] == 80.0
    assert metadata["runway_days"] == 12.5 and metadata["profitable_day"] is False
    assert metadata["orders_held"] == 0
    assert metadata["plan_day"] == 1 and metadata["plan_days_left"] == 89
    assert 0 < metadata["latency_p50_seconds"] <= metadata["latency_p95_seconds"] < 600
    assert 0.0 <= metadata["cache_hit_rate"] <= 1.0


def test_todays_reliability_from_the_days_runs(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings: AgentForgeSettings
) -> None:
    first, second = (store.orders.submit(make_order(i)).order_id for i in range(2))
    run_order(defs, instance, store, first, run_config=fault_run_config(0.0, 0))
    failing = {"resources": {"faults": {"config": {"fail_first": {"plan": 1}}}}}
    run_order(defs, instance, store, second, run_config=failing)
    store.orders.submit(make_order(2))  # accepted, never run today: not in the day's runs
    result = materialize(
        [daily_reliability],
        partition_key=utcnow().date().isoformat(),
        instance=instance,
        resources={
            "store": BusinessStoreResource(database_url=settings.storage.resolved_database_url())
        },
    )
    [materialization] = result.asset_materializations_for_node("daily_reliability")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["orders_run"] == 2 and metadata["orders_completed"] == 2
    assert metadata["retries_per_order"] == 0.5
    assert metadata["first_try_success_plan"] == 0.5 and metadata["first_try_success_intake"] == 1
    assert metadata["end_to_end_success"] == 1.0


def test_the_hourly_schedule_asks_for_today_and_just_after_midnight_for_yesterday() -> None:
    midday = todays_figures_requests(datetime(2026, 11, 30, 13, 20, tzinfo=UTC))
    assert [r.partition_key for r in midday] == ["2026-11-30"]
    midnight = todays_figures_requests(datetime(2026, 11, 30, 0, 20, tzinfo=UTC))
    assert [r.partition_key for r in midnight] == ["2026-11-30", "2026-11-29"]
    assert len({r.run_key for r in midnight}) == 2
    assert date.fromisoformat(midnight[1].partition_key or "") < date(2026, 11, 30)
