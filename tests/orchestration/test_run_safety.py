"""Step-level safety: a hung model call times out and is retried; a server's wait is honoured."""

from __future__ import annotations

import time
from datetime import datetime

from dagster import DagsterEventType, DagsterInstance, Definitions

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def attempts(store: BusinessStore, order_id: str, step: str) -> list[dict]:
    return [
        r
        for r in store.audit.audit_rows(order_id)
        if r["step"] == step and r["event"] in ("step_started", "step_failed", "step_succeeded")
    ]


def test_a_hung_model_call_times_out_and_the_step_is_retried(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings
) -> None:
    order = store.orders.submit(make_order())
    config = {
        "resources": {
            "faults": {"config": {"hang_first": {"plan": 1}, "hang_seconds": 20}},
            "model": {"config": {"timeout_seconds": 0.5}},
        }
    }
    started = time.monotonic()
    result = run_order(defs, instance, store, order.order_id, run_config=config)
    assert result.success and result.status is OrderStatus.COMPLETED
    # Far less than the hang, even on a busy machine: the step gave up on the call at 0.5 s.
    assert time.monotonic() - started < 15, "the step waited for the hung call"
    plan = attempts(store, order.order_id, "plan")
    assert [(r["attempt"], r["event"]) for r in plan] == [
        (1, "step_started"),
        (1, "step_failed"),
        (2, "step_started"),
        (2, "step_succeeded"),
    ]
    assert plan[1]["detail"]["error_type"] == "ModelCallTimeout"
    assert plan[1]["detail"]["error_class"] == "transient"
    retries = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retries] == ["order_plan"]


def test_a_server_provided_wait_is_honoured(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    order = store.orders.submit(make_order())
    config = {
        "resources": {
            "faults": {"config": {"fail_first": {"draft": 1}, "retry_after_seconds": 1.5}}
        }
    }
    result = run_order(defs, instance, store, order.order_id, run_config=config)
    assert result.success
    [retry] = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert retry.dagster_event is not None
    assert retry.dagster_event.event_specific_data.seconds_to_wait >= 1.5
    draft = attempts(store, order.order_id, "draft")
    failed_at = datetime.fromisoformat(draft[1]["ts"])
    retried_at = datetime.fromisoformat(draft[2]["ts"])
    assert (retried_at - failed_at).total_seconds() >= 1.4
