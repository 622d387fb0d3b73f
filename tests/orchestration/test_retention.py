"""Retention of order partitions: old final orders lose their partition, nothing else changes."""

from __future__ import annotations

from datetime import timedelta

from dagster import DagsterInstance
from sqlalchemy import update

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.intake import register_orders
from agentforge_dagster.persistence.schema import orders
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order
from tests.persistence.test_store_concurrency import dead_lettered_order

# order id → the state it ends in, and how many days ago it got there
ORDERS = {
    "old-done": (OrderStatus.COMPLETED, 40),
    "old-rejected": (OrderStatus.REJECTED, 40),
    "old-dead": (OrderStatus.DEAD_LETTERED, 40),
    "old-held": (OrderStatus.QUARANTINED, 40),
    "old-queued": (OrderStatus.QUEUED, 40),
    "new-done": (OrderStatus.COMPLETED, 2),
}
PATHS = {
    OrderStatus.COMPLETED: [OrderStatus.PROCESSING, OrderStatus.COMPLETED],
    OrderStatus.REJECTED: [OrderStatus.PROCESSING, OrderStatus.QUARANTINED, OrderStatus.REJECTED],
    OrderStatus.QUARANTINED: [OrderStatus.PROCESSING, OrderStatus.QUARANTINED],
    OrderStatus.QUEUED: [],
}


def aged_orders(store: BusinessStore, instance: DagsterInstance) -> None:
    for index, (order_id, (final, days)) in enumerate(ORDERS.items()):
        if final is OrderStatus.DEAD_LETTERED:
            dead_lettered_order(store, order_id)
        else:
            store.orders.submit(make_order(index, order_id=order_id))
            for status in PATHS[final]:
                store.orders.transition(order_id, status, step="test")
        with store.begin() as conn:
            conn.execute(
                update(orders)
                .where(orders.c.order_id == order_id)
                .values(updated_at=utcnow() - timedelta(days=days))
            )
    register_orders(instance, ORDERS)


def test_only_orders_final_for_longer_than_the_retention_lose_their_partition(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance
) -> None:
    aged_orders(store, instance)
    assert store.orders.status("old-dead") is OrderStatus.DEAD_LETTERED
    audit_before = len(store.audit.audit_rows())
    defs = build_definitions(settings)
    job = defs.resolve_job_def("prune_order_partitions")

    off = job.execute_in_process(instance=instance)  # no retention set: nothing happens
    assert off.success and off.output_for_node("delete_old_order_partitions") == 0

    result = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"delete_old_order_partitions": {"config": {"older_than_days": 30}}}},
    )
    assert result.success and result.output_for_node("delete_old_order_partitions") == 2
    left = set(instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME))
    assert left == set(ORDERS) - {"old-done", "old-rejected"}
    # The records stay: the orders, their states, their audit trail (one event more, the pruning).
    assert store.orders.status("old-done") is OrderStatus.COMPLETED
    assert len(store.audit.audit_rows()) == audit_before + 1
    [pruned] = [r for r in store.audit.audit_rows() if r["event"] == "partitions_pruned"]
    assert pruned["detail"]["count"] == 2
    # A run launched for an order registers its partition again.
    assert register_orders(instance, ["old-done"]) == ["old-done"]
