"""Fault injection: transient failures raised on purpose, before and after a step's work.

Whether an attempt fails is a pure function of (seed, order, step, attempt, phase), so a demo or a
test with the same seed fails in exactly the same places whatever order the runs execute in. The
per-phase probability is chosen so that an attempt fails with probability ``rate`` in all.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping

from agentforge_dagster.domain.errors import InjectedFault
from agentforge_dagster.execution.providers import ModelProvider, ModelRequest, ModelResponse

PHASES = ("before", "after")


def _uniform(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def phase_probability(rate: float) -> float:
    """Probability per phase such that an attempt (two phases) fails with probability ``rate``."""
    return 1.0 - math.sqrt(1.0 - rate)


def injected_fault(
    *,
    rate: float,
    seed: int,
    order_id: str,
    step: str,
    attempt: int,
    phase: str,
    fail_first: Mapping[str, int] | None = None,
    retry_after: float | None = None,
) -> InjectedFault | None:
    """The fault to raise at this point, or None.

    ``fail_first`` scripts failures: ``{"plan": 2}`` fails the plan step's first two attempts
    (after its work, so the work was done and has to be done again).
    """
    scripted = (fail_first or {}).get(step, 0)
    if attempt <= scripted and phase == "after":
        return InjectedFault(
            f"injected fault: {step} scripted to fail attempt {attempt}/{scripted}",
            retry_after=retry_after,
        )
    if rate > 0 and _uniform(seed, order_id, step, attempt, phase) < phase_probability(rate):
        return InjectedFault(
            f"injected fault: {step} attempt {attempt} failed {phase} its work",
            retry_after=retry_after,
        )
    return None


class SlowModel:
    """A provider wrapped to answer late: simulated latency, or a hang past the step's deadline."""

    def __init__(self, inner: ModelProvider, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.name, self.model = inner.name, inner.model

    def complete(self, request: ModelRequest) -> ModelResponse:
        time.sleep(self.delay_s)
        return self.inner.complete(request)
