"""The daily business figures: today's partition materialises during the day, with numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dagster import DagsterInstance, Definitions, materialize

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.metrics.assets import (
    BusinessAssumptions,
    daily_business_figures,
    todays_figures_requests,
)
from agentforge_dagster.orchestration.runner import run_order
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
    order = store.submit(make_order(price="120.00"))
    run_order(defs, instance, store, order.order_id)
    today = utcnow().date().isoformat()
    result = materialize(
        [daily_business_figures],
        partition_key=today,
        instance=instance,
        resources={
            "store": BusinessStoreResource(database_url=settings.resolved_database_url()),
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


def test_the_hourly_schedule_asks_for_today_and_just_after_midnight_for_yesterday() -> None:
    midday = todays_figures_requests(datetime(2026, 11, 30, 13, 20, tzinfo=UTC))
    assert [r.partition_key for r in midday] == ["2026-11-30"]
    midnight = todays_figures_requests(datetime(2026, 11, 30, 0, 20, tzinfo=UTC))
    assert [r.partition_key for r in midnight] == ["2026-11-30", "2026-11-29"]
    assert len({r.run_key for r in midnight}) == 2
    assert date.fromisoformat(midnight[1].partition_key or "") < date(2026, 11, 30)
