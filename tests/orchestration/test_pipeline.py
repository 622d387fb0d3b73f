"""The order pipeline run by Dagster: retries, permanent failures, and 20 orders at 30% faults.

Runs execute in-process against a real (temporary, SQLite) Dagster instance; the report's figures are
checked against Dagster's own event log, not against themselves.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dagster import DagsterEventType, DagsterInstance, Definitions

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.metrics.reliability import build_report
from agentforge_dagster.orchestration.runner import fault_run_config, run_order, run_orders
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def step_events(instance: DagsterInstance, run_id: str) -> Counter[tuple[str, str]]:
    """(step, event type) counts from Dagster's event log for one run."""
    counts: Counter[tuple[str, str]] = Counter()
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None and entry.step_key:
            counts[
                (entry.step_key.removeprefix("order_"), entry.dagster_event.event_type_value)
            ] += 1
    return counts


def scripted(step: str, failures: int) -> dict[str, Any]:
    return {"resources": {"faults": {"config": {"fail_first": {step: failures}}}}}


def test_a_step_that_fails_twice_then_succeeds_books_one_ledger_row(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    order = store.orders.submit(make_order())
    result = run_order(defs, instance, store, order.order_id, run_config=scripted("invoice", 2))
    assert result.success and result.status is OrderStatus.COMPLETED
    assert [row["order_id"] for row in store.deliveries.ledger_rows()] == [order.order_id]
    events = step_events(instance, result.run_id)
    assert events[("invoice", DagsterEventType.STEP_UP_FOR_RETRY.value)] == 2
    assert events[("invoice", DagsterEventType.STEP_SUCCESS.value)] == 1
    attempts = [
        (r["attempt"], r["event"])
        for r in store.audit.audit_rows(order.order_id)
        if r["step"] == "invoice" and r["event"].startswith("step_")
    ]
    assert attempts == [
        (1, "step_started"),
        (1, "step_failed"),
        (2, "step_started"),
        (2, "step_failed"),
        (3, "step_started"),
        (3, "step_succeeded"),
    ]


def test_a_permanent_error_is_not_retried_and_dead_letters_the_order(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    order = store.orders.submit(make_order())
    broken = {"resources": {"faults": {"config": {"fail_permanently": ["review"]}}}}
    result = run_order(defs, instance, store, order.order_id, run_config=broken)
    assert not result.success and result.status is OrderStatus.DEAD_LETTERED
    events = step_events(instance, result.run_id)
    assert events[("review", DagsterEventType.STEP_FAILURE.value)] == 1
    assert events[("review", DagsterEventType.STEP_UP_FOR_RETRY.value)] == 0
    record = store.orders.get(order.order_id)
    assert record.failed_step == "review" and "cannot succeed" in (record.last_error or "")
    [failed] = [
        r
        for r in store.audit.audit_rows(order.order_id)
        if r["event"] == "transition" and r["detail"]["to"] == "failed"
    ]
    assert failed["detail"]["error_class"] == "permanent"
    [letter] = store.dead_letters.dead_letters()
    assert (letter["error_class"], letter["error_type"], letter["attempts"]) == (
        "permanent",
        "InjectedPermanentFault",
        1,
    )
    assert store.deliveries.ledger_rows() == []


def test_a_run_for_an_unknown_order_is_refused_before_any_step(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    instance.add_dynamic_partitions("orders", ["ghost-1"])
    result = defs.resolve_job_def("order_pipeline").execute_in_process(
        partition_key="ghost-1", instance=instance, raise_on_error=False
    )
    assert not result.success
    started = [event for (_, event) in step_events(instance, result.run_id) if "STEP" in event]
    assert started == [], "no step ran"
    assert store.audit.audit_rows() == [], "nothing was written"


def test_twenty_orders_at_thirty_percent_faults_none_lost(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    # Fixed ids: the injected faults are a function of seed, order, step and attempt, so the same
    # orders fail in the same places on every run of the test.
    order_ids = [
        store.orders.submit(make_order(i, order_id=f"faulty-{i:02d}")).order_id for i in range(20)
    ]
    results = run_orders(defs, instance, store, order_ids, run_config=fault_run_config(0.3, 11))

    statuses = store.orders.statuses()
    assert sorted(statuses) == sorted(order_ids)
    # An order whose step runs out of retries is dead-lettered (recorded, replayable), never lost.
    assert {statuses[o] for o in order_ids} <= {"completed", "dead_lettered"}
    completed = [o for o in order_ids if statuses[o] == "completed"]
    ledger = [row["order_id"] for row in store.deliveries.ledger_rows()]
    assert sorted(ledger) == sorted(completed) and len(set(ledger)) == len(ledger)

    report = build_report(instance, statuses)
    assert report.orders_run == 20 and report.completed + report.failed == 20
    assert report.predicted_without_retries is not None
    assert abs(report.predicted_without_retries - 0.7**6) < 1e-9
    assert report.end_to_end_success > report.predicted_without_retries

    dagster: Counter[tuple[str, str]] = Counter()
    for result in results:
        dagster.update(step_events(instance, result.run_id))
    for step, row in report.steps.iterrows():
        starts = (
            dagster[(str(step), DagsterEventType.STEP_START.value)]
            + dagster[(str(step), DagsterEventType.STEP_RESTARTED.value)]
        )
        retries = dagster[(str(step), DagsterEventType.STEP_UP_FOR_RETRY.value)]
        failures = dagster[(str(step), DagsterEventType.STEP_FAILURE.value)]
        assert row["attempts"] == starts, step
        assert row["failed_attempts"] == retries + failures, step
    assert report.steps["failed_attempts"].sum() > 0, "30% faults should have caused retries"
    assert store.audit.verify_audit().ok
