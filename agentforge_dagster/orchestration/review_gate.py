"""The review gate: a person's decision on a held order, from the CLI or the Dagster UI.

A run never waits for a person. The review (or a model's refusal) holds the order —
``quarantined`` or ``awaiting_approval`` — and the run ends; a decision recorded here marks the
order for a replay through the one replay mechanism (:mod:`.dead_letters`): from ``delivery``
for approve and edit, from ``draft`` for a re-drive. The ``dead_letter_replays`` sensor, or
``agentforge run`` without a daemon, launches it. A rejection closes the order.

From the UI: launch the ``review_decision`` job with its config. The actor is the user the front
door names in the run's ``agentforge/actor`` tag, else ``ui (unauthenticated)``. The
``review_escalation`` sensor flags holds that waited too long.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import timedelta

import dagster as dg

from agentforge_dagster.execution.resources import parse_model_specs
from agentforge_dagster.orchestration.sensors import skip_unless_migrated
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.review_holds import (
    DECISIONS,
    Decision,
    DecisionRefused,
    Hold,
)
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import ReviewSettings, SensorSettings

ACTOR_TAG = "agentforge/actor"
UI_UNAUTHENTICATED = "ui (unauthenticated)"


def decide(
    store: BusinessStore,
    order_id: str,
    decision: str,
    *,
    actor: str,
    note: str | None = None,
    edited_text: str | None = None,
    model: str | None = None,
) -> Hold:
    """Record a person's decision on a held order (see the module docstring)."""
    if decision not in DECISIONS:
        raise DecisionRefused(f"unknown decision {decision!r}: one of {', '.join(DECISIONS)}")
    if model:
        try:
            parse_model_specs(model)
        except ValueError as exc:
            raise DecisionRefused(f"--model {model!r}: {exc}") from exc
    chosen: Decision = decision  # type: ignore[assignment]  # checked against DECISIONS above
    return store.review.decide(
        order_id,
        chosen,
        actor=actor.strip() or UI_UNAUTHENTICATED,
        note=note or None,
        edited_text=edited_text or None,
        redrive_model=model or None,
    )


def what_happens_next(hold: Hold) -> str:
    """One line for whoever decided: what the system does now."""
    if hold.decision == "reject":
        return f"{hold.order_id} rejected: closed, nothing delivered or billed"
    start = "draft" if hold.decision == "redrive" else "delivery"
    return (
        f"{hold.order_id}: {hold.decision} recorded; a replay from {start} is requested (the "
        "dead_letter_replays sensor launches it; without a daemon: agentforge run)"
    )


class ReviewDecisionConfig(dg.Config):
    """A decision on a held order, as the launchpad asks for it: ``decision`` is approve, edit
    (``edited_text`` is delivered), redrive (``model`` and/or ``note``) or reject (``note`` is
    the reason)."""

    order_id: str
    decision: str
    note: str = ""
    edited_text: str = ""
    model: str = ""


@dg.op(description="Record a person's decision on a quarantined or awaiting_approval order.")
def record_review_decision(
    context: dg.OpExecutionContext, config: ReviewDecisionConfig, store: BusinessStoreResource
) -> None:
    actor = context.run.tags.get(ACTOR_TAG) or UI_UNAUTHENTICATED
    try:
        hold = decide(
            store.get_store(),
            config.order_id,
            config.decision,
            actor=actor,
            note=config.note,
            edited_text=config.edited_text,
            model=config.model,
        )
    except DecisionRefused as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(what_happens_next(hold))


@dg.job(
    name="review_decision",
    description="Approve, edit, re-drive or reject a held order (config: order_id, decision, "
    "note, edited_text, model).",
)
def review_decision_job() -> None:
    record_review_decision()


def build_escalation_sensor(review: ReviewSettings, sensors: SensorSettings) -> dg.SensorDefinition:
    """Flag, once each, the holds waiting longer than ``review_escalate_after_hours``."""

    @dg.sensor(
        name="review_escalation",
        minimum_interval_seconds=max(sensors.interval_seconds, 60),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Escalate orders held for a person longer than "
        "AGENTFORGE_REVIEW_ESCALATE_AFTER_HOURS (audited; agentforge status and review list "
        "show them).",
    )
    @skip_unless_migrated
    def review_escalation_sensor(
        context: dg.SensorEvaluationContext, store: BusinessStoreResource
    ) -> dg.SkipReason:
        waited = timedelta(hours=review.escalate_after_hours)
        escalated = store.get_store().review.escalate_overdue(waited)
        if escalated:
            context.log.warning(f"decisions overdue, escalated: {', '.join(escalated)}")
        return dg.SkipReason(
            f"escalated {len(escalated)} holds waiting over {review.escalate_after_hours} h"
            + (f": {', '.join(escalated[:20])}" if escalated else "")
        )

    return review_escalation_sensor


def review_definitions(review: ReviewSettings, sensors: SensorSettings) -> dg.Definitions:
    """The review gate's area: a person's decision (a launchpad job) and the escalation sensor."""
    return dg.Definitions(
        jobs=[review_decision_job], sensors=[build_escalation_sensor(review, sensors)]
    )
