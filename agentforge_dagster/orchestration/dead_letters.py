"""The dead-letter queue: failed orders parked with what is needed to replay them.

A failed run's order is dead-lettered by the ``dead_letter_queue`` sensor; an operator (``agentforge
dlq replay``) or the hourly ``dlq_auto_replay`` schedule marks letters for replay; the
``dead_letter_replays`` sensor launches one run per replay that starts at the failed step (earlier
steps' outputs are read from the artifact store, not redone).
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dagster import (
    AssetKey,
    Config,
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.steps import STEP_NAMES, STEPS
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

LAUNCH_STEP = "launch"  # a run that failed before any step started


def replay_selection(failed_step: str) -> list[AssetKey]:
    """The failed step and everything after it."""
    start = STEP_NAMES.index(failed_step) if failed_step in STEP_NAMES else 0
    return [AssetKey(spec.asset_name) for spec in STEPS[start:]]


def _last_started_step(store: BusinessStore, order_id: str, run_id: str) -> str:
    started = [
        row["step"]
        for row in store.audit_rows(order_id)
        if row["event"] == "step_started" and row["run_id"] == run_id
    ]
    return started[-1] if started else LAUNCH_STEP


def dead_letter_failed_run(store: BusinessStore, order_id: str, run_id: str, message: str) -> bool:
    """Park a failed run's order in the dead-letter queue; False if it is not the order's failure.

    A run that died without a step failing (crash, timeout, OOM, never started) leaves its order
    processing or queued: it is failed here first, as an infrastructure error, so nothing is lost.
    """
    record = store.get(order_id)
    if record.status in (OrderStatus.QUEUED, OrderStatus.REPLAYED):
        store.claim(order_id, run_id=run_id, step=LAUNCH_STEP)
        record = store.get(order_id)
    if record.status is OrderStatus.PROCESSING:
        store.transition(
            order_id,
            OrderStatus.FAILED,
            run_id=run_id,
            step=_last_started_step(store, order_id, run_id),
            error=message[:2000],
            error_class="infrastructure",
        )
        record = store.get(order_id)
    if record.status is not OrderStatus.FAILED:
        return False
    step = record.failed_step or LAUNCH_STEP
    failures = [
        row
        for row in store.audit_rows(order_id)
        if row["event"] == "step_failed" and row["run_id"] == run_id and row["step"] == step
    ]
    store.dead_letter(
        order_id,
        run_id=run_id,
        failed_step=step,
        error_class=record.failed_error_class or "transient",
        error_type=failures[-1]["detail"].get("error_type", "unknown")
        if failures
        else "RunFailure",
        message=record.last_error or message,
        attempts=len(failures),
    )
    return True


class AutoReplayConfig(Config):
    cooldown_seconds: float = 900.0
    max_replays: int = 3


def eligible_for_auto_replay(
    store: BusinessStore, cooldown_seconds: float, max_replays: int
) -> list[str]:
    """Transient letters that have cooled down and have replays left."""
    cutoff = utcnow() - timedelta(seconds=cooldown_seconds)
    return [
        letter["order_id"]
        for letter in store.dead_letters(error_class="transient")
        if letter["replays"] < max_replays and _aware(letter["dead_lettered_at"]) <= cutoff
    ]


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@op(description="Mark cooled-down transient dead letters for replay, within the replay limit.")
def auto_replay_dead_letters(
    context: OpExecutionContext, config: AutoReplayConfig, store: BusinessStoreResource
) -> Output[int]:
    business = store.get_store()
    eligible = eligible_for_auto_replay(business, config.cooldown_seconds, config.max_replays)
    for order_id in eligible:
        business.request_replay(order_id, actor="dlq_auto_replay")
    waiting = business.dead_letters()
    context.log.info(f"requested replay of {len(eligible)} dead letters; {len(waiting)} left")
    return Output(
        len(eligible),
        metadata={
            "replayed": MetadataValue.json(eligible),
            "left_for_a_human": len(waiting),
        },
    )


@job(name="dlq_auto_replay", description="Replay transient dead letters after a cool-down.")
def dlq_auto_replay_job() -> None:
    auto_replay_dead_letters()


def dlq_auto_replay_schedule(settings: AgentForgeSettings) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="dlq_auto_replay",
        job=dlq_auto_replay_job,
        cron_schedule="0 * * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        run_config={
            "ops": {
                "auto_replay_dead_letters": {
                    "config": {
                        "cooldown_seconds": settings.dlq_cooldown_seconds,
                        "max_replays": settings.dlq_max_replays,
                    }
                }
            }
        },
        description="Hourly: replay transient dead letters that have cooled down, up to the "
        "replay limit; the rest wait for a human.",
    )


def resume_waiting_for_budget(store: BusinessStore, default_cap: float | None) -> list[str]:
    """Replay orders paused for the budget once the month's spend is under the cap again.

    That happens when the cap is raised (``agentforge budget set``) or the month turns (the new
    month's spend starts at zero). Each resumes from the step that paused it.
    """
    waiting = store.order_ids(OrderStatus.WAITING_BUDGET)
    if not waiting:
        return []
    month = utcnow().strftime("%Y-%m")
    cap = store.budget_cap(month)
    if cap is None and default_cap is not None:
        cap = Decimal(str(default_cap))
    if cap is not None and store.month_spend(month) >= cap:
        return []
    for order_id in waiting:
        store.request_replay(order_id, actor="budget")
    return waiting
