"""Fault injection: the configured rate is the measured rate, and the same seed fails the same way."""

from __future__ import annotations

import pytest

from agentforge_dagster.domain.errors import InjectedFault, TransientError
from agentforge_dagster.execution.faults import (
    PHASES,
    FaultInjector,
    injected_fault,
    phase_probability,
)


def attempt_fails(rate: float, seed: int, order: str, step: str, attempt: int) -> bool:
    return any(
        injected_fault(rate=rate, seed=seed, order_id=order, step=step, attempt=attempt, phase=p)
        for p in PHASES
    )


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_attempt_failure_frequency_matches_the_rate(rate: float) -> None:
    trials = 20_000
    failures = sum(attempt_fails(rate, 1, f"o{i}", "plan", 1) for i in range(trials))
    assert abs(failures / trials - rate) < 0.015


def test_phase_probability_composes_to_the_rate() -> None:
    assert 1 - (1 - phase_probability(0.3)) ** 2 == pytest.approx(0.3)


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    def pattern(seed: int) -> list[bool]:
        return [attempt_fails(0.3, seed, f"o{i}", "draft", 1) for i in range(200)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)


def test_a_replay_draws_anew_and_a_first_run_as_before() -> None:
    """The same draws would fail a replay where its run failed; a real blip would have passed."""

    def fails(order: str, replay_of: str = "") -> bool:
        return any(
            injected_fault(
                rate=0.5,
                seed=3,
                order_id=order,
                step="plan",
                attempt=1,
                phase=p,
                replay_of=replay_of,
            )
            for p in PHASES
        )

    first = [fails(f"o{i}") for i in range(400)]
    assert [fails(f"o{i}", "") for i in range(400)] == first  # no replay: the draws of old
    replayed = [fails(f"o{i}", "run-1") for i in range(400)]
    assert replayed != first
    assert replayed == [fails(f"o{i}", "run-1") for i in range(400)]  # still repeatable
    assert 0.4 < sum(replayed) / 400 < 0.6  # at the same rate


def test_zero_rate_never_fails() -> None:
    assert not any(attempt_fails(0.0, 1, f"o{i}", "plan", 1) for i in range(1000))


def test_scripted_failures_hit_the_first_attempts_after_the_work() -> None:
    faults = FaultInjector(fail_first={"invoice": 2})
    for attempt in (1, 2):
        faults.check(order_id="o", step="invoice", attempt=attempt, phase="before")
        with pytest.raises(InjectedFault, match=f"attempt {attempt}/2"):
            faults.check(order_id="o", step="invoice", attempt=attempt, phase="after")
    faults.check(order_id="o", step="invoice", attempt=3, phase="after")
    faults.check(order_id="o", step="plan", attempt=1, phase="after")
    assert issubclass(InjectedFault, TransientError)
