"""Leases on orders, against the real store (SQLite here; PostgreSQL in the race test)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from agentforge_dagster.domain.errors import OrderTaken
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.leases import (
    LOST,
    LeaseKeeper,
    holder_is_gone,
    runner_identity,
)
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order


def _queued(store: BusinessStore, index: int = 0) -> str:
    return store.orders.submit(make_order(index)).order_id


def test_a_second_runner_cannot_take_a_leased_order_until_the_first_releases_it(
    store: BusinessStore,
) -> None:
    order_id = _queued(store)
    store.leases.take_lease(order_id, "run-a")
    with pytest.raises(OrderTaken, match="held by run run-a"):
        store.leases.take_lease(order_id, "run-b")
    with pytest.raises(OrderTaken, match="held by run run-a"):
        store.orders.claim(order_id, run_id="run-b", step="intake")
    assert store.orders.status(order_id) is OrderStatus.QUEUED  # the loser changed nothing
    store.leases.release_leases("run-a")
    store.leases.take_lease(order_id, "run-b")
    assert store.leases.lease_of(order_id).run_id == "run-b"  # type: ignore[union-attr]


def test_the_holder_claims_and_renews_and_leaving_processing_clears_the_lease(
    store: BusinessStore,
) -> None:
    order_id = _queued(store)
    store.leases.take_lease(order_id, "run-a", seconds=30)
    store.orders.claim(order_id, run_id="run-a", step="intake", lease_seconds=30)
    first = store.leases.lease_of(order_id)
    assert first is not None and first.status is OrderStatus.PROCESSING and first.until
    assert first.holder == runner_identity()
    time.sleep(0.01)
    assert store.leases.renew_leases("run-a", seconds=300) == 1
    renewed = store.leases.lease_of(order_id)
    assert renewed is not None and renewed.until and renewed.until > first.until
    store.orders.transition(order_id, OrderStatus.FAILED, run_id="run-a", step="plan", error="x")
    cleared = store.leases.lease_of(order_id)
    assert cleared is not None and (cleared.run_id, cleared.holder, cleared.until) == (None,) * 3


def test_an_expired_lease_is_taken_back_once_and_its_run_can_never_claim_again(
    store: BusinessStore,
) -> None:
    order_id = _queued(store)
    store.orders.claim(order_id, run_id="run-a", step="intake", lease_seconds=0.001)
    time.sleep(0.01)
    [lease] = store.leases.expired_leases()
    assert lease.run_id == "run-a" and lease.status is OrderStatus.PROCESSING
    with ThreadPoolExecutor(4) as pool:  # four recoverers at once: one wins
        won = list(pool.map(lambda _: store.leases.take_back(lease, reason="test"), range(4)))
    assert won.count(True) == 1
    assert store.leases.expired_leases() == []
    assert store.leases.lease_of(order_id).run_id == f"{LOST}run-a"  # type: ignore[union-attr]
    with pytest.raises(OrderTaken, match="no longer this run's"):
        store.orders.claim(order_id, run_id="run-a", step="plan")  # the lost run woke up
    with pytest.raises(OrderTaken, match="no longer this run's"):
        store.orders.claim(order_id, run_id="run-c", step="plan")  # a stranger
    store.orders.claim(order_id, run_id="run-b", step="plan", predecessors=frozenset({"run-a"}))
    events = [row["event"] for row in store.audit.audit_rows(order_id)]
    assert events.count("lease_expired") == 1 and "lease_taken_over" in events


def test_a_live_lease_is_not_taken_back_and_a_renewed_one_survives_a_recoverer(
    store: BusinessStore,
) -> None:
    order_id = _queued(store)
    store.orders.claim(order_id, run_id="run-a", step="intake", lease_seconds=0.001)
    time.sleep(0.01)
    [stale] = store.leases.expired_leases()
    store.leases.renew_leases("run-a", seconds=300)  # the runner was only slow
    assert not store.leases.take_back(stale, reason="test")
    assert store.leases.expired_leases() == []
    store.orders.claim(order_id, run_id="run-a", step="plan")


def test_a_dead_local_holder_frees_its_lease_before_it_expires(
    store: BusinessStore, tmp_path: object
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "from agentforge_dagster.persistence.leases import "
         "runner_identity; print(runner_identity(), flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    holder = child.stdout.readline().strip()
    assert not holder_is_gone(holder)
    child.kill()
    child.wait()
    assert holder_is_gone(holder)
    assert not holder_is_gone(runner_identity())
    assert not holder_is_gone("elsewhere/pid:[1]:1")  # another machine: only expiry tells
    order_id = _queued(store)
    store.orders.claim(order_id, run_id="run-a", step="intake", lease_seconds=3600)
    with store.begin() as conn:
        from agentforge_dagster.persistence.schema import orders

        conn.execute(orders.update().values(lease_holder=holder))
    [lease] = store.leases.expired_leases()
    assert lease.holder == holder and store.leases.take_back(lease, reason="holder gone")


def test_finished_orders_are_nobody_s_to_take(store: BusinessStore) -> None:
    order_id = _queued(store)
    store.orders.claim(order_id, run_id="run-a", step="intake")
    store.orders.transition(order_id, OrderStatus.FAILED, run_id="run-a", step="plan", error="x")
    with pytest.raises(OrderTaken, match="is failed; nothing to run"):
        store.leases.take_lease(order_id, "run-b")


def test_the_keeper_renews_while_it_runs_and_releases_when_stopped(store: BusinessStore) -> None:
    order_id = _queued(store)
    store.orders.claim(order_id, run_id="run-a", step="intake", lease_seconds=0.3)
    with LeaseKeeper(store.leases, "run-a", seconds=0.3):
        time.sleep(1.0)  # three lease lengths: without renewal it would have expired
        assert store.leases.expired_leases() == []
    [released] = store.leases.expired_leases()
    assert released.run_id == "run-a"


def test_two_claimers_on_postgresql_never_both_win(
    pg_store: BusinessStore,
) -> None:
    order_ids = [_queued(pg_store, index) for index in range(20)]

    def runner(name: str) -> Callable[[str], str | None]:
        def take(order_id: str) -> str | None:
            try:
                pg_store.leases.take_lease(order_id, name)
            except OrderTaken:
                return None
            return name

        return take

    with ThreadPoolExecutor(2) as pool:
        a = pool.map(runner("run-a"), order_ids)
        b = pool.map(runner("run-b"), order_ids)
        winners = list(zip(a, b, strict=True))
    assert all((x is None) != (y is None) for x, y in winners), winners
