"""An order's life as trace spans, written where its status changes.

Every status change goes through :func:`~agentforge_dagster.persistence.orders.transition_in`, in
the mover's transaction; with tracing on it calls :func:`transition` here, which reads what the
span needs (when the order entered the status it leaves, its episode) from the row it holds
locked and emits the span once the transaction commits — a rolled-back move emits nothing, and
each move is one span, whoever made it (a sensor, a run worker in a container, a person's
decision in the CLI). What each span is: ``docs/traces.md``.

- leaving ``queued``/``replayed`` for ``processing``: the time the order waited (``queued``);
- leaving ``processing``: the run that held it (``run``, its span id derived from the run id, so
  the run's step spans, written by its worker, are its children);
- ``failed`` → ``dead_lettered``: the dead letter; a hold's decision: the ``review hold`` from the
  hold to the decision; a budget wait likewise;
- ``dead_lettered`` → ``replayed``: the ``replay``, first span of the order's next episode;
- reaching ``completed``, ``rejected`` or ``dead_lettered``: the episode's root span, from intake
  (or the replay that began the episode) to now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, event, select

from agentforge_dagster import tracing
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import HELD_STATUSES, OrderStatus
from agentforge_dagster.persistence.schema import deployment, orders
from agentforge_dagster.persistence.sql import as_utc

logger = logging.getLogger(__name__)

# The states an episode ends in: the order's fate is settled unless somebody replays it.
EPISODE_ENDS = frozenset({OrderStatus.COMPLETED, OrderStatus.REJECTED, OrderStatus.DEAD_LETTERED})
_PENDING = "agentforge.trace_spans"
_deployments: dict[str, str] = {}
# Detail of a move that a span may carry (never free text a person typed: a note stays out).
_SAFE_DETAIL = ("actor", "decision", "hold_id", "error_class", "error_type", "replay", "model")


def deployment_id(conn: Connection) -> str:
    """The deployment's id (its one ``deployment`` row), read once per database per process."""
    key = conn.engine.url.render_as_string(hide_password=True)
    known = _deployments.get(key)
    if known is None:
        known = conn.execute(select(deployment.c.deployment_id)).scalar_one_or_none()
        if known is None:
            raise RuntimeError(
                "the business database has no deployment row: run `agentforge db upgrade`"
            )
        _deployments[key] = known
    return known


def order_trace(
    conn: Connection, order_id: str, *, episode: int | None = None
) -> tracing.OrderTrace:
    """The order's trace (its current episode unless ``episode`` is given)."""
    if episode is None:
        episode = (
            conn.execute(
                select(orders.c.episode).where(orders.c.order_id == order_id)
            ).scalar_one_or_none()
            or 0
        )
    return tracing.OrderTrace(deployment_id(conn), order_id, episode)


def before_move(conn: Connection, order_id: str) -> dict[str, Any] | None:
    """What a span of the coming move needs of the row as it is (None when tracing is off)."""
    if not tracing.enabled():
        return None
    row = (
        conn.execute(
            select(
                orders.c.updated_at,
                orders.c.created_at,
                orders.c.episode,
                orders.c.episode_started_at,
                orders.c.service,
                orders.c.price_cents,
            ).where(orders.c.order_id == order_id)
        )
        .mappings()
        .one()
    )
    return dict(row)


def after_commit(conn: Connection, emit: Callable[[], None]) -> None:
    """Run ``emit`` once the transaction of ``conn`` commits; forget it if it rolls back."""
    engine = conn.engine
    if not event.contains(engine, "commit", _on_commit):
        event.listen(engine, "commit", _on_commit)
        event.listen(engine, "rollback", _on_rollback)
    conn.info.setdefault(_PENDING, []).append(emit)


def _on_commit(conn: Connection) -> None:
    for emit in conn.info.pop(_PENDING, ()):
        try:
            emit()
        except Exception:  # a span must never fail the move it reports
            logger.warning("an order span could not be emitted", exc_info=True)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def transition(
    conn: Connection,
    order_id: str,
    before: dict[str, Any],
    *,
    previous: OrderStatus,
    target: OrderStatus,
    run_id: str | None,
    step: str | None,
    detail: dict[str, Any],
) -> None:
    """The spans of one move (see the module docstring), emitted after the commit."""
    now = utcnow()
    episode = int(before["episode"] or 0)
    entered = as_utc(before["updated_at"])
    trace = order_trace(conn, order_id, episode=episode)
    common = {
        "agentforge.from": previous.value,
        "agentforge.to": target.value,
        "agentforge.step": step,
    }
    safe = {f"agentforge.{key}": detail[key] for key in _SAFE_DETAIL if key in detail}
    spans: list[dict[str, Any]] = []
    if target is OrderStatus.PROCESSING:
        spans.append({"name": "queued", "start": entered, "attributes": {"dagster.run_id": run_id}})
    if previous is OrderStatus.PROCESSING and run_id:
        spans.append(
            {
                "name": "run",
                "start": entered,
                "span_id": trace.run_span_id(run_id),
                "attributes": {"dagster.run_id": run_id, "agentforge.outcome": target.value},
                "error_type": detail.get("error_class") if target is OrderStatus.FAILED else None,
            }
        )
    if target is OrderStatus.DEAD_LETTERED:
        spans.append(
            {
                "name": "dead letter",
                "start": now,
                "error_type": detail.get("error_class") or "failed",
            }
        )
    if previous in HELD_STATUSES:
        spans.append(
            {
                "name": "review hold",
                "start": entered,
                "attributes": {"agentforge.held_as": previous.value},
            }
        )
    if previous is OrderStatus.WAITING_BUDGET:
        spans.append({"name": "budget wait", "start": entered})
    if previous is OrderStatus.DEAD_LETTERED and target is OrderStatus.REPLAYED:
        trace = order_trace(conn, order_id, episode=episode + 1)  # the replay opens the next one
        spans.append({"name": "replay", "start": now})
    if target in EPISODE_ENDS:
        started = as_utc(before["episode_started_at"]) or as_utc(before["created_at"])
        spans.append(
            {
                "name": "order",
                "start": started,
                "span_id": trace.root_span_id,
                "label": "AGENT",
                "attributes": {
                    "agentforge.status": target.value,
                    "agentforge.episode": episode,
                    "agentforge.service": before["service"],
                    "agentforge.price_usd": before["price_cents"] / 100,
                },
                "error_type": "dead_lettered" if target is OrderStatus.DEAD_LETTERED else None,
            }
        )

    def emit() -> None:
        for made in spans:
            tracing.emit(
                made["name"],
                trace,
                start=made["start"],
                end=now,
                span_id=made.get("span_id"),
                parent=trace.root_span_id,  # not a step span this thread may be in
                label=made.get("label", "CHAIN"),
                attributes={**common, **safe, **made.get("attributes", {})},
                error_type=made.get("error_type"),
            )

    after_commit(conn, emit)


def intake(
    conn: Connection, order_id: str, *, source: str, received: datetime, traceparent: str | None
) -> None:
    """The intake span of a new order (a link to the sender's span if its message carried one)."""
    if not tracing.enabled():
        return
    trace = order_trace(conn, order_id, episode=0)
    links = [traceparent] if traceparent and tracing.parse_traceparent(traceparent) else []
    after_commit(
        conn,
        lambda: tracing.emit(
            "intake",
            trace,
            start=received,
            attributes={"agentforge.source": source},
            links=links,
        ),
    )
