"""The daily business figures as a daily-partitioned asset, beside the code that computes them.

It reads only the business store, so it belongs to metrics rather than execution: the order steps
and the figures about them stay in one-way layers (metrics reads persistence and Dagster only).
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Definitions,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
)

from agentforge_dagster.domain.runs import ORDER_PIPELINE, order_of_run
from agentforge_dagster.metrics.business import daily_figures, first_order_date, plan_day
from agentforge_dagster.metrics.reliability import build_report
from agentforge_dagster.metrics.review_gate import review_gate_figures
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.settings import FigureSettings, defaults

# end_offset=1: today is a partition too, so the day's figures can be seen during the day.
DAILY = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC", end_offset=1)
FIGURES_JOB = "daily_business_figures_job"


_FIGURES = defaults(FigureSettings)  # the settings' defaults, written once in settings.py


class BusinessAssumptions(ConfigurableResource):
    """Figures the books do not hold: cash at hand, the daily costs besides models, the plan."""

    cash_on_hand: float = _FIGURES.cash_on_hand
    daily_fixed_costs: float = _FIGURES.daily_fixed_costs
    plan_start: str | None = None  # YYYY-MM-DD; default: the first order's date
    plan_days: int = _FIGURES.plan_days


# What the figures assets share: one partition a day, the figures group, and freshness — stale
# after two hours without a refresh (the hourly schedule refreshes them), so a dashboard that
# stopped updating shows as stale. Evaluated where freshness is enabled (dagster.yaml).
FIGURES_ASSET: dict[str, Any] = {
    "partitions_def": DAILY,
    "group_name": "figures",
    "kinds": {"python", "pandas"},
    "owners": ["team:agentforge"],
    "freshness_policy": FreshnessPolicy.time_window(
        fail_window=timedelta(hours=2), warn_window=timedelta(minutes=90)
    ),
}


@asset(
    **FIGURES_ASSET,
    description="Revenue, model spend, orders delivered and failed, net burn and runway, per day; "
    "today's partition is refreshed every hour.",
)
def daily_business_figures(
    context: AssetExecutionContext, store: BusinessStoreResource, assumptions: BusinessAssumptions
) -> MaterializeResult:
    business = store.get_store()
    day = date.fromisoformat(context.partition_key)
    gate = review_gate_figures(business, day)
    start = date.fromisoformat(assumptions.plan_start) if assumptions.plan_start else None
    day_n = plan_day(day, start, first_order_date(business))
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
            # Orders and models: how fast, and how much the response store saved.
            "latency_p50_seconds": MetadataValue.float(figures.latency_p50_s or 0.0),
            "latency_p95_seconds": MetadataValue.float(figures.latency_p95_s or 0.0),
            "cache_hit_rate": MetadataValue.float(figures.cache_hit_rate or 0.0),
            # Where the day is in the business plan (0: no order yet, no plan start set).
            "plan_day": day_n or 0,
            "plan_days_left": max(assumptions.plan_days - (day_n or 0), 0),
        }
    )


@asset(
    **FIGURES_ASSET,
    description="Reliability of the day's order runs, from Dagster's event log: first-try success "
    "per step, retries per order, end-to-end success measured and predicted without retries; "
    "today's partition is refreshed every hour.",
)
def daily_reliability(
    context: AssetExecutionContext, store: BusinessStoreResource
) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    records = context.instance.get_run_records(
        RunsFilter(
            job_name=ORDER_PIPELINE,
            created_after=start,
            created_before=start + timedelta(days=1),
        ),
        ascending=True,
    )
    runs = [record.dagster_run for record in records]
    statuses = store.get_store().orders.statuses()
    run_orders = {order for run in runs if (order := order_of_run(run.tags)) is not None}
    report = build_report(
        context.instance, {o: statuses.get(o, "unknown") for o in run_orders}, runs=runs
    )
    steps = report.steps
    failed_attempts = int(steps["failed_attempts"].sum())
    metadata: dict[str, Any] = {
        "orders_run": report.orders_run,
        **{f"orders_{name}": count for name, count in report.outcomes.items()},
        "retries_per_order": MetadataValue.float(
            round(failed_attempts / report.orders_run, 3) if report.orders_run else 0.0
        ),
        "end_to_end_success": MetadataValue.float(_number(report.end_to_end_success)),
        "first_try_chain_measured": MetadataValue.float(_number(report.measured_first_try_chain)),
        **{
            f"first_try_success_{step}": MetadataValue.float(_number(value))
            for step, value in steps["first_try_success"].items()
        },
    }
    if report.predicted_without_retries is not None:
        metadata["predicted_without_retries"] = MetadataValue.float(
            report.predicted_without_retries
        )
    return MaterializeResult(metadata=metadata)


def _number(value: float) -> float:
    """A figure the UI can plot: no orders that day gives 0, not NaN."""
    return 0.0 if value != value else round(float(value), 4)


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


def figures_definitions() -> Definitions:
    """The figures' area: the daily business and reliability assets, their job and schedule."""
    figures_job = define_asset_job(
        FIGURES_JOB, selection=[daily_business_figures, daily_reliability]
    )
    return Definitions(
        assets=[daily_business_figures, daily_reliability],
        jobs=[figures_job],
        schedules=[build_figures_schedule()],
    )
