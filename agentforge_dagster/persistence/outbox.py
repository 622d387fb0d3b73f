"""The transactional outbox of order events, and the health of the broker channels.

:func:`record_event` is called by the order state machine (:func:`~.orders.transition_in` and
:meth:`~.orders.OrderStore.submit`) inside the transaction that changes the order: the change and
its event commit together or not at all. The relay (``orchestration/brokers/relay.py``, run by
the ``order_events_outbox`` sensor) reads what a broker has not confirmed yet
(:meth:`OutboxStore.pending_events`) and marks each event sent to that broker only after it
confirmed (:meth:`OutboxStore.mark_events_sent`): every event reaches every configured broker at
least once, in order per broker. A broker's destination here is its name in the registry.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from agentforge_dagster import tracing
from agentforge_dagster.domain.events import PUBLISHED_STATES, OrderEvent
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence import traces
from agentforge_dagster.persistence.schema import (
    broker_health,
    deliveries,
    ledger,
    order_events,
    orders,
)
from agentforge_dagster.persistence.sql import StoreConcern, as_utc, dialect_insert

_SENT_COLUMN = {"rabbitmq": "rabbitmq_sent_at", "redis": "redis_sent_at"}
_EVENTS = select(  # the columns of a PendingEvent
    order_events.c.seq,
    order_events.c.event_id,
    order_events.c.order_id,
    order_events.c.state,
    order_events.c.payload,
)


def record_event(
    conn: Connection,
    order_id: str,
    state: OrderStatus,
    *,
    previous: OrderStatus | None,
    error_class: str | None = None,
) -> str | None:
    """Write the event of a state change into the outbox, in the caller's transaction.

    Returns its id, or None for a state no client hears about (:data:`PUBLISHED_STATES`).
    """
    if state not in PUBLISHED_STATES:
        return None
    amount = conn.execute(
        select(ledger.c.amount_cents).where(ledger.c.order_id == order_id)
    ).scalar_one_or_none()
    if amount is None:
        amount = conn.execute(
            select(orders.c.price_cents).where(orders.c.order_id == order_id)
        ).scalar_one()
    delivery = None
    if state is OrderStatus.COMPLETED:
        row = (
            conn.execute(
                select(deliveries.c.delivery_id, deliveries.c.content_sha256).where(
                    deliveries.c.order_id == order_id
                )
            )
            .mappings()
            .one_or_none()
        )
        delivery = dict(row) if row is not None else None
    now = utcnow()
    event = OrderEvent(
        event_id=uuid.uuid4().hex,
        type=f"order.{state.value}",
        order_id=order_id,
        state=state.value,  # type: ignore[arg-type]  # a PUBLISHED_STATES member: the Literal's
        previous_state=previous.value if previous is not None else None,
        occurred_at=now,
        amount_cents=int(amount),
        delivery=delivery,  # type: ignore[arg-type]  # validated into a DeliveryReference
        error_class=error_class,
        traceparent=traces.order_trace(conn, order_id).traceparent() if tracing.enabled() else None,
    )
    conn.execute(
        order_events.insert().values(
            event_id=event.event_id,
            order_id=order_id,
            state=state.value,
            payload=event.model_dump_json(),
            created_at=now,
        )
    )
    return event.event_id


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    event_id: str
    order_id: str
    state: str
    payload: str  # the event's JSON, as published

    @property
    def traceparent(self) -> str | None:
        """The order's trace context the event carries (None: the deployment does not trace)."""
        value = self.event.get("traceparent")
        return value if isinstance(value, str) else None

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


@dataclass(frozen=True)
class ChannelHealth:
    channel: str
    last_ok_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class OutboxStore(StoreConcern):
    """Order events waiting for a broker, and what each broker channel last said."""

    def pending_events(self, destination: str, limit: int) -> list[PendingEvent]:
        """The oldest events ``destination`` has not confirmed, in the order they happened."""
        sent = order_events.c[_SENT_COLUMN[destination]]
        with self.engine.connect() as conn:
            rows = conn.execute(
                _EVENTS.where(sent.is_(None)).order_by(order_events.c.seq).limit(limit)
            ).all()
        return [PendingEvent(*row) for row in rows]

    def mark_events_sent(self, destination: str, event_ids: list[str]) -> int:
        """Mark events confirmed by ``destination`` (a repeat changes nothing); returns how many."""
        if not event_ids:
            return 0
        column = _SENT_COLUMN[destination]
        with self.begin() as conn:
            return int(
                conn.execute(
                    order_events.update()
                    .where(
                        order_events.c.event_id.in_(event_ids),
                        order_events.c[column].is_(None),
                    )
                    .values({column: utcnow()})
                ).rowcount
            )

    def outbox_backlog(self, destination: str) -> tuple[int, datetime | None]:
        """How many events ``destination`` has not confirmed, and when the oldest happened."""
        sent = order_events.c[_SENT_COLUMN[destination]]
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                select(func.count(), func.min(order_events.c.created_at)).where(sent.is_(None))
            ).one()
        return int(count), as_utc(oldest)

    def order_events_of(self, order_id: str) -> list[PendingEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _EVENTS.where(order_events.c.order_id == order_id).order_by(order_events.c.seq)
            ).all()
        return [PendingEvent(*row) for row in rows]

    def broker_seen(self, channel: str, error: str | None = None) -> None:
        """Record a channel's success (``error`` None) or its failure, with the time."""
        now = utcnow()
        values: dict[str, Any] = (
            {"last_ok_at": now}
            if error is None
            else {"last_error": error[:2000], "last_error_at": now}
        )
        with self.begin() as conn:
            conn.execute(
                dialect_insert(conn, broker_health)
                .values(channel=channel, **values)
                .on_conflict_do_update(index_elements=[broker_health.c.channel], set_=values)
            )

    def broker_health(self) -> dict[str, ChannelHealth]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(broker_health).order_by(broker_health.c.channel)).all()
        return {
            row.channel: ChannelHealth(
                row.channel, as_utc(row.last_ok_at), row.last_error, as_utc(row.last_error_at)
            )
            for row in rows
        }
