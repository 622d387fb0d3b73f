"""The dead-letter queue: failed orders parked with what is needed to replay them.

A failed run's order is dead-lettered by :mod:`.failures` (whoever ran it); an operator (``agentforge
dlq replay``) or the hourly ``dlq_auto_replay`` schedule marks letters for replay; the
``dead_letter_replays`` sensor (or ``agentforge run``) launches one run per :class:`ReplayPlan`.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from dataclasses import dataclass
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

from agentforge_dagster.domain.errors import PermanentError
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.runs import ORDER_TAG, REPLAY_FROM_TAG, REPLAY_OF_TAG
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.steps import STEP_NAMES, STEPS
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings


@dataclass(frozen=True)
class ReplayPlan:
    """One replay: a run of the order's partition that starts at ``start_step``.

    The one replay mechanism, whoever asks for it (the ``dead_letter_replays`` sensor, ``agentforge
    run``): steps before ``start_step`` are not redone, their outputs are read from the artifact
    store; the model answers already paid for are served from the response store.
    """

    order_id: str
    start_step: str
    run_key: str
    replay_of: str

    @property
    def asset_selection(self) -> list[AssetKey]:
        return replay_selection(self.start_step)

    @property
    def tags(self) -> dict[str, str]:
        return {
            ORDER_TAG: self.order_id,
            REPLAY_OF_TAG: self.replay_of,
            REPLAY_FROM_TAG: self.start_step,
        }


def replay_selection(start_step: str) -> list[AssetKey]:
    """``start_step`` and every step after it (all steps for an unknown or ``launch`` step)."""
    start = STEP_NAMES.index(start_step) if start_step in STEP_NAMES else 0
    return [AssetKey(spec.asset_name) for spec in STEPS[start:]]


def request_replay(
    store: BusinessStore, order_id: str, *, actor: str, from_step: str | None = None
) -> str:
    """Ask for a replay of a dead letter, from ``from_step`` (a step name) or its failed step."""
    if from_step is not None and from_step not in STEP_NAMES:
        raise InvalidReplay(
            f"cannot replay {order_id!r} from {from_step!r}: a step is one of "
            + ", ".join(STEP_NAMES)
        )
    return store.request_replay(order_id, actor=actor, from_step=from_step)


class InvalidReplay(PermanentError):
    """A replay asked to start at a step the pipeline does not have."""


def planned_replays(store: BusinessStore) -> list[ReplayPlan]:
    """The replays requested and not launched yet, oldest request first."""
    return [
        ReplayPlan(
            order_id=row["order_id"],
            start_step=row["replay_from"] or row["failed_step"],
            run_key=row["replay_run_key"] or f"replay-{row['order_id']}",
            replay_of=row["run_id"],
        )
        for row in store.replays_to_launch()
    ]


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
