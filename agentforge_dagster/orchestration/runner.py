"""Running orders in this process: one run of the order pipeline per order partition.

Used by the CLI's ``run`` and ``demo`` commands (the embedded default, no daemon). Runs execute
against the Dagster instance given (``$DAGSTER_HOME``), so they show in the UI afterwards, and a
failed run is settled by the same function the daemon's sensor uses (:mod:`.failures`): the
embedded default and the daemon give a failing order the same outcome. Replays are the same
:class:`~.dead_letters.ReplayPlan` runs the ``dead_letter_replays`` sensor launches.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from dagster import DagsterInstance, Definitions, build_resources

from agentforge_dagster.domain.errors import OrderTaken, UnknownOrder
from agentforge_dagster.domain.runs import ORDER_PIPELINE
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.dead_letters import ReplayPlan, planned_replays
from agentforge_dagster.orchestration.failures import Verdict, settle_failed_run
from agentforge_dagster.orchestration.intake import register_orders
from agentforge_dagster.persistence.leases import DEFAULT_LEASE_SECONDS
from agentforge_dagster.persistence.store import BusinessStore

T = TypeVar("T")


@dataclass(frozen=True)
class OrderRunResult:
    order_id: str
    run_id: str
    success: bool
    status: OrderStatus | None  # None: the store holds no such order (the run was refused)
    verdict: Verdict | None = None  # what the failure meant for the order (None: no failure)
    skipped: str | None = None  # why no run was started: another runner holds the order

    @property
    def state(self) -> str:
        if self.skipped is not None:
            return "skipped"
        if self.verdict is Verdict.TAKEN:
            return "left to another runner"
        return self.status.value if self.status is not None else "never submitted"

    @property
    def settled(self) -> bool:
        """Nothing for this runner to regret: the run succeeded, or the order is another's."""
        return self.success or self.skipped is not None or self.verdict is Verdict.TAKEN


class CurrentRun:
    """The run this process is executing now, for whoever stops the process mid-run."""

    def __init__(self) -> None:
        self.order_id: str | None = None
        self.run_id: str | None = None

    def set(self, order_id: str | None, run_id: str | None) -> None:
        self.order_id, self.run_id = order_id, run_id


CURRENT = CurrentRun()


def fault_run_config(rate: float, seed: int) -> dict[str, Any]:
    """Run config that turns fault injection on for a run (recorded with the run in the UI)."""
    return {"resources": {"faults": {"config": {"rate": rate, "seed": seed}}}}


def run_order(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    order_id: str,
    *,
    run_config: dict[str, Any] | None = None,
    replay: ReplayPlan | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> OrderRunResult:
    """Run the pipeline for one order (or one replay of it), retries included, then settle it.

    The order is leased first (:mod:`~agentforge_dagster.persistence.leases`): an order another
    runner holds, or that is no longer waiting for a run, is skipped and said so.
    """
    run_id = str(uuid.uuid4())
    try:
        store.leases.take_lease(order_id, run_id, seconds=lease_seconds)
    except OrderTaken as exc:
        return OrderRunResult(order_id, "", False, store.orders.status(order_id), skipped=str(exc))
    except UnknownOrder:
        pass  # the run is refused by the store's resource, and settled as never submitted
    register_orders(instance, [order_id])
    CURRENT.set(order_id, run_id)
    try:
        result = defs.resolve_job_def(ORDER_PIPELINE).execute_in_process(
            partition_key=order_id,
            instance=instance,
            run_config=run_config or {},
            raise_on_error=False,
            run_id=run_id,
            tags={**(replay.tags if replay is not None else {}), **store.run_tags(order_id)},
            asset_selection=replay.asset_selection if replay is not None else None,
        )
    finally:
        CURRENT.set(None, None)
    verdict = None
    if not result.success:
        run = instance.get_run_by_id(result.run_id)
        assert run is not None, "a run that was just executed is in the instance"
        verdict = settle_failed_run(store, instance, run)
    status = None if verdict is Verdict.UNKNOWN_ORDER else store.orders.get(order_id).status
    return OrderRunResult(order_id, result.run_id, result.success, status, verdict)


def run_replays(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    *,
    run_config: dict[str, Any] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> list[OrderRunResult]:
    """Run every requested replay here, each from its plan's step: the sensor's work, in process."""
    artifacts = {"artifact_io_manager": (defs.resources or {})["artifact_io_manager"]}
    with build_resources(artifacts, instance=instance) as built:
        plans = planned_replays(store, built.artifact_io_manager)
    return [
        run_order(
            defs,
            instance,
            store,
            plan.order_id,
            run_config=run_config,
            replay=plan,
            lease_seconds=lease_seconds,
        )
        for plan in plans
    ]


def run_orders(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    order_ids: Iterable[str],
    *,
    run_config: dict[str, Any] | None = None,
    progress: Callable[[OrderRunResult], None] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> list[OrderRunResult]:
    results = []
    for order_id in order_ids:
        outcome = run_order(
            defs, instance, store, order_id, run_config=run_config, lease_seconds=lease_seconds
        )
        results.append(outcome)
        if progress is not None:
            progress(outcome)
    return results


class _Stop(BaseException):
    """A signal asked this process to stop (raised in the main thread by the handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# How long leaving the current run may take before the process exits anyway (a database away).
LEAVE_TIMEOUT_S = 5.0


def run_interruptibly(work: Callable[[], T], leave: Callable[[int], str | None]) -> T:
    """``work()``, stopped within seconds by SIGINT or SIGTERM, whatever it waits for.

    The work runs in a thread; the main thread only waits for it and for signals, so a signal is
    handled at once even while a step sleeps in a back-off, a rate limit or a model call (Dagster
    defers an interrupt to its next checkpoint, which a sleeping step never reaches). On a signal
    ``leave(signum)`` records where the work stood (at most :data:`LEAVE_TIMEOUT_S`), its line is
    printed, and the process exits with 128 + the signal's number: no traceback, and nothing
    half-done is kept as done — the order is taken up by the next runner from its lease. A second
    signal exits at once.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()
        raise _Stop(signum)

    stopping = threading.Event()
    worker = threading.Thread(target=target, name="agentforge-runner", daemon=True)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
    except _Stop as stop:
        signum = stop.signum
        said: list[str | None] = []
        leaving = threading.Thread(target=lambda: said.append(leave(signum)), daemon=True)
        leaving.start()
        leaving.join(LEAVE_TIMEOUT_S)
        line = said[0] if said and said[0] else "no order was in flight"
        print(f"interrupted ({signal.Signals(signum).name}): {line}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def leave_current_run(store: BusinessStore, instance: DagsterInstance, signum: int) -> str | None:
    """Record that the run in flight was interrupted, and free its order for the next runner.

    The run is reported failed (a failure with no failed step: the next runner settles it as an
    infrastructure failure and replays the order from the step it was in), an audit event names
    the step and attempt it stopped in, and the lease is released so nobody waits for it to run
    out. Returns what to tell the user; None: no run was in flight.
    """
    order_id, run_id = CURRENT.order_id, CURRENT.run_id
    if order_id is None or run_id is None:
        return None
    name = signal.Signals(signum).name
    started = [
        row
        for row in store.audit.audit_rows(order_id)
        if row["event"] == "step_started" and row["run_id"] == run_id
    ]
    step = started[-1]["step"] if started else None
    attempt = started[-1]["attempt"] if started else None
    where = f"step {step} (attempt {attempt})" if step else "its run's start"
    store.audit.record_event(
        "run_interrupted",
        order_id=order_id,
        run_id=run_id,
        step=step,
        attempt=attempt,
        detail={"signal": name},
    )
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(
            run, f"interrupted by {name} in {where}: the next agentforge run takes the order up"
        )
    store.leases.release_leases(run_id)
    return (
        f"order {order_id} stopped in {where}; its run {run_id[:8]} is marked failed and the "
        "next `agentforge run` takes the order up from that step"
    )
