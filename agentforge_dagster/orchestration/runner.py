"""Running orders in this process: one run of the order pipeline per order partition.

Used by the CLI's ``run`` and ``demo`` commands (the embedded default, no daemon). Runs execute
against the Dagster instance given (``$DAGSTER_HOME``), so they show in the UI afterwards, and a
failed run is settled by the same function the daemon's sensor uses (:mod:`.failures`): the
embedded default and the daemon give a failing order the same outcome. Replays are the same
:class:`~.dead_letters.ReplayPlan` runs the ``dead_letter_replays`` sensor launches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, Definitions, build_resources

from agentforge_dagster.domain.runs import ORDER_PIPELINE, ORDER_TAG
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.dead_letters import ReplayPlan, planned_replays
from agentforge_dagster.orchestration.failures import Verdict, settle_failed_run
from agentforge_dagster.orchestration.intake import register_orders
from agentforge_dagster.persistence.store import BusinessStore


@dataclass(frozen=True)
class OrderRunResult:
    order_id: str
    run_id: str
    success: bool
    status: OrderStatus | None  # None: the store holds no such order (the run was refused)
    verdict: Verdict | None = None  # what the failure meant for the order (None: no failure)

    @property
    def state(self) -> str:
        return self.status.value if self.status is not None else "never submitted"


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
) -> OrderRunResult:
    """Run the pipeline for one order (or one replay of it), retries included, then settle it."""
    register_orders(instance, [order_id])
    result = defs.resolve_job_def(ORDER_PIPELINE).execute_in_process(
        partition_key=order_id,
        instance=instance,
        run_config=run_config or {},
        raise_on_error=False,
        tags=replay.tags if replay is not None else {ORDER_TAG: order_id},
        asset_selection=replay.asset_selection if replay is not None else None,
    )
    verdict = None
    if not result.success:
        run = instance.get_run_by_id(result.run_id)
        assert run is not None, "a run that was just executed is in the instance"
        verdict = settle_failed_run(store, instance, run)
    status = None if verdict is Verdict.UNKNOWN_ORDER else store.get(order_id).status
    return OrderRunResult(order_id, result.run_id, result.success, status, verdict)


def run_replays(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    *,
    run_config: dict[str, Any] | None = None,
) -> list[OrderRunResult]:
    """Run every requested replay here, each from its plan's step: the sensor's work, in process."""
    artifacts = {"artifact_io_manager": (defs.resources or {})["artifact_io_manager"]}
    with build_resources(artifacts, instance=instance) as built:
        plans = planned_replays(store, built.artifact_io_manager)
    return [
        run_order(defs, instance, store, plan.order_id, run_config=run_config, replay=plan)
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
) -> list[OrderRunResult]:
    results = []
    for order_id in order_ids:
        outcome = run_order(defs, instance, store, order_id, run_config=run_config)
        results.append(outcome)
        if progress is not None:
            progress(outcome)
    return results
