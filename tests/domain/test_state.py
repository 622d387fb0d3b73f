"""Every legal and every illegal transition of the order state machine."""

from __future__ import annotations

import itertools

import pytest

from agentforge_dagster.domain.errors import IllegalTransition, PermanentError
from agentforge_dagster.domain.state import LEGAL_TRANSITIONS, OrderStatus, check_transition

S = OrderStatus
EXPECTED_LEGAL = {
    (S.QUEUED, S.PROCESSING),
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.FAILED),
    (S.FAILED, S.DEAD_LETTERED),
    (S.DEAD_LETTERED, S.REPLAYED),
    (S.REPLAYED, S.PROCESSING),
    (S.PROCESSING, S.WAITING_BUDGET),
    (S.WAITING_BUDGET, S.REPLAYED),
    # The review gate: held for a person, then replayed by a decision or rejected.
    (S.PROCESSING, S.QUARANTINED),
    (S.PROCESSING, S.AWAITING_APPROVAL),
    (S.QUARANTINED, S.REPLAYED),
    (S.QUARANTINED, S.REJECTED),
    (S.AWAITING_APPROVAL, S.REPLAYED),
    (S.AWAITING_APPROVAL, S.REJECTED),
}
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))


def test_the_table_is_the_documented_machine() -> None:
    table = {(src, dst) for src, targets in LEGAL_TRANSITIONS.items() for dst in targets}
    assert table == EXPECTED_LEGAL


@pytest.mark.parametrize(("source", "target"), sorted(EXPECTED_LEGAL))
def test_legal_transition_passes(source: OrderStatus, target: OrderStatus) -> None:
    check_transition(source, target)
    check_transition(source.value, target.value)


@pytest.mark.parametrize(
    ("source", "target"), [pair for pair in ALL_PAIRS if pair not in EXPECTED_LEGAL]
)
def test_illegal_transition_raises_a_permanent_error(
    source: OrderStatus, target: OrderStatus
) -> None:
    with pytest.raises(IllegalTransition, match=f"from '{source.value}' to '{target.value}'"):
        check_transition(source, target)
    assert issubclass(IllegalTransition, PermanentError)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        check_transition("queued", "teleported")
