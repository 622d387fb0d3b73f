"""Dead letters: a failed order is parked with its failure, replayed from the failed step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dagster import DagsterEventType, DagsterInstance, Definitions
from sqlalchemy import update

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.dead_letters import (
    InvalidReplay,
    eligible_for_auto_replay,
    replay_selection,
    request_due_replays,
    request_replay,
)
from agentforge_dagster.orchestration.failures import (
    Verdict,
    settle_failed_run,
    settle_unlaunchable,
)
from agentforge_dagster.orchestration.runner import run_replays
from agentforge_dagster.persistence.schema import dead_letters
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import ALWAYS_FAIL_DELIVERY, dead_lettered_order, make_order


def failed_order(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> tuple[str, str]:
    order_id, result = dead_lettered_order(defs, instance, store)
    assert result.verdict is Verdict.ALREADY_SETTLED, "the failure hook settled it first"
    return order_id, result.run_id


def test_a_failed_run_is_dead_lettered_with_its_failure(defs, instance, store) -> None:
    order_id, run_id = failed_order(defs, instance, store)
    assert store.orders.get(order_id).status is OrderStatus.DEAD_LETTERED
    [letter] = store.dead_letters.dead_letters()
    assert letter["order_id"] == order_id and letter["run_id"] == run_id
    assert (letter["failed_step"], letter["error_class"], letter["error_type"]) == (
        "delivery",
        "transient",
        "InjectedFault",
    )
    assert letter["attempts"] == 7  # the first try and six retries, from Dagster's events
    assert letter["message"] == "injected fault: delivery scripted to fail attempt 7/99"
    run = instance.get_run_by_id(run_id)
    assert settle_failed_run(store, instance, run) is Verdict.ALREADY_SETTLED, "only once"
    moves = [
        (r["detail"]["from"], r["detail"]["to"])
        for r in store.audit.audit_rows(order_id)
        if r["event"] == "transition"
    ]
    assert moves[-2:] == [("processing", "failed"), ("failed", "dead_lettered")]
    events = [e.event for e in store.outbox.order_events_of(order_id)]
    assert [(e["state"], e["error_class"]) for e in events] == [
        ("queued", None),
        ("failed", "transient"),
        ("dead_lettered", "transient"),
    ]


def test_a_replay_starts_at_the_failed_step_and_makes_no_new_model_calls(
    defs, instance, store
) -> None:
    order_id, _ = failed_order(defs, instance, store)
    calls_before = len(store.model_calls.model_call_rows(order_id))
    assert calls_before >= 2  # plan and draft (and perhaps a revision)

    run_key = store.dead_letters.request_replay(order_id, actor="test")
    assert run_key == f"replay-{order_id}-1"
    assert store.orders.get(order_id).status is OrderStatus.REPLAYED
    [replay] = run_replays(defs, instance, store)
    assert replay.success and replay.status is OrderStatus.COMPLETED

    started = {
        e.step_key for e in instance.all_logs(replay.run_id, of_type=DagsterEventType.STEP_START)
    }
    assert started == {"order_delivery", "order_invoice"}
    assert len(store.model_calls.model_call_rows(order_id)) == calls_before
    assert len(store.deliveries.ledger_rows()) == 1
    actions = [
        r["detail"].get("actor")
        for r in store.audit.audit_rows(order_id)
        if r["event"] == "transition" and r["detail"]["to"] == "replayed"
    ]
    assert actions == ["test"]


def test_a_replay_that_fails_again_goes_back_to_the_queue(defs, instance, store) -> None:
    order_id, _ = failed_order(defs, instance, store)
    store.dead_letters.request_replay(order_id, actor="test")
    [replay] = run_replays(defs, instance, store, run_config=ALWAYS_FAIL_DELIVERY)
    assert not replay.success and replay.status is OrderStatus.DEAD_LETTERED
    [letter] = store.dead_letters.dead_letters()
    assert letter["replays"] == 1 and letter["run_id"] == replay.run_id


def test_auto_replay_takes_cooled_down_transient_letters_within_the_limit(
    defs, instance, store
) -> None:
    order_id, _ = failed_order(defs, instance, store)
    assert eligible_for_auto_replay(store, cooldown_seconds=3600, max_replays=3) == []
    with store.begin() as conn:
        conn.execute(update(dead_letters).values(dead_lettered_at=utcnow() - timedelta(hours=2)))
    assert eligible_for_auto_replay(store, cooldown_seconds=3600, max_replays=3) == [order_id]
    assert eligible_for_auto_replay(store, cooldown_seconds=3600, max_replays=0) == []


def test_permanent_letters_are_not_auto_replayed(defs, instance, store, tmp_path) -> None:
    store.orders.submit(make_order(order_id="ghost"))
    assert settle_unlaunchable(store, "ghost", "refused") is Verdict.DEAD_LETTERED
    with store.begin() as conn:
        conn.execute(update(dead_letters).values(dead_lettered_at=utcnow() - timedelta(days=1)))
    assert eligible_for_auto_replay(store, cooldown_seconds=0, max_replays=9) == []
    assert [letter["error_class"] for letter in store.dead_letters.dead_letters()] == ["permanent"]


def test_replay_selection_is_the_failed_step_and_what_follows() -> None:
    assert [k.to_user_string() for k in replay_selection("review")] == [
        "order_review",
        "order_delivery",
        "order_invoice",
    ]
    assert len(replay_selection("launch")) == 6


def test_a_replay_can_start_at_a_named_earlier_step(defs, instance, store) -> None:
    order_id, _ = failed_order(defs, instance, store)
    paid_before = [
        row for row in store.model_calls.model_call_rows(order_id) if not row["cache_hit"]
    ]
    with pytest.raises(InvalidReplay, match="a step is one of intake, plan"):
        request_replay(store, order_id, actor="test", from_step="polish")
    request_replay(store, order_id, actor="test", from_step="draft")
    [replay] = run_replays(defs, instance, store)
    assert replay.success and replay.status is OrderStatus.COMPLETED
    started = {
        e.step_key for e in instance.all_logs(replay.run_id, of_type=DagsterEventType.STEP_START)
    }
    assert started == {"order_draft", "order_review", "order_delivery", "order_invoice"}
    run = instance.get_run_by_id(replay.run_id)
    assert run is not None and run.tags["agentforge/replay_from"] == "draft"
    paid_after = [
        row for row in store.model_calls.model_call_rows(order_id) if not row["cache_hit"]
    ]
    assert len(paid_after) == len(paid_before), "the draft's answer was already paid for"


def test_blips_are_replayed_without_a_person_after_a_doubling_back_off(store) -> None:
    """Transient and infrastructure letters come back by themselves; permanent ones do not."""
    for order_id, error_class, error_type in (
        ("blip", "infrastructure", "RunFailure"),
        ("hard", "permanent", "InjectedPermanentFault"),
        ("lost", "permanent", "MissingArtifact"),
    ):
        store.orders.submit(make_order(order_id=order_id))
        store.orders.claim(order_id, run_id=None, step="intake")
        store.orders.transition(order_id, OrderStatus.FAILED, step="plan", error_class=error_class)
        store.dead_letters.dead_letter(
            order_id,
            run_id="r1",
            failed_step="plan",
            error_class=error_class,
            error_type=error_type,
            message="the worker died",
            attempts=1,
        )

    def age(minutes: int, replays: int) -> None:
        with store.begin() as conn:
            conn.execute(
                update(dead_letters).values(
                    dead_lettered_at=utcnow() - timedelta(minutes=minutes), replays=replays
                )
            )

    age(minutes=0, replays=0)  # lost inputs are not an outage: their first replay goes at once
    assert eligible_for_auto_replay(store, cooldown_seconds=60, max_replays=3) == ["lost"]
    age(minutes=2, replays=1)  # second try: the back-off is 120 s
    assert sorted(eligible_for_auto_replay(store, cooldown_seconds=60, max_replays=3)) == [
        "blip",
        "lost",
    ]
    age(minutes=1, replays=1)
    assert eligible_for_auto_replay(store, cooldown_seconds=60, max_replays=3) == []
    age(minutes=10, replays=3)  # out of replays: a person decides
    assert eligible_for_auto_replay(store, cooldown_seconds=60, max_replays=3) == []
    age(minutes=10, replays=2)
    assert sorted(request_due_replays(store, cooldown_seconds=60, max_replays=3)) == [
        "blip",
        "lost",
    ]
    assert store.orders.status("blip") is OrderStatus.REPLAYED
    assert store.orders.status("hard") is OrderStatus.DEAD_LETTERED
    [asked] = [
        r["detail"]["actor"]
        for r in store.audit.audit_rows("blip")
        if r["event"] == "transition" and r["detail"]["to"] == "replayed"
    ]
    assert asked == "auto_replay"
