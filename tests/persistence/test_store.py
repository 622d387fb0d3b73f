"""The business store: audited transitions, refusals kept (bounded), a hash chain that detects tampering."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import delete, text, update

from agentforge_dagster.domain.errors import IllegalTransition, OrderIdTaken, UnknownOrder
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.orders import MAX_REJECTED_PAYLOAD_CHARS
from agentforge_dagster.persistence.schema import audit_log
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def test_submit_queues_and_audits(store: BusinessStore) -> None:
    order = store.orders.submit(make_order(), source="test")
    record = store.orders.get(order.order_id)
    assert record.status is OrderStatus.QUEUED and record.order == order
    [row] = store.audit.audit_rows(order.order_id)
    assert row["event"] == "order_submitted" and row["detail"]["source"] == "test"


def test_the_same_order_id_cannot_be_queued_twice(store: BusinessStore) -> None:
    order = store.orders.submit(make_order(order_id="dup-1"))
    with pytest.raises(IllegalTransition, match="already submitted"):
        store.orders.submit(order)
    with pytest.raises(OrderIdTaken, match="already used by a different order"):
        store.orders.submit(make_order(7, order_id="dup-1"))
    assert store.orders.order_ids() == ["dup-1"]
    assert store.orders.get("dup-1").order == order, "the first order is kept"


def test_transitions_follow_the_machine_and_are_audited(store: BusinessStore) -> None:
    order = store.orders.submit(make_order())
    store.orders.transition(order.order_id, OrderStatus.PROCESSING, run_id="r1", step="intake")
    with pytest.raises(IllegalTransition):
        store.orders.transition(order.order_id, OrderStatus.QUEUED)
    store.orders.transition(order.order_id, OrderStatus.FAILED, step="draft", error="boom")
    record = store.orders.get(order.order_id)
    assert record.status is OrderStatus.FAILED
    assert (record.failed_step, record.last_error) == ("draft", "boom")
    moves = [
        (r["detail"]["from"], r["detail"]["to"])
        for r in store.audit.audit_rows(order.order_id)
        if r["event"] == "transition"
    ]
    assert moves == [("queued", "processing"), ("processing", "failed")]


def test_unknown_orders_are_reported(store: BusinessStore) -> None:
    with pytest.raises(UnknownOrder):
        store.orders.get("nope")
    with pytest.raises(UnknownOrder):
        store.orders.transition("nope", OrderStatus.PROCESSING)


def test_rejections_keep_the_payload_and_reasons(store: BusinessStore) -> None:
    payload = "x" * 1_000_000
    rejection_id = store.orders.reject(payload, ["brief: too long"], source="file:big.json")
    with store.engine.connect() as conn:
        kept = conn.execute(text("select payload, errors from rejected_orders")).one()
    assert "too long" in kept.errors
    # Bounded: a prefix, and the SHA-256 of the whole in the row and the audit event.
    digest = hashlib.sha256(payload.encode()).hexdigest()
    assert kept.payload.startswith("x" * MAX_REJECTED_PAYLOAD_CHARS)
    assert kept.payload.endswith(f"[truncated: 1000000 bytes in all, sha256 {digest}]")
    [row] = store.audit.audit_rows()
    assert row["event"] == "order_rejected" and row["detail"]["rejection_id"] == rejection_id
    assert row["detail"]["payload_sha256"] == digest and row["detail"]["payload_bytes"] == 1_000_000
    store.orders.reject(b"small \xff", ["order: not UTF-8 text"], source="stdin")
    with store.engine.connect() as conn:
        small = conn.execute(text("select payload from rejected_orders where source = 'stdin'"))
        assert small.scalar_one() == "small \\xff", "small payloads are kept whole"


def _three_orders(store: BusinessStore) -> None:
    for index in range(3):
        order = store.orders.submit(make_order(index))
        store.orders.transition(order.order_id, OrderStatus.PROCESSING)


def test_audit_chain_verifies_when_untouched(store: BusinessStore) -> None:
    _three_orders(store)
    report = store.audit.verify_audit()
    assert report.ok and report.rows == 6


def test_audit_chain_detects_an_edited_row(store: BusinessStore) -> None:
    _three_orders(store)
    with store.begin() as conn:
        conn.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(detail='{"to": "completed"}')
        )
    report = store.audit.verify_audit()
    assert not report.ok and report.first_broken_seq == 3
    assert "content changed" in (report.reason or "")


def test_audit_chain_detects_a_deleted_row(store: BusinessStore) -> None:
    _three_orders(store)
    with store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
    report = store.audit.verify_audit()
    assert not report.ok and report.first_broken_seq == 5
    assert "link broken" in (report.reason or "")
