"""Fault injection (drills): transient failures raised on purpose, before and after a step's work.

Drills are not part of the production wiring: the order assets require the ``faults`` resource
only when drills are switched on (``build_definitions(..., drills=True)``, used by the demo, the
benchmarks and the tests; ``AGENTFORGE_DRILLS=true`` or a fault setting in the environment for runs
launched by the daemon). Without it a step runs with :data:`NO_DRILLS`, which never interferes.

Whether an attempt fails is a pure function of (seed, order, step, attempt, phase), so a demo or a
test with the same seed fails in exactly the same places whatever order the runs execute in. A
replay draws anew (its point names the run it replays): the same draws would fail it in the same
place, where a real blip would have passed. The per-phase probability is chosen so that an attempt
fails with probability ``rate`` in all.
"""

from __future__ import annotations

import hashlib
import math
import socket
import time
from collections.abc import Mapping
from typing import NotRequired, TypedDict, Unpack

from dagster import ConfigurableResource
from pydantic import Field

from agentforge_dagster.domain.errors import InjectedFault, InjectedPermanentFault
from agentforge_dagster.execution.llm.base import ModelProvider, ModelRequest, ModelResponse

PHASES = ("before", "after")


def _uniform(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def phase_probability(rate: float) -> float:
    """Probability per phase such that an attempt (two phases) fails with probability ``rate``."""
    return 1.0 - math.sqrt(1.0 - rate)


class FaultPoint(TypedDict):
    """Where a fault may strike: one attempt of an order's step, before or after its work."""

    order_id: str
    step: str
    attempt: int
    phase: str  # one of PHASES
    replay_of: NotRequired[str]  # the failed run a replay run starts over from ("" for none)


def injected_fault(
    *,
    rate: float,
    seed: int,
    fail_first: Mapping[str, int] | None = None,
    retry_after: float | None = None,
    **point: Unpack[FaultPoint],
) -> InjectedFault | None:
    """The fault to raise at this point, or None.

    ``fail_first`` scripts failures: ``{"plan": 2}`` fails the plan step's first two attempts
    (after its work, so the work was done and has to be done again).
    """
    order_id, step = point["order_id"], point["step"]
    attempt, phase = point["attempt"], point["phase"]
    scripted = (fail_first or {}).get(step, 0)
    if attempt <= scripted and phase == "after":
        return InjectedFault(
            f"injected fault: {step} scripted to fail attempt {attempt}/{scripted}",
            retry_after=retry_after,
        )
    replay = (point["replay_of"],) if point.get("replay_of") else ()
    if rate > 0 and _uniform(seed, order_id, step, attempt, phase, *replay) < phase_probability(
        rate
    ):
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


class LatchedModel:
    """A provider whose calls wait until a latch opens: a TCP port on loopback that accepts.

    Lets a test hold a run inside a step for exactly as long as it needs (until a deploy has
    landed, say) instead of guessing a latency long enough; ``deadline_s`` bounds the wait.
    """

    def __init__(self, inner: ModelProvider, port: int, deadline_s: float) -> None:
        self.inner, self.port, self.deadline_s = inner, port, deadline_s
        self.name, self.model = inner.name, inner.model

    def complete(self, request: ModelRequest) -> ModelResponse:
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        return self.inner.complete(request)


class FaultInjector(ConfigurableResource):
    """Raises transient faults on purpose, before and after each step's work.

    ``rate`` is the probability that one attempt of one step fails; ``seed`` makes it repeatable;
    ``fail_first`` scripts the first N attempts of named steps to fail.
    """

    rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    fail_first: dict[str, int] = Field(default_factory=dict)
    fail_permanently: list[str] = Field(
        default_factory=list,
        description="Steps whose every attempt fails with a permanent error (the dead-letter path).",
    )
    hang_first: dict[str, int] = Field(
        default_factory=dict, description="Model calls of the first N attempts of a step hang."
    )
    hang_seconds: float = Field(default=3600.0, gt=0)
    retry_after_seconds: float | None = Field(
        default=None, description="Injected faults ask for this wait, like a 429's Retry-After."
    )
    model_latency_seconds: float = Field(
        default=0.0, ge=0, description="Simulated latency added to every model call."
    )
    hold_until_port: int | None = Field(
        default=None,
        description="Model calls wait until 127.0.0.1:PORT accepts a connection (a latch a "
        "test opens), at most hang_seconds.",
    )
    allocate_mb: dict[str, int] = Field(
        default_factory=dict,
        description="Megabytes a step allocates and holds during its work: an out-of-memory "
        "drill for run containers with a memory cap.",
    )

    def wrap_model(self, provider: ModelProvider, *, step: str, attempt: int) -> ModelProvider:
        """The provider as this attempt sees it: hung, slowed down, or untouched."""
        if attempt <= self.hang_first.get(step, 0):
            return SlowModel(provider, self.hang_seconds)
        if self.hold_until_port is not None:
            return LatchedModel(provider, self.hold_until_port, self.hang_seconds)
        if self.model_latency_seconds > 0:
            return SlowModel(provider, self.model_latency_seconds)
        return provider

    def allocate(self, step: str) -> bytes | None:
        """The step's memory ballast, every page written so it is really resident."""
        megabytes = self.allocate_mb.get(step, 0)
        return b"\xff" * (megabytes * 1024 * 1024) if megabytes > 0 else None

    def check(self, **point: Unpack[FaultPoint]) -> None:
        """Raise the fault this drill injects at ``point``, if it injects one there."""
        if point["step"] in self.fail_permanently and point["phase"] == "before":
            raise InjectedPermanentFault(
                f"injected permanent fault: {point['step']} cannot succeed"
            )
        fault = injected_fault(
            rate=self.rate,
            seed=self.seed,
            fail_first=self.fail_first,
            retry_after=self.retry_after_seconds,
            **point,
        )
        if fault is not None:
            raise fault


NO_DRILLS = FaultInjector()  # what a step runs with when drills are off: never interferes
