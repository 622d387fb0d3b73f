"""The dead-letter queue: failed orders parked with what is needed to replay them.

A failed run's order is dead-lettered by :mod:`.failures` (whoever ran it); an operator (``agentforge
dlq replay``) or the hourly ``dlq_auto_replay`` schedule marks letters for replay; the
``dead_letter_replays`` sensor (or ``agentforge run``) launches one run per :class:`ReplayPlan`.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from dagster import (
    AssetKey,
)

from agentforge_dagster.domain.errors import IllegalTransition, PermanentError, UnknownOrder
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.runs import ORDER_TAG, REPLAY_FROM_TAG, REPLAY_OF_TAG
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.steps import STEP_NAMES, STEPS
from agentforge_dagster.persistence.store import BusinessStore


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
    return store.dead_letters.request_replay(order_id, actor=actor, from_step=from_step)


class InvalidReplay(PermanentError):
    """A replay asked to start at a step the pipeline does not have."""


class ArtifactInventory(Protocol):
    """What the artifact store holds for an order (the artifact IO managers answer it)."""

    def existing_steps(self, order_id: str) -> set[str]: ...


def replay_start(requested: str, existing: Collection[str]) -> tuple[str, list[str]]:
    """The step a replay starts at so that every step it runs can load its inputs.

    ``requested`` or, when an input of a step from there on is missing from ``existing`` (the
    steps whose outputs are stored), the earliest step whose output is missing; returned with the
    missing steps that moved it. A step re-run this way is served from the response store.
    """
    start = STEP_NAMES.index(requested) if requested in STEP_NAMES else 0
    missing: set[str] = set()
    while True:
        needed = {name for spec in STEPS[start:] for name in spec.inputs}
        gone = {name for name in needed if STEP_NAMES.index(name) < start} - set(existing)
        if not gone:
            return STEP_NAMES[start], sorted(missing, key=STEP_NAMES.index)
        missing |= gone
        start = min(STEP_NAMES.index(name) for name in gone)


def planned_replays(store: BusinessStore, artifacts: ArtifactInventory) -> list[ReplayPlan]:
    """The replays requested and not launched yet, oldest request first.

    Each starts at its requested step, or earlier when artifacts it needs are gone (see
    :func:`replay_start`); a moved start is kept on the letter and audited once.
    """
    plans = []
    for row in store.dead_letters.replays_to_launch():
        order_id = row["order_id"]
        requested = row["replay_from"] or row["failed_step"]
        start, missing = replay_start(requested, artifacts.existing_steps(order_id))
        if missing:
            store.dead_letters.move_replay_start(
                order_id, requested=requested, start=start, missing=missing
            )
        plans.append(
            ReplayPlan(
                order_id=order_id,
                start_step=start,
                run_key=row["replay_run_key"] or f"replay-{order_id}",
                replay_of=row["run_id"],
            )
        )
    return plans


AUTO_REPLAYED_CLASSES = ("transient", "infrastructure")


def eligible_for_auto_replay(
    store: BusinessStore, cooldown_seconds: float, max_replays: int
) -> list[str]:
    """Letters worth another try without a person, whose back-off has passed.

    Transient and infrastructure failures are blips (an outage longer than a step's retries, a
    lost worker, a launch while the code server was away), and so are inputs lost from the
    artifact store (their replay starts at the earliest step whose input is missing); other
    permanent ones wait for a human. The cool-down doubles with each replay already made:
    ``cooldown × 2^replays``. Lost inputs are not an outage to wait out (the store answered that
    they are gone): their first replay goes at once, later ones after the doubling cool-down.
    """
    now = utcnow()
    due = []
    for letter in store.dead_letters.dead_letters():
        lost_inputs = letter["error_type"] == "MissingArtifact"
        if letter["error_class"] not in AUTO_REPLAYED_CLASSES and not lost_inputs:
            continue
        replays = letter["replays"]
        wait = 0.0 if lost_inputs and replays == 0 else cooldown_seconds * 2**replays
        if (
            replays < max_replays
            and _aware(letter["dead_lettered_at"]) + timedelta(seconds=wait) <= now
        ):
            due.append(letter["order_id"])
    return due


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def request_due_replays(
    store: BusinessStore, cooldown_seconds: float, max_replays: int
) -> list[str]:
    """Ask for the replays whose back-off has passed (audited, actor ``auto_replay``)."""
    requested = []
    for order_id in eligible_for_auto_replay(store, cooldown_seconds, max_replays):
        try:
            store.dead_letters.request_replay(order_id, actor="auto_replay")
        except (IllegalTransition, UnknownOrder):
            continue  # someone asked for it first
        requested.append(order_id)
    return requested


def resume_waiting_for_budget(store: BusinessStore, default_cap: float | None) -> list[str]:
    """Replay orders paused for the budget once the month's spend is under the cap again.

    That happens when the cap is raised (``agentforge budget set``) or the month turns (the new
    month's spend starts at zero). Each resumes from the step that paused it.
    """
    waiting = store.orders.order_ids(OrderStatus.WAITING_BUDGET)
    if not waiting:
        return []
    month = utcnow().strftime("%Y-%m")
    cap = store.model_calls.budget_cap(month)
    if cap is None and default_cap is not None:
        cap = Decimal(str(default_cap))
    if cap is not None and store.model_calls.month_spend(month) >= cap:
        return []
    for order_id in waiting:
        store.dead_letters.request_replay(order_id, actor="budget")
    return waiting
