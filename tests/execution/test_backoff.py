"""Step back-off: exponential, jittered, capped, never under a server's Retry-After."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentforge_dagster.execution.backoff import StepBackoff
from agentforge_dagster.settings import AgentForgeSettings


def test_waits_double_up_to_the_cap_with_jitter_below_the_ceiling() -> None:
    backoff = StepBackoff(max_retries=6, delay_seconds=1.0, max_delay_seconds=30.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    for retry in range(1, 7):
        waits = [backoff.wait(retry) for _ in range(200)]
        assert backoff.ceiling(retry) / 2 <= min(waits) <= max(waits) <= backoff.ceiling(retry)
        assert len(set(waits)) > 1, "jittered"
    assert backoff.budget() == 61, "the defaults span a 30 s outage of the database or S3"


def test_a_server_wait_is_a_floor_even_above_the_cap() -> None:
    backoff = StepBackoff(max_retries=3, delay_seconds=0.1, max_delay_seconds=1.0)
    assert backoff.wait(1, at_least=45.0) == 45.0


def test_retries_that_could_outlast_the_run_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="more than half of AGENTFORGE_ORDER_RUN_MAX"):
        AgentForgeSettings(
            retries={"max_retries": 20, "max_delay_seconds": 600},
            runs={"order_run_max_runtime_seconds": 900},
        )
