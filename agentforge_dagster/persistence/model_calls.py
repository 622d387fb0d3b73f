"""Model calls, stored answers and the monthly budget: what the models cost and what was paid for.

Every call is recorded (cost, tokens, latency) so the month's spend is one SQL sum. A paid answer is
kept under its request's key, first writer wins, so a retry or a replay never pays twice for it.
A budget cap is an upsert per month: the last operator to set it wins, with no moment without a cap.

The cap holds under concurrency: a paid call first reserves its worst-case cost
(:meth:`ModelCallStore.reserve_budget`: the month's recorded spend, plus the calls in flight, plus
this one must fit, checked and reserved in one transaction that callers take one at a time), and
its real cost replaces the reservation in one transaction (:meth:`ModelCallStore.record_model_call`
with the reservation's id), or the reservation is released when the call fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select, text

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.schema import (
    budget_reservations,
    budgets,
    model_calls,
    model_responses,
    orders,
)
from agentforge_dagster.persistence.sql import StoreConcern, dialect_insert, insert_once


class ModelCallStore(StoreConcern):
    """The model calls made, the answers kept, and the cap on what a month may spend."""

    # -- model responses (never pay twice) ------------------------------------------------------
    def stored_response(self, cache_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(model_responses).where(model_responses.c.cache_key == cache_key)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def store_response(self, **values: Any) -> None:
        """Keep a paid answer; a second writer of the same key keeps the first answer."""
        _refuse_credit(values)
        with self.begin() as conn:
            insert_once(conn, model_responses, {**values, "created_at": utcnow()}, "cache_key")

    # -- model calls ----------------------------------------------------------------------------
    def record_model_call(self, *, reservation_id: int | None = None, **values: Any) -> None:
        """Record a call; its budget reservation, if any, is released in the same transaction.

        A negative cost or token count is refused (ValueError): no call lowers the month's spend.
        """
        _refuse_credit(values)
        with self.begin() as conn:
            conn.execute(model_calls.insert().values(**values))
            if reservation_id is not None:
                _release(conn, reservation_id)

    def model_call_rows(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(model_calls).order_by(model_calls.c.call_id)
        if order_id is not None:
            query = query.where(model_calls.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def calls_with_customer(self) -> list[dict[str, Any]]:
        """Every model call, each with its order's customer (what the cost figures group by)."""
        query = select(model_calls, orders.c.customer).join(
            orders, orders.c.order_id == model_calls.c.order_id
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def draft_models(self) -> list[dict[str, Any]]:
        """Which model drafted which order, with the order's service (one row per pair)."""
        query = (
            select(model_calls.c.order_id, model_calls.c.model, orders.c.service)
            .join(orders, orders.c.order_id == model_calls.c.order_id)
            .where(model_calls.c.step == "draft")
            .distinct()
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def repaid_calls(self) -> dict[str, int]:
        """Per order, paid calls for an answer that had been paid for already (should be none)."""
        paid = (
            select(
                model_calls.c.order_id,
                (func.count() - 1).label("repeats"),
            )
            .where(model_calls.c.cache_hit.is_(False), model_calls.c.cache_key.is_not(None))
            .group_by(model_calls.c.order_id, model_calls.c.cache_key)
            .having(func.count() > 1)
        ).subquery()
        query = select(paid.c.order_id, func.sum(paid.c.repeats)).group_by(paid.c.order_id)
        with self.engine.connect() as conn:
            return {order_id: int(repeats) for order_id, repeats in conn.execute(query)}

    # -- budget ---------------------------------------------------------------------------------
    def set_budget(self, cap_usd: Decimal, month: str = "default") -> None:
        """Set the month's cap (or the default cap); replaces the one set before."""
        cap = {"cap_usd": cap_usd, "set_at": utcnow()}
        with self.begin() as conn:
            conn.execute(
                dialect_insert(conn, budgets)
                .values(month=month, **cap)
                .on_conflict_do_update(index_elements=[budgets.c.month], set_=cap)
            )
            audit.append(conn, "budget_set", detail={"month": month, "cap_usd": str(cap_usd)})

    def reserve_budget(
        self,
        month: str,
        amount_usd: Decimal,
        cap_usd: Decimal,
        *,
        order_id: str,
        step: str,
        ttl_seconds: float,
    ) -> tuple[int | None, Decimal]:
        """Reserve ``amount_usd`` of ``month``'s cap for a call about to be paid.

        Returns the reservation's id, or None when the month's spend plus the reservations in
        flight plus this one would pass the cap; and what was committed before this call (spend
        and reservations). Reservers go one at a time: PostgreSQL takes a transaction-scoped
        advisory lock; SQLite holds its one write lock from the reservation's insert on.
        """
        now = utcnow()
        with self.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _BUDGET_LOCK})
            reservation_id = conn.execute(
                budget_reservations.insert()
                .values(
                    month=month,
                    amount_usd=amount_usd,
                    order_id=order_id,
                    step=step,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                )
                .returning(budget_reservations.c.reservation_id)
            ).scalar_one()
            committed = _month_spend(conn, month) + _reserved(conn, month, now, reservation_id)
            if committed + amount_usd > cap_usd:
                _release(conn, reservation_id)
                return None, committed
        return int(reservation_id), committed

    def release_budget(self, reservation_id: int) -> None:
        """Give back a reservation whose call was not paid (it failed)."""
        with self.begin() as conn:
            _release(conn, reservation_id)

    def budget_in_flight(self, month: str) -> Decimal:
        """What calls in flight hold of ``month``'s cap (expired reservations left out)."""
        with self.engine.connect() as conn:
            return _reserved(conn, month, utcnow(), None)

    def budget_cap(self, month: str) -> Decimal | None:
        """The month's cap, else the default cap set in the store; None: no cap stored."""
        with self.engine.connect() as conn:
            caps = dict(
                conn.execute(
                    select(budgets.c.month, budgets.c.cap_usd).where(
                        budgets.c.month.in_([month, "default"])
                    )
                ).all()
            )
        cap = caps.get(month, caps.get("default"))
        return Decimal(cap) if cap is not None else None

    def month_spend(self, month: str) -> Decimal:
        """What paid model calls cost in ``month`` (YYYY-MM); cache hits cost nothing."""
        with self.engine.connect() as conn:
            return _month_spend(conn, month)


def _refuse_credit(values: dict[str, Any]) -> None:
    """The store's own guard: what a call cost or used is never negative (the gateway estimates
    what a provider's answer does not believably say; this catches any other way in)."""
    for name in ("cost_usd", "input_tokens", "output_tokens"):
        value = values.get(name)
        if value is not None and not Decimal(str(value)) >= 0:
            raise ValueError(f"a model call's {name} is never negative or unknown: {value!r}")


# Any constant: the one advisory lock that serialises budget reservations on PostgreSQL.
_BUDGET_LOCK = 0x61676662  # "agfb"


def _month_spend(conn: Connection, month: str) -> Decimal:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    total = conn.execute(
        select(func.coalesce(func.sum(model_calls.c.cost_usd), 0)).where(
            model_calls.c.cache_hit.is_(False),
            model_calls.c.started_at >= start,
            model_calls.c.started_at < end,
        )
    ).scalar_one()
    return Decimal(str(total))


def _reserved(conn: Connection, month: str, now: datetime, besides: int | None) -> Decimal:
    query = select(func.coalesce(func.sum(budget_reservations.c.amount_usd), 0)).where(
        budget_reservations.c.month == month, budget_reservations.c.expires_at > now
    )
    if besides is not None:
        query = query.where(budget_reservations.c.reservation_id != besides)
    return Decimal(str(conn.execute(query).scalar_one()))


def _release(conn: Connection, reservation_id: int) -> None:
    conn.execute(
        budget_reservations.delete().where(budget_reservations.c.reservation_id == reservation_id)
    )
