"""The business store: audited transitions, refusals kept whole, a hash chain that detects tampering."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, text, update

from agentforge_dagster.domain.errors import IllegalTransition, UnknownOrder
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.schema import audit_log
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def test_submit_queues_and_audits(store: BusinessStore) -> None:
    order = store.submit(make_order(), source="test")
    record = store.get(order.order_id)
    assert record.status is OrderStatus.QUEUED and record.order == order
    [row] = store.audit_rows(order.order_id)
    assert row["event"] == "order_submitted" and row["detail"]["source"] == "test"


def test_the_same_order_id_cannot_be_queued_twice(store: BusinessStore) -> None:
    order = store.submit(make_order(order_id="dup-1"))
    with pytest.raises(IllegalTransition, match="already submitted"):
        store.submit(order)
    assert store.order_ids() == ["dup-1"]


def test_transitions_follow_the_machine_and_are_audited(store: BusinessStore) -> None:
    order = store.submit(make_order())
    store.transition(order.order_id, OrderStatus.PROCESSING, run_id="r1", step="intake")
    with pytest.raises(IllegalTransition):
        store.transition(order.order_id, OrderStatus.QUEUED)
    store.transition(order.order_id, OrderStatus.FAILED, step="draft", error="boom")
    record = store.get(order.order_id)
    assert record.status is OrderStatus.FAILED
    assert (record.failed_step, record.last_error) == ("draft", "boom")
    moves = [
        (r["detail"]["from"], r["detail"]["to"])
        for r in store.audit_rows(order.order_id)
        if r["event"] == "transition"
    ]
    assert moves == [("queued", "processing"), ("processing", "failed")]


def test_unknown_orders_are_reported(store: BusinessStore) -> None:
    with pytest.raises(UnknownOrder):
        store.get("nope")
    with pytest.raises(UnknownOrder):
        store.transition("nope", OrderStatus.PROCESSING)


def test_rejections_keep_the_payload_and_reasons(store: BusinessStore) -> None:
    payload = "x" * 1_000_000
    rejection_id = store.reject(payload, ["brief: too long"], source="file:big.json")
    with store.engine.connect() as conn:
        kept = conn.execute(text("select payload, errors from rejected_orders")).one()
    assert len(kept.payload) == 1_000_000 and "too long" in kept.errors
    [row] = store.audit_rows()
    assert row["event"] == "order_rejected" and row["detail"]["rejection_id"] == rejection_id


def _three_orders(store: BusinessStore) -> None:
    for index in range(3):
        order = store.submit(make_order(index))
        store.transition(order.order_id, OrderStatus.PROCESSING)


def test_audit_chain_verifies_when_untouched(store: BusinessStore) -> None:
    _three_orders(store)
    report = store.verify_audit()
    assert report.ok and report.rows == 6


def test_audit_chain_detects_an_edited_row(store: BusinessStore) -> None:
    _three_orders(store)
    with store.begin() as conn:
        conn.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(detail='{"to": "completed"}')
        )
    report = store.verify_audit()
    assert not report.ok and report.first_broken_seq == 3
    assert "content changed" in (report.reason or "")


def test_audit_chain_detects_a_deleted_row(store: BusinessStore) -> None:
    _three_orders(store)
    with store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
    report = store.verify_audit()
    assert not report.ok and report.first_broken_seq == 5
    assert "link broken" in (report.reason or "")
