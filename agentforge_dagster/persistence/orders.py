"""Orders and their state machine: intake, refusals, reads, status moves and the claims on them.

Every status change goes through :func:`transition_in`, inside the caller's transaction: it locks
the order's row (``FOR UPDATE`` on PostgreSQL), checks the state machine against the status it
read, compares-and-sets the row and writes the audit event. Two runs moving one order at once
queue behind each other, and the second is judged against the status the first one left; a claim
that finds the order already taken returns that status instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from agentforge_dagster.domain.errors import (
    AlreadySubmitted,
    IllegalTransition,
    OrderIdTaken,
    UnknownOrder,
)
from agentforge_dagster.domain.models import Order, utcnow
from agentforge_dagster.domain.state import FINAL_STATUSES, OrderStatus, check_transition
from agentforge_dagster.persistence import audit, outbox, traces
from agentforge_dagster.persistence.leases import (
    DEFAULT_LEASE_SECONDS,
    check_claim,
    clear_lease_values,
)
from agentforge_dagster.persistence.schema import orders, rejected_orders
from agentforge_dagster.persistence.sql import StoreConcern, as_utc, dialect_insert

CLAIMABLE = frozenset({OrderStatus.QUEUED, OrderStatus.REPLAYED})
# SQLite ignores FOR UPDATE: a writer that lost the compare-and-set re-reads and judges again.
_MOVE_ATTEMPTS = 5
# A refused payload is kept whole up to this size; beyond it a prefix and the SHA-256 of the whole.
MAX_REJECTED_PAYLOAD_CHARS = 64 * 1024
MAX_REJECTED_ERRORS = 50
# What the leak rules check a draft against: tokens shaped like an order id, and customers.
_ID_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9][A-Za-z0-9_-]{2,63}(?![\w-])")
MAX_ID_TOKENS = 5_000
MAX_CUSTOMERS_CHECKED = 10_000


def bounded_payload(payload: str | bytes) -> tuple[str, dict[str, Any]]:
    """The text to keep of a refused payload, and what the audit row says about the whole."""
    data = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
    facts: dict[str, Any] = {"payload_bytes": len(data)}
    if len(data) <= MAX_REJECTED_PAYLOAD_CHARS:
        text = (
            payload.decode("utf-8", "backslashreplace") if isinstance(payload, bytes) else payload
        )
        return text, facts
    digest = hashlib.sha256(data).hexdigest()
    prefix = data[:MAX_REJECTED_PAYLOAD_CHARS].decode("utf-8", "backslashreplace")
    facts.update(payload_sha256=digest, payload_truncated=True)
    return f"{prefix}\n[truncated: {len(data)} bytes in all, sha256 {digest}]", facts


@dataclass(frozen=True)
class NamesInText:
    """Names a text could leak: the business's other customers, other orders' ids it contains."""

    customers: list[str]
    order_ids: list[str]


@dataclass(frozen=True)
class OrderRecord:
    order: Order
    status: OrderStatus
    failed_step: str | None
    last_error: str | None
    failed_error_class: str | None = None


def lock_order(conn: Connection, order_id: str) -> OrderStatus | None:
    """The order's status, its row locked until the transaction ends; None: no such order.

    Whoever writes an order's dead letter locks the order first, so the two rows are always
    locked in the same order and two writers cannot deadlock on them.
    """
    status = conn.execute(
        select(orders.c.status).where(orders.c.order_id == order_id).with_for_update()
    ).scalar_one_or_none()
    return OrderStatus(status) if status is not None else None


def transition_in(
    conn: Connection,
    order_id: str,
    target: OrderStatus,
    *,
    run_id: str | None = None,
    step: str | None = None,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
    only_from: frozenset[OrderStatus] | None = None,
) -> OrderStatus:
    """Move an order to ``target`` in the caller's transaction; returns the status it had.

    With ``only_from``, an order in another status is left as it is (and that status returned)
    instead of being refused by the state machine.
    """
    detail = detail or {}
    values: dict[str, Any] = {"status": target.value}
    if target is not OrderStatus.PROCESSING:
        values.update(clear_lease_values())  # no runner holds an order out of processing
    if target is OrderStatus.FAILED:
        values.update(
            failed_step=step, last_error=error, failed_error_class=detail.get("error_class")
        )
    for _ in range(_MOVE_ATTEMPTS):
        current = lock_order(conn, order_id)
        if current is None:
            raise UnknownOrder(f"no order {order_id!r} in the business store")
        if only_from is not None and current not in only_from:
            return current
        check_transition(current, target)
        moved = dict(values)
        if current is OrderStatus.DEAD_LETTERED and target is OrderStatus.REPLAYED:
            moved.update(episode=orders.c.episode + 1, episode_started_at=utcnow())
        before = traces.before_move(conn, order_id)
        updated = conn.execute(
            orders.update()
            .where(orders.c.order_id == order_id, orders.c.status == current.value)
            .values(**moved, updated_at=utcnow())
        ).rowcount
        if updated == 1:
            audit.append(
                conn,
                "transition",
                order_id=order_id,
                step=step,
                run_id=run_id,
                detail={
                    "from": current.value,
                    "to": target.value,
                    **({"error": error} if error else {}),
                    **detail,
                },
            )
            outbox.record_event(
                conn, order_id, target, previous=current, error_class=detail.get("error_class")
            )
            if before is not None:
                traces.transition(
                    conn,
                    order_id,
                    before,
                    previous=current,
                    target=target,
                    run_id=run_id,
                    step=step,
                    detail=detail,
                )
            return current
    raise IllegalTransition(
        f"order {order_id!r} kept changing status concurrently; → {target.value!r} was not applied"
    )


class OrderStore(StoreConcern):
    """Orders: submitted once, read, moved through the state machine, claimed by runs."""

    # -- intake ---------------------------------------------------------------------------------
    def submit(self, order: Order, *, source: str = "api", traceparent: str | None = None) -> Order:
        """Queue a validated order; the same order id twice is never queued twice.

        ``traceparent``: the W3C trace context the order came with (a broker message's), linked
        from the order's intake span.

        Raises :class:`AlreadySubmitted` when this very order is there already (a retry of the
        same submission: nothing to do), :class:`OrderIdTaken` when its id holds another order.
        """
        now = utcnow()
        with self.begin() as conn:
            inserted = conn.execute(
                dialect_insert(conn, orders)
                .values(
                    order_id=order.order_id,
                    customer=order.customer,
                    service=order.service.value,
                    brief=order.brief,
                    price_cents=order.price_cents,
                    require_approval=order.require_approval,
                    status=OrderStatus.QUEUED.value,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[orders.c.order_id])
            ).rowcount
            if inserted != 1:
                existing = (
                    conn.execute(select(orders).where(orders.c.order_id == order.order_id))
                    .mappings()
                    .one()
                )
                same = (
                    existing["customer"],
                    existing["service"],
                    existing["brief"],
                    existing["price_cents"],
                    existing["require_approval"],
                ) == (
                    order.customer,
                    order.service.value,
                    order.brief,
                    order.price_cents,
                    order.require_approval,
                )
                if same:
                    raise AlreadySubmitted(order.order_id, existing["status"])
                raise OrderIdTaken(order.order_id)
            audit.append(
                conn,
                "order_submitted",
                order_id=order.order_id,
                detail={
                    "to": OrderStatus.QUEUED.value,
                    "source": source,
                    "service": order.service.value,
                    "price_cents": order.price_cents,
                    **({"require_approval": True} if order.require_approval else {}),
                },
            )
            outbox.record_event(conn, order.order_id, OrderStatus.QUEUED, previous=None)
            traces.intake(
                conn, order.order_id, source=source, received=now, traceparent=traceparent
            )
        return order

    def reject(
        self,
        payload: str | bytes,
        errors: list[str],
        *,
        source: str,
        message_key: str | None = None,
    ) -> int:
        """Keep a refused order with the reasons, and audit the refusal.

        The payload is kept whole up to :data:`MAX_REJECTED_PAYLOAD_CHARS` bytes; a larger one
        keeps its prefix and the SHA-256 of the whole (in the row and the audit event).
        ``message_key`` names the broker message it came from: a message refused before is not
        recorded again (its redelivery after a crash), and the first record's id is returned.
        """
        text, facts = bounded_payload(payload)
        if len(errors) > MAX_REJECTED_ERRORS:
            more = len(errors) - MAX_REJECTED_ERRORS
            errors = [*errors[:MAX_REJECTED_ERRORS], f"... and {more} more"]
        values = {
            "received_at": utcnow(),
            "source": source[:500],
            "payload": text,
            "errors": json.dumps(errors),
            "message_key": message_key[:300] if message_key is not None else None,
        }
        with self.begin() as conn:
            if values["message_key"] is not None:
                before = conn.execute(
                    select(rejected_orders.c.rejection_id).where(
                        rejected_orders.c.message_key == values["message_key"]
                    )
                ).scalar_one_or_none()
                if before is not None:
                    return int(before)
            inserted = conn.execute(
                dialect_insert(conn, rejected_orders)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[rejected_orders.c.message_key])
                .returning(rejected_orders.c.rejection_id)
            ).scalar_one_or_none()
            if inserted is None:  # a racing taker of the same message recorded it first
                return int(
                    conn.execute(
                        select(rejected_orders.c.rejection_id).where(
                            rejected_orders.c.message_key == values["message_key"]
                        )
                    ).scalar_one()
                )
            rejection_id = inserted
            audit.append(
                conn,
                "order_rejected",
                detail={
                    "rejection_id": rejection_id,
                    "source": source[:500],
                    "errors": errors,
                    **({"message_key": values["message_key"]} if message_key else {}),
                    **facts,
                },
            )
        return int(rejection_id)

    def finished_before(self, cutoff: datetime) -> list[str]:
        """Orders that reached a final state (completed, rejected) before ``cutoff``."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(orders.c.order_id).where(
                        orders.c.status.in_([s.value for s in FINAL_STATUSES]),
                        orders.c.updated_at < cutoff,
                    )
                ).scalars()
            )

    def rejection_of(self, source: str, payload: str | bytes) -> int | None:
        """The refusal recorded for this payload from this source without a message key, if any
        (a broker message with no id of its own, delivered again after a crash)."""
        text, _facts = bounded_payload(payload)
        with self.engine.connect() as conn:
            found = conn.execute(
                select(rejected_orders.c.rejection_id)
                .where(
                    rejected_orders.c.source == source[:500],
                    rejected_orders.c.payload == text,
                    rejected_orders.c.message_key.is_(None),
                )
                .limit(1)
            ).scalar_one_or_none()
        return int(found) if found is not None else None

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
            require_approval=row["require_approval"],
        )
        return OrderRecord(
            order,
            OrderStatus(row["status"]),
            row["failed_step"],
            row["last_error"],
            row["failed_error_class"],
        )

    def status(self, order_id: str) -> OrderStatus:
        """The order's status alone: readable for any row, even one no longer a valid Order."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(orders.c.status).where(orders.c.order_id == order_id)
            ).scalar_one_or_none()
        if value is None:
            raise UnknownOrder(f"no order {order_id!r} in the business store")
        return OrderStatus(value)

    def order_ids(self, status: OrderStatus | None = None) -> list[str]:
        query = select(orders.c.order_id).order_by(orders.c.created_at, orders.c.order_id)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def names_in(self, text: str, *, besides: str) -> NamesInText:
        """The other orders' ids that ``text`` contains, and the business's other customers.

        The review's leak rules look for these in a draft (:mod:`agentforge_dagster.domain.policy`).
        """
        tokens = sorted(set(_ID_TOKEN.findall(text)))[:MAX_ID_TOKENS]
        with self.engine.connect() as conn:
            customer = conn.execute(
                select(orders.c.customer).where(orders.c.order_id == besides)
            ).scalar_one_or_none()
            ids = (
                list(
                    conn.execute(
                        select(orders.c.order_id).where(
                            orders.c.order_id.in_(tokens), orders.c.order_id != besides
                        )
                    ).scalars()
                )
                if tokens
                else []
            )
            customers = list(
                conn.execute(
                    select(orders.c.customer)
                    .where(orders.c.customer != (customer or ""))
                    .distinct()
                    .limit(MAX_CUSTOMERS_CHECKED)
                ).scalars()
            )
        return NamesInText(customers=customers, order_ids=ids)

    def refused_count(self) -> int:
        """Submissions refused at intake (never accepted as orders)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(rejected_orders)).scalar_one())

    def counts_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status))
            return {status: count for status, count in rows}

    def statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(orders.c.order_id, orders.c.status)).all())

    def services(self) -> dict[str, str]:
        """Each order's service, by order id."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(orders.c.order_id, orders.c.service)).all())

    def lifetimes(self, status: OrderStatus | None = None) -> list[dict[str, Any]]:
        """Each order's id and status, when it was submitted and when it last changed (in
        ``status`` only, when one is named): what latency figures are made of."""
        query = select(orders.c.order_id, orders.c.status, orders.c.created_at, orders.c.updated_at)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def first_submitted_at(self) -> datetime | None:
        """When the first order was submitted; None: no order yet."""
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(orders.c.created_at))).scalar_one_or_none()
        return as_utc(first)

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
            return transition_in(
                conn, order_id, target, run_id=run_id, step=step, error=error, detail=detail
            )

    def claim(
        self,
        order_id: str,
        *,
        run_id: str | None,
        step: str,
        predecessors: frozenset[str] = frozenset(),
        lease_seconds: float | None = DEFAULT_LEASE_SECONDS,
    ) -> OrderStatus:
        """Put a queued or replayed order into processing as a step of ``run_id`` starts on it,
        and take or renew the run's lease on it (:mod:`.leases`).

        Raises :class:`~agentforge_dagster.domain.errors.OrderTaken` when the order is not this
        run's to work on: another runner's lease is live, it is finished, or it was taken back
        from this run. ``predecessors`` are the runs this one retries (their leases are its own).
        Without ``lease_seconds`` (settling a run that died before its first step), no lease is
        checked or taken, and an order in any other state is left as it is.
        """
        with self.begin() as conn:
            if lease_seconds is not None and run_id is not None:
                check_claim(
                    conn, order_id, run_id, predecessors=predecessors, seconds=lease_seconds
                )
            before = transition_in(
                conn,
                order_id,
                OrderStatus.PROCESSING,
                run_id=run_id,
                step=step,
                only_from=CLAIMABLE,
            )
        return OrderStatus.PROCESSING if before in CLAIMABLE else before

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
                if requested is not None:
                    continue
                marked = conn.execute(
                    orders.update()
                    .where(orders.c.order_id == order_id, orders.c.launch_requested_at.is_(None))
                    .values(launch_requested_at=now)
                ).rowcount
                if marked == 1:  # SQLite does not lock the rows read: only one claimer marks
                    audit.append(conn, "launch_requested", order_id=order_id)
        return [order_id for order_id, _ in rows]
