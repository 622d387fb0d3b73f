"""Orders whose runner is gone, taken back: the dead run failed in Dagster, the order replayed.

A runner that stops renewing its lease on an order (:mod:`~agentforge_dagster.persistence.leases`)
has died, been killed, or cannot write (a full disk). Whoever looks next — ``agentforge run`` as it
starts, or the ``expired_leases`` sensor under the daemon — takes the order back once:

1. the lease is marked lost (one caller wins; the lost run can never claim the order again);
2. the lost run, if Dagster still shows it queued or running, is reported failed, with a message
   naming the runner and when its lease ran out, so the UI tells the truth;
3. the failed run is settled like any other (:func:`~.failures.settle_failed_run`): a failure
   with no failed step is an ``infrastructure`` failure at the step it was in, so the order is
   dead-lettered and, being a blip, replayed from that step — at once by ``agentforge run``, after
   the automatic replay's cool-down under the daemon (or retried by Dagster's run retries first).

An order still queued whose runner died before its run started needs nothing: its lost lease no
longer holds it, and the next runner takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance

from agentforge_dagster.domain.errors import IllegalTransition, UnknownOrder
from agentforge_dagster.orchestration.failures import Verdict, settle_failed_run
from agentforge_dagster.persistence.leases import Lease, runner_identity
from agentforge_dagster.persistence.store import BusinessStore


@dataclass(frozen=True)
class TakenBack:
    """One order taken back from a runner that was gone, and what became of it."""

    order_id: str
    run_id: str
    holder: str | None
    verdict: Verdict | None  # None: no run had started (the order waits for the next runner)
    replayed: bool

    def describe(self) -> str:
        gone = (
            f"{self.order_id}: its runner ({self.holder or 'unknown'}) stopped renewing its lease"
        )
        if self.verdict is None:
            return f"{gone}; its run never started, so the next run takes the order"
        what = "replayed from the step it was in" if self.replayed else self.verdict.value
        return f"{gone}; run {self.run_id[:8]} marked failed, {what}"


def lost_run_message(lease: Lease) -> str:
    until = f"{lease.until:%Y-%m-%d %H:%M:%S} UTC" if lease.until is not None else "its end"
    return (
        f"The runner of order {lease.order_id} ({lease.holder or 'unknown'}) is gone: its lease "
        f"on the order ran out at {until} without being renewed (the process died, was killed or "
        f"could not write, e.g. a full disk). Marked failed by {runner_identity()}; the order is "
        "settled like any failed run and replayed from the step it was in."
    )


def take_back_expired(
    store: BusinessStore, instance: DagsterInstance, *, replay: bool, limit: int = 100
) -> list[TakenBack]:
    """Take back every order whose lease has expired (see the module docstring).

    With ``replay``, a dead-lettered order's replay is requested at once (``agentforge run``
    runs it next); without, the dead-letter replays' cool-down decides (the daemon).
    """
    taken: list[TakenBack] = []
    for lease in store.leases.expired_leases(limit=limit):
        assert lease.run_id is not None
        if not store.leases.take_back(lease, reason="lease expired without renewal"):
            continue  # renewed after all, or another caller took it first
        run = instance.get_run_by_id(lease.run_id)
        if run is None:
            taken.append(TakenBack(lease.order_id, lease.run_id, lease.holder, None, False))
            continue
        if not run.is_finished:
            message = lost_run_message(lease)
            instance.report_engine_event(message, run)
            instance.report_run_failed(run, message)
            run = instance.get_run_by_id(lease.run_id) or run
        verdict = settle_failed_run(store, instance, run)
        replayed = False
        if replay and verdict in (Verdict.DEAD_LETTERED, Verdict.ALREADY_SETTLED):
            try:
                store.dead_letters.request_replay(lease.order_id, actor="lease_expired")
                replayed = True
            except (IllegalTransition, UnknownOrder):
                pass  # not a dead letter (completed after all, or replayed by someone first)
        taken.append(TakenBack(lease.order_id, lease.run_id, lease.holder, verdict, replayed))
    return taken
