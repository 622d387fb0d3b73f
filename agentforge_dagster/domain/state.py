"""The order state machine: which status may follow which, in one table.

queued → processing → completed | failed → dead_lettered → replayed → processing …
processing → waiting_budget → replayed → processing … (paused for the model budget)
processing → quarantined | awaiting_approval → replayed → processing … (a person approved, edited
or re-drove it) | rejected (a person closed it: nothing delivered or billed)
"""

from __future__ import annotations

from enum import StrEnum

from agentforge_dagster.domain.errors import IllegalTransition


class OrderStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    REPLAYED = "replayed"
    WAITING_BUDGET = "waiting_budget"
    QUARANTINED = "quarantined"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"


LEGAL_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.QUEUED: frozenset({OrderStatus.PROCESSING}),
    OrderStatus.PROCESSING: frozenset(
        {
            OrderStatus.COMPLETED,
            OrderStatus.FAILED,
            OrderStatus.WAITING_BUDGET,
            OrderStatus.QUARANTINED,
            OrderStatus.AWAITING_APPROVAL,
        }
    ),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.FAILED: frozenset({OrderStatus.DEAD_LETTERED}),
    OrderStatus.DEAD_LETTERED: frozenset({OrderStatus.REPLAYED}),
    OrderStatus.REPLAYED: frozenset({OrderStatus.PROCESSING}),
    # Paused, not failed: the month's model budget would be exceeded; resumes from the same step.
    OrderStatus.WAITING_BUDGET: frozenset({OrderStatus.REPLAYED}),
    # Held for a person: a decision replays it (approve, edit, re-drive) or closes it (reject).
    OrderStatus.QUARANTINED: frozenset({OrderStatus.REPLAYED, OrderStatus.REJECTED}),
    OrderStatus.AWAITING_APPROVAL: frozenset({OrderStatus.REPLAYED, OrderStatus.REJECTED}),
    OrderStatus.REJECTED: frozenset(),
}

HELD_STATUSES = frozenset({OrderStatus.QUARANTINED, OrderStatus.AWAITING_APPROVAL})
# No move leaves these: the order is done with (delivered and billed, or closed by a person).
FINAL_STATUSES = frozenset(status for status, targets in LEGAL_TRANSITIONS.items() if not targets)


def check_transition(current: OrderStatus | str, target: OrderStatus | str) -> None:
    """Raise :class:`IllegalTransition` unless ``current → target`` is an edge of the machine."""
    source, dest = OrderStatus(current), OrderStatus(target)
    if dest not in LEGAL_TRANSITIONS[source]:
        allowed = ", ".join(sorted(LEGAL_TRANSITIONS[source])) or "none (terminal)"
        raise IllegalTransition(
            f"an order cannot move from {source.value!r} to {dest.value!r}; allowed: {allowed}"
        )
