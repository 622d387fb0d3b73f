"""The business store: orders, rejections, deliveries, the ledger and the audit trail.

SQLAlchemy Core over any URL (SQLite by default, PostgreSQL in production). Every status change goes
through :meth:`BusinessStore.transition`, which checks the state machine, compares-and-sets the row
and writes the audit event in the same transaction. Side effects (delivery, ledger entry) are made
idempotent by unique keys in the database, not by a check-then-insert.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, func, make_url, select
from sqlalchemy.exc import IntegrityError

from agentforge_dagster.domain.errors import IllegalTransition, UnknownOrder
from agentforge_dagster.domain.models import Delivery, Invoice, Order, utcnow
from agentforge_dagster.domain.state import OrderStatus, check_transition
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.schema import (
    audit_log,
    budgets,
    dead_letters,
    deliveries,
    ledger,
    model_calls,
    model_responses,
    orders,
    rejected_orders,
)

MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class OrderRecord:
    order: Order
    status: OrderStatus
    failed_step: str | None
    last_error: str | None
    failed_error_class: str | None = None


def make_engine(url: str) -> Engine:
    """An engine with the settings each dialect needs for several writer processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class BusinessStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> BusinessStore:
        return cls(make_engine(url))

    def upgrade(self) -> None:
        """Bring the business tables to the newest Alembic revision (the only way tables are made)."""
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            alembic_command.upgrade(config, "head")

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- intake ---------------------------------------------------------------------------------
    def submit(self, order: Order, *, source: str = "api") -> Order:
        """Queue a validated order; the same order id twice is refused, not duplicated."""
        now = utcnow()
        with self.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        orders.insert().values(
                            order_id=order.order_id,
                            customer=order.customer,
                            service=order.service.value,
                            brief=order.brief,
                            price_cents=order.price_cents,
                            status=OrderStatus.QUEUED.value,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError as exc:
                raise IllegalTransition(f"order {order.order_id!r} was already submitted") from exc
            audit.append(
                conn,
                "order_submitted",
                order_id=order.order_id,
                detail={
                    "to": OrderStatus.QUEUED.value,
                    "source": source,
                    "service": order.service.value,
                    "price_cents": order.price_cents,
                },
            )
        return order

    def reject(self, payload: str, errors: list[str], *, source: str) -> int:
        """Keep a refused order whole, with the reasons, and audit the refusal."""
        with self.begin() as conn:
            inserted = conn.execute(
                rejected_orders.insert().values(
                    received_at=utcnow(),
                    source=source[:500],
                    payload=payload,
                    errors=json.dumps(errors),
                )
            ).inserted_primary_key
            assert inserted is not None
            rejection_id = inserted[0]
            audit.append(
                conn,
                "order_rejected",
                detail={
                    "rejection_id": rejection_id,
                    "source": source[:500],
                    "errors": errors,
                    "payload_chars": len(payload),
                },
            )
        return int(rejection_id)

    # -- reading --------------------------------------------------------------------------------
    def get(self, order_id: str) -> OrderRecord:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()
            )
        if row is None:
            raise UnknownOrder(f"no order {order_id!r} in the business store")
        order = Order(
            order_id=row["order_id"],
            customer=row["customer"],
            service=row["service"],
            brief=row["brief"],
            price=Decimal(row["price_cents"]) / 100,
        )
        return OrderRecord(
            order,
            OrderStatus(row["status"]),
            row["failed_step"],
            row["last_error"],
            row["failed_error_class"],
        )

    def order_ids(self, status: OrderStatus | None = None) -> list[str]:
        query = select(orders.c.order_id).order_by(orders.c.created_at, orders.c.order_id)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def counts_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status))
            return {status: count for status, count in rows}

    def statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())

    def ledger_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(select(ledger).order_by(ledger.c.entry_id)).mappings()
            ]

    def audit_rows(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.seq)
        if order_id is not None:
            query = query.where(audit_log.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [
                {**row, "detail": json.loads(row["detail"])}
                for row in conn.execute(query).mappings()
            ]

    def verify_audit(self) -> audit.ChainReport:
        with self.engine.connect() as conn:
            return audit.verify_chain(conn)

    # -- state machine --------------------------------------------------------------------------
    def transition(
        self,
        order_id: str,
        target: OrderStatus,
        *,
        run_id: str | None = None,
        step: str | None = None,
        error: str | None = None,
        **detail: Any,
    ) -> OrderStatus:
        """Move an order to ``target`` if the state machine allows it; returns the old status."""
        with self.begin() as conn:
            return self._transition(
                conn, order_id, target, run_id=run_id, step=step, error=error, detail=detail
            )

    @staticmethod
    def _transition(
        conn: Connection,
        order_id: str,
        target: OrderStatus,
        *,
        run_id: str | None,
        step: str | None,
        error: str | None,
        detail: dict[str, Any],
    ) -> OrderStatus:
        current = conn.execute(
            select(orders.c.status).where(orders.c.order_id == order_id)
        ).scalar_one_or_none()
        if current is None:
            raise UnknownOrder(f"no order {order_id!r} in the business store")
        check_transition(current, target)
        values: dict[str, Any] = {"status": target.value, "updated_at": utcnow()}
        if target is OrderStatus.FAILED:
            values.update(
                failed_step=step, last_error=error, failed_error_class=detail.get("error_class")
            )
        updated = conn.execute(
            orders.update()
            .where(orders.c.order_id == order_id, orders.c.status == current)
            .values(**values)
        ).rowcount
        if updated != 1:
            raise IllegalTransition(
                f"order {order_id!r} changed status concurrently; {current!r} → {target.value!r}"
                " was not applied"
            )
        audit.append(
            conn,
            "transition",
            order_id=order_id,
            step=step,
            run_id=run_id,
            detail={
                "from": current,
                "to": target.value,
                **({"error": error} if error else {}),
                **detail,
            },
        )
        return OrderStatus(current)

    # -- the queue ------------------------------------------------------------------------------
    def claim_for_launch(self, limit: int) -> list[str]:
        """The oldest queued orders, for the queue sensor to launch (at most ``limit``).

        Rows are locked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so two claimers never take the
        same order at once; an order is marked (and audited) the first time it is claimed. Orders
        claimed before but still queued are returned again: their run key makes the relaunch
        request a no-op if the run exists, and brings the run back if a crash lost the request.
        """
        with self.begin() as conn:
            rows = conn.execute(
                select(orders.c.order_id, orders.c.launch_requested_at)
                .where(orders.c.status == OrderStatus.QUEUED.value)
                .order_by(orders.c.created_at, orders.c.order_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            now = utcnow()
            for order_id, requested in rows:
                if requested is None:
                    conn.execute(
                        orders.update()
                        .where(orders.c.order_id == order_id)
                        .values(launch_requested_at=now)
                    )
                    audit.append(conn, "launch_requested", order_id=order_id)
        return [order_id for order_id, _ in rows]

    # -- dead letters ---------------------------------------------------------------------------
    def dead_letter(
        self,
        order_id: str,
        *,
        run_id: str,
        failed_step: str,
        error_class: str,
        error_type: str,
        message: str,
        attempts: int,
    ) -> None:
        """Move a failed order to the dead-letter queue with what is needed to replay it."""
        now = utcnow()
        with self.begin() as conn:
            self._transition(
                conn,
                order_id,
                OrderStatus.DEAD_LETTERED,
                run_id=run_id,
                step=failed_step,
                error=None,
                detail={
                    "error_class": error_class,
                    "error_type": error_type,
                    "attempts": attempts,
                    "message": message[:2000],
                },
            )
            values = {
                "run_id": run_id,
                "failed_step": failed_step,
                "error_class": error_class,
                "error_type": error_type,
                "message": message[:2000],
                "attempts": attempts,
                "dead_lettered_at": now,
                "replay_requested_at": None,
                "replay_run_key": None,
            }
            self._upsert_letter(conn, order_id, values)

    @staticmethod
    def _upsert_letter(conn: Connection, order_id: str, values: dict[str, Any]) -> None:
        """One letter per order: a new failure overwrites the last one, keeping the replay count."""
        exists = conn.execute(
            select(dead_letters.c.order_id).where(dead_letters.c.order_id == order_id)
        ).first()
        if exists:
            conn.execute(
                dead_letters.update().where(dead_letters.c.order_id == order_id).values(**values)
            )
        else:
            conn.execute(dead_letters.insert().values(order_id=order_id, replays=0, **values))

    def dead_letters(self, error_class: str | None = None) -> list[dict[str, Any]]:
        """Orders waiting in the dead-letter queue (status dead_lettered), oldest first."""
        query = (
            select(dead_letters)
            .join(orders, orders.c.order_id == dead_letters.c.order_id)
            .where(orders.c.status == OrderStatus.DEAD_LETTERED.value)
            .order_by(dead_letters.c.dead_lettered_at)
        )
        if error_class is not None:
            query = query.where(dead_letters.c.error_class == error_class)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def request_replay(self, order_id: str, *, actor: str) -> str:
        """Mark a dead letter for replay (dead_lettered → replayed); returns its replay run key."""
        with self.begin() as conn:
            letter = (
                conn.execute(select(dead_letters).where(dead_letters.c.order_id == order_id))
                .mappings()
                .first()
            )
            if letter is None:
                raise UnknownOrder(f"order {order_id!r} is not in the dead-letter queue")
            replays = letter["replays"] + 1
            run_key = f"replay-{order_id}-{replays}"
            self._transition(
                conn,
                order_id,
                OrderStatus.REPLAYED,
                run_id=None,
                step=letter["failed_step"],
                error=None,
                detail={"actor": actor, "replay": replays, "run_key": run_key},
            )
            conn.execute(
                dead_letters.update()
                .where(dead_letters.c.order_id == order_id)
                .values(replays=replays, replay_requested_at=utcnow(), replay_run_key=run_key)
            )
        return run_key

    def replays_to_launch(self) -> list[dict[str, Any]]:
        """Replayed orders whose replay run has not started yet."""
        query = (
            select(
                dead_letters.c.order_id,
                dead_letters.c.failed_step,
                dead_letters.c.run_id,
                dead_letters.c.replay_run_key,
            )
            .join(orders, orders.c.order_id == dead_letters.c.order_id)
            .where(orders.c.status == OrderStatus.REPLAYED.value)
            .order_by(dead_letters.c.replay_requested_at)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def park_for_budget(self, order_id: str, *, run_id: str, step: str, message: str) -> None:
        """Pause an order whose next model call would break the budget (processing → waiting)."""
        now = utcnow()
        with self.begin() as conn:
            self._transition(
                conn,
                order_id,
                OrderStatus.WAITING_BUDGET,
                run_id=run_id,
                step=step,
                error=None,
                detail={"reason": message[:2000]},
            )
            values = {
                "run_id": run_id,
                "failed_step": step,
                "error_class": "budget",
                "error_type": "BudgetExhausted",
                "message": message[:2000],
                "attempts": 1,
                "dead_lettered_at": now,
                "replay_requested_at": None,
                "replay_run_key": None,
            }
            self._upsert_letter(conn, order_id, values)

    # -- budget ---------------------------------------------------------------------------------
    def set_budget(self, cap_usd: Decimal, month: str = "default") -> None:
        with self.begin() as conn:
            conn.execute(budgets.delete().where(budgets.c.month == month))
            conn.execute(budgets.insert().values(month=month, cap_usd=cap_usd, set_at=utcnow()))
            audit.append(conn, "budget_set", detail={"month": month, "cap_usd": str(cap_usd)})

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
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(model_calls.c.cost_usd), 0)).where(
                    model_calls.c.cache_hit.is_(False),
                    model_calls.c.started_at >= start,
                    model_calls.c.started_at < end,
                )
            ).scalar_one()
        return Decimal(str(total))

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
        self._insert_once(model_responses, {**values, "created_at": utcnow()}, "cache_key")

    # -- model calls ----------------------------------------------------------------------------
    def record_model_call(self, **values: Any) -> None:
        with self.begin() as conn:
            conn.execute(model_calls.insert().values(**values))

    def model_call_rows(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(model_calls).order_by(model_calls.c.call_id)
        if order_id is not None:
            query = query.where(model_calls.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def claim(self, order_id: str, *, run_id: str | None, step: str) -> OrderStatus:
        """Put a queued or replayed order into processing as a run's first step starts on it.

        Returns the status after the claim; an order in any other state is left as it is.
        """
        status = self.get(order_id).status
        if status in (OrderStatus.QUEUED, OrderStatus.REPLAYED):
            self.transition(order_id, OrderStatus.PROCESSING, run_id=run_id, step=step)
            return OrderStatus.PROCESSING
        return status

    def record_event(
        self,
        event_name: str,
        *,
        order_id: str | None = None,
        step: str | None = None,
        attempt: int | None = None,
        run_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self.begin() as conn:
            audit.append(
                conn,
                event_name,
                order_id=order_id,
                step=step,
                attempt=attempt,
                run_id=run_id,
                detail=detail,
            )

    # -- idempotent side effects ----------------------------------------------------------------
    def record_delivery(self, delivery: Delivery) -> Delivery:
        """Record a delivery once per order; a repeat returns the delivery already recorded."""
        return Delivery(**self._insert_once(deliveries, delivery.model_dump(), "order_id"))

    def record_ledger_entry(self, order: Order, invoice: Invoice) -> Invoice:
        """Book an invoice in the ledger once per order; a repeat returns the booked invoice."""
        row = self._insert_once(
            ledger,
            {
                "order_id": order.order_id,
                "invoice_id": invoice.invoice_id,
                "customer": order.customer,
                "amount_cents": invoice.amount_cents,
                "created_at": invoice.issued_at,
            },
            "order_id",
        )
        return Invoice(
            order_id=row["order_id"],
            invoice_id=row["invoice_id"],
            amount_cents=row["amount_cents"],
            issued_at=row["created_at"],
        )

    def _insert_once(self, table: Any, values: dict[str, Any], key: str) -> dict[str, Any]:
        with self.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(table.insert().values(**values))
            except IntegrityError:
                pass  # the unique key says it exists already: read the first writer's row
            row = conn.execute(select(table).where(table.c[key] == values[key])).mappings().one()
            return dict(row)
