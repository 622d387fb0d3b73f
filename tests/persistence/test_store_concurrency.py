"""Writers racing on one key: the database settles it, one row each, and no writer fails by surprise.

Eight threads start each write at the same instant (a barrier), each on its own connection. Run on
PostgreSQL, where writers truly overlap, and on SQLite, where the same statements must still hold.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, func, make_url, select, text

from agentforge_dagster.domain.errors import IllegalTransition, OrderTaken
from agentforge_dagster.domain.models import Delivery, Invoice, utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.dead_letters import upsert_letter
from agentforge_dagster.persistence.schema import (
    budgets,
    dead_letters,
    deliveries,
    ledger,
    metadata,
    orders,
)
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import PG_ADMIN_URL, make_order

WRITERS = 8
T = TypeVar("T")


@pytest.fixture(scope="module")
def pg_race_store(pg_admin: Engine) -> Iterator[BusinessStore]:
    """One PostgreSQL database for the whole module, emptied before each test.

    Making and dropping a database costs most of a second; a race, a few milliseconds.
    """
    name = f"agentforge_race_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = BusinessStore.from_url(
        make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    )
    try:
        store.upgrade()
        yield store
    finally:
        store.engine.dispose()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.service), "sqlite"])
def racing_store(request: pytest.FixtureRequest) -> BusinessStore:
    """An empty store on each dialect, its pool warmed so that the writers start together."""
    store: BusinessStore
    if request.param == "postgresql":
        store = request.getfixturevalue("pg_race_store")
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        with store.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))
    else:
        store = request.getfixturevalue("store")
    held = [store.engine.connect() for _ in range(WRITERS)]
    for conn in held:
        conn.close()
    return store


def at_once(write: Callable[[int], T]) -> list[T | Exception]:
    """Run ``write(0..7)`` in eight threads released together; each result or the error raised."""
    barrier = threading.Barrier(WRITERS)

    def writer(index: int) -> T | Exception:
        barrier.wait(timeout=10)
        try:
            return write(index)
        except Exception as exc:  # kept, so the test can say which writers failed and how
            return exc

    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(writer, range(WRITERS)))


def succeeded(outcomes: list[Any]) -> list[Any]:
    return [o for o in outcomes if not isinstance(o, Exception)]


def refused(outcomes: list[Any]) -> list[Exception]:
    return [o for o in outcomes if isinstance(o, Exception)]


def count(store: BusinessStore, table: Any, *where: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def in_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def dead_lettered_order(store: BusinessStore, order_id: str) -> str:
    """An order that failed at its draft and waits in the dead-letter queue."""
    store.orders.submit(make_order(order_id=order_id))
    store.orders.claim(order_id, run_id="run-1", step="intake")
    store.orders.transition(
        order_id, OrderStatus.FAILED, step="draft", error="boom", error_class="transient"
    )
    store.dead_letters.dead_letter(
        order_id,
        run_id="run-1",
        failed_step="draft",
        error_class="transient",
        error_type="Timeout",
        message="slow",
        attempts=3,
    )
    return order_id


def test_one_delivery_per_order_and_every_writer_gets_the_first(
    racing_store: BusinessStore,
) -> None:
    proposals = [
        Delivery(
            order_id="o-1",
            delivery_id="dlv-o-1",  # as the delivery step names it: the same on every attempt
            location=f"/deliveries/attempt-{index}/o-1.md",
            content_sha256=f"{index:064x}",
            delivered_at=utcnow(),
        )
        for index in range(WRITERS)
    ]
    outcomes = at_once(lambda index: racing_store.deliveries.record_delivery(proposals[index]))
    assert refused(outcomes) == []
    assert count(racing_store, deliveries) == 1
    kept = succeeded(outcomes)[0]
    assert all(outcome == kept for outcome in outcomes), "every writer gets the same delivery"
    assert kept.location in {p.location for p in proposals}
    again = racing_store.deliveries.record_delivery(
        proposals[-1].model_copy(update={"location": "/late"})
    )
    assert again == kept, "a later writer gets the first delivery back"


def test_one_ledger_entry_per_order_and_every_writer_gets_the_first(
    racing_store: BusinessStore,
) -> None:
    order = make_order(order_id="o-2")
    start = utcnow()
    proposals = [
        Invoice(
            order_id=order.order_id,
            invoice_id=f"inv-{order.order_id}",
            amount_cents=order.price_cents,
            issued_at=start + timedelta(seconds=index),
        )
        for index in range(WRITERS)
    ]
    outcomes = at_once(
        lambda index: racing_store.deliveries.record_ledger_entry(order, proposals[index])
    )
    assert refused(outcomes) == []
    assert count(racing_store, ledger) == 1
    issued = {in_utc(outcome.issued_at) for outcome in succeeded(outcomes)}
    assert len(issued) == 1, "every writer sees the same booked invoice"
    assert issued <= {p.issued_at for p in proposals}


def test_one_stored_answer_per_key_and_the_first_is_kept(racing_store: BusinessStore) -> None:
    def store_answer(index: int) -> None:
        racing_store.model_calls.store_response(
            cache_key="k" * 64,
            provider="offline",
            model="m",
            text=f"answer {index}",
            input_tokens=10,
            output_tokens=20 + index,
            cost_usd=Decimal("0.01"),
        )

    assert refused(at_once(store_answer)) == []
    stored = racing_store.model_calls.stored_response("k" * 64)
    assert stored is not None and stored["text"] in {f"answer {i}" for i in range(WRITERS)}
    store_answer(99)
    assert racing_store.model_calls.stored_response("k" * 64) == stored, (
        "a later writer keeps the first answer"
    )


def test_a_new_letter_written_at_once_is_one_letter(racing_store: BusinessStore) -> None:
    order_ids = [f"o-3{round_}" for round_ in "abcd"]  # the window is narrow: race four times
    for order_id in order_ids:

        def write_letter(index: int, order_id: str = order_id) -> None:
            with racing_store.begin() as conn:
                upsert_letter(conn, order_id, letter(run_id=f"run-{index}"))

        assert refused(at_once(write_letter)) == []
    with racing_store.engine.connect() as conn:
        rows = conn.execute(select(dead_letters).order_by(dead_letters.c.order_id)).mappings()
        kept = [(row["order_id"], row["replays"], row["run_id"][:4]) for row in rows]
    assert kept == [(order_id, 0, "run-") for order_id in order_ids]


def test_a_new_failure_overwrites_the_letter_and_keeps_the_replay_count(
    racing_store: BusinessStore,
) -> None:
    order_id = dead_lettered_order(racing_store, "o-4")
    racing_store.dead_letters.request_replay(order_id, actor="test")
    racing_store.orders.claim(order_id, run_id="run-2", step="draft")
    racing_store.orders.transition(order_id, OrderStatus.FAILED, step="review", error="no")

    outcomes = at_once(
        lambda index: racing_store.dead_letters.dead_letter(
            order_id,
            run_id=f"run-2-{index}",
            failed_step="review",
            error_class="permanent",
            error_type="Refused",
            message=f"writer {index}",
            attempts=1,
        )
    )
    assert len(succeeded(outcomes)) == 1, "the order is dead-lettered once"
    assert all(isinstance(e, IllegalTransition) for e in refused(outcomes)), refused(outcomes)
    [letter_row] = racing_store.dead_letters.dead_letters()
    winner = outcomes.index(None)
    assert (letter_row["run_id"], letter_row["message"]) == (f"run-2-{winner}", f"writer {winner}")
    assert (letter_row["failed_step"], letter_row["replays"]) == ("review", 1)
    assert letter_row["replay_run_key"] is None


def test_one_replay_request_counts_once(racing_store: BusinessStore) -> None:
    order_id = dead_lettered_order(racing_store, "o-5")
    outcomes = at_once(
        lambda index: racing_store.dead_letters.request_replay(order_id, actor=f"op-{index}")
    )
    assert succeeded(outcomes) == [f"replay-{order_id}-1"]
    assert all(isinstance(e, IllegalTransition) for e in refused(outcomes)), refused(outcomes)
    assert (
        racing_store.dead_letters.replays_to_launch()[0]["replay_run_key"] == f"replay-{order_id}-1"
    )
    assert count(racing_store, dead_letters, dead_letters.c.replays == 1) == 1


def test_runs_claiming_one_order_at_once_one_holds_it_the_others_are_told(
    racing_store: BusinessStore,
) -> None:
    order_id = racing_store.orders.submit(make_order(order_id="o-6")).order_id
    outcomes = at_once(
        lambda index: racing_store.orders.claim(order_id, run_id=f"run-{index}", step="intake")
    )
    assert succeeded(outcomes) == [OrderStatus.PROCESSING]
    assert all(isinstance(e, OrderTaken) for e in refused(outcomes)), refused(outcomes)
    claims = [
        row
        for row in racing_store.audit.audit_rows(order_id)
        if row["event"] == "transition" and row["detail"]["to"] == "processing"
    ]
    assert len(claims) == 1, "claimed once"


def test_the_same_order_submitted_at_once_is_queued_once(racing_store: BusinessStore) -> None:
    order = make_order(order_id="o-7")
    outcomes = at_once(lambda index: racing_store.orders.submit(order, source=f"writer-{index}"))
    assert succeeded(outcomes) == [order]
    assert all("already submitted" in str(e) for e in refused(outcomes)), refused(outcomes)
    assert count(racing_store, orders) == 1
    assert racing_store.audit.verify_audit().ok


def test_a_budget_set_at_once_is_one_cap_the_last_one_audited(
    racing_store: BusinessStore,
) -> None:
    outcomes = at_once(
        lambda index: racing_store.model_calls.set_budget(Decimal(10 + index), "2026-11")
    )
    assert refused(outcomes) == []
    assert count(racing_store, budgets) == 1
    last_set = [r for r in racing_store.audit.audit_rows() if r["event"] == "budget_set"][-1]
    assert racing_store.model_calls.budget_cap("2026-11") == Decimal(last_set["detail"]["cap_usd"])
    assert racing_store.audit.verify_audit().ok


def letter(*, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "failed_step": "draft",
        "error_class": "transient",
        "error_type": "Timeout",
        "message": "slow",
        "attempts": 1,
        "dead_lettered_at": utcnow(),
        "replay_requested_at": None,
        "replay_run_key": None,
    }


def paid_call(store: BusinessStore, cost: str, *, reservation_id: int | None = None) -> None:
    moment = datetime(2026, 11, 5, tzinfo=UTC)
    store.model_calls.record_model_call(
        reservation_id=reservation_id,
        order_id="o-paid",
        step="draft",
        run_id="run-1",
        attempt=1,
        provider="openai",
        model="m",
        input_tokens=10,
        output_tokens=10,
        cost_usd=Decimal(cost),
        latency_s=0.1,
        started_at=moment,
        ended_at=moment,
        cache_hit=False,
    )


def test_calls_reserving_at_once_never_take_the_month_past_its_cap(
    racing_store: BusinessStore,
) -> None:
    paid_call(racing_store, "1.50")  # spent already this month
    outcomes = at_once(
        lambda index: racing_store.model_calls.reserve_budget(
            "2026-11",
            Decimal("1.00"),
            Decimal("5.00"),
            order_id=f"o-{index}",
            step="draft",
            ttl_seconds=300,
        )
    )
    assert refused(outcomes) == []
    granted = [reservation for reservation, _committed in succeeded(outcomes) if reservation]
    assert len(granted) == 3  # 1.50 + 3 × 1.00 fits 5.00; a fourth would not
    assert racing_store.model_calls.budget_in_flight("2026-11") == Decimal("3.00")

    paid_call(racing_store, "0.40", reservation_id=granted[0])  # the real cost replaces it
    racing_store.model_calls.release_budget(granted[1])  # a call that failed: nothing paid
    assert racing_store.model_calls.month_spend("2026-11") == Decimal("1.90")
    assert racing_store.model_calls.budget_in_flight("2026-11") == Decimal("1.00")
    # A crashed caller's reservation stops counting once it expires.
    stale, _ = racing_store.model_calls.reserve_budget(
        "2026-11", Decimal("2.00"), Decimal("5.00"), order_id="o-x", step="draft", ttl_seconds=0
    )
    assert stale is not None and racing_store.model_calls.budget_in_flight("2026-11") == Decimal(
        "1.00"
    )


def test_workers_after_a_cool_down_take_one_probe_between_them(
    racing_store: BusinessStore,
) -> None:
    from agentforge_dagster.domain.limits import BreakerPolicy
    from agentforge_dagster.persistence.breakers import BreakerState

    policy = BreakerPolicy(threshold=2, window_s=60, cooldown_s=0.0)
    outcomes = at_once(
        lambda index: racing_store.breakers.breaker_failed("p:m", policy, error="503")
    )
    assert refused(outcomes) == []
    assert sum(1 for r in racing_store.audit.audit_rows() if r["event"] == "breaker_opened") == 1
    assert racing_store.breakers.breakers()[0].state is BreakerState.OPEN
    allowed = at_once(lambda index: racing_store.breakers.breaker_allows("p:m", policy))
    assert sorted(allowed) == [False] * (WRITERS - 1) + [True]  # one probe
    assert racing_store.breakers.breakers()[0].state is BreakerState.HALF_OPEN
    assert racing_store.audit.verify_audit().ok


def test_workers_asking_at_once_share_one_rate_limit(racing_store: BusinessStore) -> None:
    from agentforge_dagster.domain.limits import RateLimits

    limits = RateLimits(requests_per_minute=5, concurrency=3)
    grants = at_once(lambda index: racing_store.rate_limits.acquire_call("p:m", limits, 100))
    assert refused(grants) == []
    granted = [g for g in succeeded(grants) if g.granted]
    assert len(granted) == 3  # three slots, though five requests were left
    assert racing_store.rate_limits.calls_in_flight("p:m") == 3
    for grant in granted:
        racing_store.rate_limits.end_call("p:m", limits, grant.call_id)
    more = at_once(lambda index: racing_store.rate_limits.acquire_call("p:m", limits, 100))
    assert sum(1 for g in succeeded(more) if g.granted) == 2  # the two requests left this minute
