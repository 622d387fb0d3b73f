"""The order job's retry policy: for failures around a step's body (loading its inputs, storing
its output), which the step cannot see.

Inside the body, ``run_step`` asks for each retry itself with the capped exponential back-off of
``execution/backoff.py`` (Dagster's policy has no cap); this policy's waits grow linearly instead,
so they stay bounded too: n × delay ± jitter before retry n. Permanent errors never reach it: the
step wrapper raises them as ``Failure(allow_retries=False)``.
"""

from __future__ import annotations

from dagster import Backoff, Jitter, RetryPolicy

from agentforge_dagster.settings import RetrySettings


def step_retry_policy(retries: RetrySettings) -> RetryPolicy:
    return RetryPolicy(
        max_retries=retries.max_retries,
        delay=retries.delay_seconds,
        backoff=Backoff.LINEAR,
        jitter=Jitter.PLUS_MINUS,
    )


def backup_retry_policy() -> RetryPolicy:
    """A backup that hits a busy database or a flaky object store tries again a few times."""
    return RetryPolicy(
        max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    )
