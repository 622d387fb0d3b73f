"""Dead letters and replays: one letter per order holding what is needed to run it again.

An order is parked (dead-lettered, or paused for the model budget) and its letter written in one
transaction with the status move. The letter is an upsert on the order id: a new failure replaces
the last one's facts but keeps how many times the order was replayed. Writers lock the order's row
before its letter (see :func:`~agentforge_dagster.persistence.orders.lock_order`), so a replay
request and a new failure of the same order take turns instead of deadlocking.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, or_, select

from agentforge_dagster.domain.errors import UnknownOrder
from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.orders import lock_order, transition_in
from agentforge_dagster.persistence.schema import dead_letters, orders
from agentforge_dagster.persistence.sql import StoreConcern, dialect_insert

_MESSAGE_CHARS = 2000
_OUTPUT_CHARS = 20_000  # 50 lines of a run container, each at most 400 characters


def upsert_letter(conn: Connection, order_id: str, letter: dict[str, Any]) -> None:
    """One letter per order: a new failure overwrites the last one, keeping the replay count."""
    statement = dialect_insert(conn, dead_letters).values(order_id=order_id, replays=0, **letter)
    conn.execute(
        statement.on_conflict_do_update(index_elements=[dead_letters.c.order_id], set_=letter)
    )


def letter_columns(
    *,
    run_id: str,
    step: str,
    error_class: str,
    error_type: str,
    message: str,
    attempts: int,
    worker_output: str | None = None,
) -> dict[str, Any]:
    """A fresh letter's columns (all but the replay count); no replay requested yet."""
    return {
        "run_id": run_id,
        "failed_step": step,
        "error_class": error_class,
        "error_type": error_type,
        "message": message[:_MESSAGE_CHARS],
        "attempts": attempts,
        "dead_lettered_at": utcnow(),
        "replay_requested_at": None,
        "replay_run_key": None,
        "replay_from": None,
        "worker_output": worker_output[-_OUTPUT_CHARS:] if worker_output else None,
    }


def park_letter(
    conn: Connection,
    order_id: str,
    *,
    run_id: str,
    step: str,
    error_class: str,
    error_type: str,
    message: str,
) -> None:
    """The letter of an order parked rather than failed (budget, review): one attempt, from
    ``step``, replayed later through the one replay mechanism."""
    upsert_letter(
        conn,
        order_id,
        letter_columns(
            run_id=run_id,
            step=step,
            error_class=error_class,
            error_type=error_type,
            message=message,
            attempts=1,
        ),
    )


def mark_for_replay(
    conn: Connection, order_id: str, *, from_step: str | None, detail: dict[str, Any]
) -> str:
    """Mark the order's letter for a replay from ``from_step`` (else its failed step), moving the
    order to ``replayed`` in the caller's transaction (its row locked); returns the run key."""
    letter = (
        conn.execute(select(dead_letters).where(dead_letters.c.order_id == order_id))
        .mappings()
        .first()
    )
    if letter is None:
        raise UnknownOrder(f"order {order_id!r} is not in the dead-letter queue")
    replays = letter["replays"] + 1
    run_key = f"replay-{order_id}-{replays}"
    transition_in(
        conn,
        order_id,
        OrderStatus.REPLAYED,
        step=from_step or letter["failed_step"],
        detail={**detail, "replay": replays, "run_key": run_key},
    )
    conn.execute(
        dead_letters.update()
        .where(dead_letters.c.order_id == order_id)
        .values(
            replays=replays,
            replay_requested_at=utcnow(),
            replay_run_key=run_key,
            replay_from=from_step,
        )
    )
    return run_key


class DeadLetterStore(StoreConcern):
    """The dead-letter queue: park failed or budget-paused orders, mark them for replay."""

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
        worker_output: str | None = None,
    ) -> None:
        """Move a failed order to the dead-letter queue with what is needed to replay it.

        ``worker_output``: the last lines of a run container that died around the steps.
        """
        with self.begin() as conn:
            transition_in(
                conn,
                order_id,
                OrderStatus.DEAD_LETTERED,
                run_id=run_id,
                step=failed_step,
                detail={
                    "error_class": error_class,
                    "error_type": error_type,
                    "attempts": attempts,
                    "message": message[:_MESSAGE_CHARS],
                },
            )
            upsert_letter(
                conn,
                order_id,
                letter_columns(
                    run_id=run_id,
                    step=failed_step,
                    error_class=error_class,
                    error_type=error_type,
                    message=message,
                    attempts=attempts,
                    worker_output=worker_output,
                ),
            )

    def park_for_budget(self, order_id: str, *, run_id: str, step: str, message: str) -> None:
        """Pause an order whose next model call would break the budget (processing → waiting)."""
        with self.begin() as conn:
            transition_in(
                conn,
                order_id,
                OrderStatus.WAITING_BUDGET,
                run_id=run_id,
                step=step,
                detail={"reason": message[:_MESSAGE_CHARS]},
            )
            park_letter(
                conn,
                order_id,
                run_id=run_id,
                step=step,
                error_class="budget",
                error_type="BudgetExhausted",
                message=message,
            )

    def dead_letter_of(self, order_id: str) -> dict[str, Any] | None:
        """The order's letter (whatever the order's status now), or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(dead_letters).where(dead_letters.c.order_id == order_id))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

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

    def request_replay(self, order_id: str, *, actor: str, from_step: str | None = None) -> str:
        """Mark a dead letter for replay (dead_lettered → replayed); returns its replay run key.

        The replay starts at ``from_step`` when one is named, else at the failed step. The
        order's row is locked first, so two requests for one letter count one replay: the
        second finds the order replayed and is refused by the state machine.
        """
        with self.begin() as conn:
            lock_order(conn, order_id)
            return mark_for_replay(conn, order_id, from_step=from_step, detail={"actor": actor})

    def move_replay_start(
        self, order_id: str, *, requested: str, start: str, missing: list[str]
    ) -> bool:
        """Start a requested replay earlier, at ``start``: the artifacts of ``missing`` are gone.

        Written once (the letter's ``replay_from``, and an audit event in the same transaction);
        False when the order is no longer waiting for its replay or starts there already.
        """
        with self.begin() as conn:
            if lock_order(conn, order_id) is not OrderStatus.REPLAYED:
                return False
            moved = conn.execute(
                dead_letters.update()
                .where(
                    dead_letters.c.order_id == order_id,
                    or_(dead_letters.c.replay_from.is_(None), dead_letters.c.replay_from != start),
                )
                .values(replay_from=start)
            ).rowcount
            if moved:
                audit.append(
                    conn,
                    "replay_start_moved",
                    order_id=order_id,
                    step=start,
                    detail={"requested": requested, "start": start, "missing": missing},
                )
        return bool(moved)

    def replays_to_launch(self) -> list[dict[str, Any]]:
        """Replayed orders whose replay run has not started yet."""
        query = (
            select(
                dead_letters.c.order_id,
                dead_letters.c.failed_step,
                dead_letters.c.run_id,
                dead_letters.c.replay_run_key,
                dead_letters.c.replay_from,
            )
            .join(orders, orders.c.order_id == dead_letters.c.order_id)
            .where(orders.c.status == OrderStatus.REPLAYED.value)
            .order_by(dead_letters.c.replay_requested_at)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
