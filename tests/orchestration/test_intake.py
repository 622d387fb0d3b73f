"""Submitting an order registers its partition; orders from before that rule are registered too."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from agentforge_dagster.domain.errors import AlreadySubmitted
from agentforge_dagster.orchestration.intake import (
    register_existing_orders,
    register_orders,
    submit_order,
)
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def test_submit_registers_the_partition(store: BusinessStore, instance: DagsterInstance) -> None:
    order = submit_order(store, instance, make_order(), source="test")
    assert instance.get_dynamic_partitions("orders") == [order.order_id]


def test_orders_taken_in_before_are_registered_once(
    store: BusinessStore, instance: DagsterInstance
) -> None:
    old = [store.orders.submit(make_order(i)).order_id for i in range(3)]  # as before: store only
    assert instance.get_dynamic_partitions("orders") == []
    assert sorted(register_existing_orders(store, instance)) == sorted(old)
    assert sorted(instance.get_dynamic_partitions("orders")) == sorted(old)
    assert register_existing_orders(store, instance) == [], "idempotent"


def test_a_repeated_submission_registers_what_the_first_try_did_not(
    store: BusinessStore, instance: DagsterInstance
) -> None:
    """The first try queued the order and lost its connection before registering the partition."""
    order = store.orders.submit(make_order())
    with pytest.raises(AlreadySubmitted):
        submit_order(store, instance, order, source="test")
    assert instance.get_dynamic_partitions("orders") == [order.order_id]


def test_registering_asks_about_the_new_ids_not_for_every_partition(
    store: BusinessStore, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every submit and queue tick registers; reading all partitions would cost O(partitions)."""
    instance.add_dynamic_partitions("orders", ["past-1", "past-2"])

    def every_partition(name: str) -> list[str]:
        raise AssertionError(f"read every partition of {name!r}")

    monkeypatch.setattr(instance, "get_dynamic_partitions", every_partition)
    assert register_orders(instance, ["past-2", "new-1", "new-1"]) == ["new-1"]
    order = submit_order(store, instance, make_order(), source="test")
    assert instance.get_existing_dynamic_partitions(
        "orders", ["past-1", "new-1", order.order_id]
    ) == {
        "past-1",
        "new-1",
        order.order_id,
    }
