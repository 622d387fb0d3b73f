"""The daily business figures as a daily-partitioned asset, beside the code that computes them.

It reads only the business store, so it belongs to metrics rather than execution: the order steps
and the figures about them stay in one-way layers (metrics reads persistence and Dagster only).
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
)

from agentforge_dagster.metrics.business import daily_figures
from agentforge_dagster.metrics.review_gate import review_gate_figures
from agentforge_dagster.persistence.resources import BusinessStoreResource

# end_offset=1: today is a partition too, so the day's figures can be seen during the day.
DAILY = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC", end_offset=1)
FIGURES_JOB = "daily_business_figures_job"


class BusinessAssumptions(ConfigurableResource):
    """Figures the books do not hold: cash at hand and the daily costs besides models."""

    cash_on_hand: float = 10_000.0
    daily_fixed_costs: float = 50.0


@asset(
    partitions_def=DAILY,
    group_name="figures",
    kinds={"python", "pandas"},
    owners=["team:agentforge"],
    description="Revenue, model spend, orders delivered and failed, net burn and runway, per day; "
    "today's partition is refreshed every hour.",
    # Stale after two hours without a refresh (the hourly schedule refreshes it): a dashboard
    # that stopped updating shows as stale. Evaluated where freshness is enabled (dagster.yaml).
    freshness_policy=FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=90)
    ),
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
            # A number the UI plots; a profitable day has no runway to count down (0 here).
            "runway_days": MetadataValue.float(figures.runway_days or 0.0),
            "profitable_day": figures.runway_days is None,
            # The review gate's day: holds made, still waiting, and what people decided.
            "orders_held": gate.held,
            "holds_waiting": gate.waiting,
            **{f"decisions_{name}": count for name, count in gate.outcomes.items()},
            "median_decision_wait_hours": MetadataValue.float(gate.median_wait_hours or 0.0),
        }
    )


def todays_figures_requests(now: datetime) -> list[RunRequest]:
    """Today's figures every hour; in the day's first hour also yesterday's, now complete."""
    today = now.astimezone(UTC).date()
    days = [today, today - timedelta(days=1)] if now.astimezone(UTC).hour == 0 else [today]
    return [
        RunRequest(run_key=f"figures-{day}-{now:%Y%m%dT%H}", partition_key=day.isoformat())
        for day in days
    ]


def build_figures_schedule() -> ScheduleDefinition:
    """Hourly at :20 UTC: the day's figures so far (and, just after midnight, the day before)."""

    def evaluate(context: ScheduleEvaluationContext) -> list[RunRequest]:
        return todays_figures_requests(context.scheduled_execution_time or datetime.now(UTC))

    return ScheduleDefinition(
        name="daily_business_figures_hourly",
        job_name=FIGURES_JOB,
        cron_schedule="20 * * * *",
        execution_timezone="UTC",
        execution_fn=evaluate,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Refresh today's business figures every hour; yesterday's once after midnight.",
    )
