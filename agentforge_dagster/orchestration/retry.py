"""The step retry policy, declared once: exponential back-off with jitter, from settings.

Dagster waits (2^n - 1) × delay before retry n, ± jitter. Permanent errors never reach it: the step
wrapper raises them as ``Failure(allow_retries=False)``.
"""

from __future__ import annotations

from dagster import Backoff, Jitter, RetryPolicy

from agentforge_dagster.settings import AgentForgeSettings


def step_retry_policy(settings: AgentForgeSettings) -> RetryPolicy:
    return RetryPolicy(
        max_retries=settings.retry_max_retries,
        delay=settings.retry_delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


def backup_retry_policy() -> RetryPolicy:
    """A backup that hits a busy database or a flaky object store tries again a few times."""
    return RetryPolicy(
        max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    )
