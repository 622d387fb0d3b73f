"""How long a step waits before its next attempt: exponential back-off with jitter and a cap.

Computed here, in the one place that asks Dagster for a retry (``run_step`` raises
``RetryRequested`` with this wait), because Dagster's ``RetryPolicy`` has no cap: six doublings
from one second reach a minute, and a retry budget that spans a real outage of the database or
the object store (tens of seconds) must not grow without bound. A server's ``Retry-After`` is a
floor, itself capped at ``longest_asked_s`` (a provider asking for 11 days gets minutes). The whole
budget stays well inside the run's ``dagster/max_runtime`` (checked in settings).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S


@dataclass(frozen=True)
class StepBackoff:
    max_retries: int
    delay_seconds: float
    max_delay_seconds: float
    longest_asked_s: float = MAX_PROVIDER_WAIT_S  # the most a server's Retry-After may add

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 is the first retry)."""
        return min(self.max_delay_seconds, self.delay_seconds * 2 ** (retry - 1))

    def wait(self, retry: int, *, at_least: float | None = None) -> float:
        """The wait before retry number ``retry``: half its ceiling plus up to half at random, or
        ``at_least`` (what a server asked for) when longer, up to ``longest_asked_s``."""
        ceiling = self.ceiling(retry)
        jittered = ceiling / 2 + random.uniform(0, ceiling / 2)
        asked = at_least if at_least is not None and math.isfinite(at_least) else 0.0
        return max(jittered, min(asked, self.longest_asked_s))

    def budget(self) -> float:
        """The longest a step can spend waiting across all its retries."""
        return sum(self.ceiling(retry) for retry in range(1, self.max_retries + 1))
