"""The daily business figures as a daily-partitioned asset, beside the code that computes them.

It reads only the business store, so it belongs to metrics rather than execution: the order steps
and the figures about them stay in one-way layers (metrics reads persistence and Dagster only).
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import date

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from agentforge_dagster.metrics.business import daily_figures
from agentforge_dagster.metrics.review_gate import review_gate_figures
from agentforge_dagster.persistence.resources import BusinessStoreResource

DAILY = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")


class BusinessAssumptions(ConfigurableResource):
    """Figures the books do not hold: cash at hand and the daily costs besides models."""

    cash_on_hand: float = 10_000.0
    daily_fixed_costs: float = 50.0


@asset(
    partitions_def=DAILY,
    group_name="figures",
    kinds={"python", "pandas"},
    owners=["team:agentforge"],
    description="Revenue, model spend, orders delivered and failed, net burn and runway, per day.",
)
def daily_business_figures(
    context: AssetExecutionContext, store: BusinessStoreResource, assumptions: BusinessAssumptions
) -> MaterializeResult:
    business = store.get_store()
    gate = review_gate_figures(business, date.fromisoformat(context.partition_key))
    figures = daily_figures(
        business,
        date.fromisoformat(context.partition_key),
        cash_on_hand=assumptions.cash_on_hand,
        daily_fixed_costs=assumptions.daily_fixed_costs,
    )
    return MaterializeResult(
        metadata={
            "revenue": MetadataValue.float(figures.revenue),
            "model_spend": MetadataValue.float(figures.model_spend),
            "orders_delivered": figures.orders_delivered,
            "orders_failed": figures.orders_failed,
            "net_burn": MetadataValue.float(figures.net_burn),
            "runway_days": MetadataValue.text(
                "profitable day" if figures.runway_days is None else f"{figures.runway_days}"
            ),
            # The review gate's day: holds made, still waiting, and what people decided.
            "orders_held": gate.held,
            "holds_waiting": gate.waiting,
            **{f"decisions_{name}": count for name, count in gate.outcomes.items()},
            "median_decision_wait_hours": MetadataValue.float(gate.median_wait_hours or 0.0),
        }
    )
