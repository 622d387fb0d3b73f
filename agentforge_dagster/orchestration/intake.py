"""Taking an order in: the business store queues it and Dagster learns its partition, together.

Orders are the dynamic partitions of the order pipeline. An order is registered as a partition
the moment it is submitted — from the CLI, the drop folder or the queue — so every way of starting
a run works on it: the UI's launchpad, ``dagster job launch``/``dagster job execute``, the sensors
and ``agentforge run``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dagster import DagsterInstance

from agentforge_dagster.domain.errors import AlreadySubmitted, PermanentError
from agentforge_dagster.domain.models import ORDER_ID_PATTERN, Order
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.persistence.store import BusinessStore

_ORDER_ID = re.compile(ORDER_ID_PATTERN)


class NotLaunchable(PermanentError):
    """An order that no run can be launched for (its id cannot be a partition key)."""


def check_launchable(order_id: str) -> None:
    """Refuse an order id that cannot be a partition (only rows written around intake can be)."""
    if not _ORDER_ID.match(order_id):
        raise NotLaunchable(
            f"order id {order_id!r} cannot be launched: an id is 1-64 letters, digits, - and _"
        )


def register_orders(instance: DagsterInstance, order_ids: Iterable[str]) -> list[str]:
    """Make each order a partition of the pipeline (idempotent); returns the ones added.

    Dagster is asked about these ids only, never for every partition: a submit or a sensor tick
    costs the same at 100,000 partitions as at 100 (``bench/PARTITIONS.md``).
    """
    wanted = list(dict.fromkeys(order_ids))
    if not wanted:
        return []
    known = instance.get_existing_dynamic_partitions(ORDERS_PARTITIONS_NAME, wanted)
    new = [order_id for order_id in wanted if order_id not in known]
    for order_id in new:
        check_launchable(order_id)
    if new:
        instance.add_dynamic_partitions(ORDERS_PARTITIONS_NAME, new)
    return new


def submit_order(
    store: BusinessStore,
    instance: DagsterInstance,
    order: Order,
    *,
    source: str,
    traceparent: str | None = None,
) -> Order:
    """Queue a validated order and register its partition.

    A repeat of a submission that was queued (:class:`AlreadySubmitted`) still registers the
    partition: the first try may have ended, with a dropped connection, between the two.
    """
    try:
        store.orders.submit(order, source=source, traceparent=traceparent)
    except AlreadySubmitted:
        register_orders(instance, [order.order_id])
        raise
    register_orders(instance, [order.order_id])
    return order


def register_existing_orders(store: BusinessStore, instance: DagsterInstance) -> list[str]:
    """Register the partition of every order the store holds (orders taken in before this rule)."""
    return register_orders(
        instance, (order_id for order_id in store.orders.order_ids() if _ORDER_ID.match(order_id))
    )
