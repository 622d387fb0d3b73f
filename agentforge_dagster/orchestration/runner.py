"""Launching order runs from Python: one run of the order pipeline per order partition.

Used by the CLI's ``run`` and ``demo`` commands; runs execute in this process against the Dagster
instance given (the embedded ``.dagster_home`` by default), so they show in ``dagster dev`` after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, ReexecutionOptions, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.assets import ORDERS_PARTITIONS
from agentforge_dagster.orchestration.dead_letters import dead_letter_failed_run, replay_selection
from agentforge_dagster.orchestration.jobs import ORDER_PIPELINE
from agentforge_dagster.persistence.store import BusinessStore


@dataclass(frozen=True)
class OrderRunResult:
    order_id: str
    run_id: str
    success: bool
    status: OrderStatus


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
    asset_selection: Sequence[AssetKey] | None = None,
    tags: dict[str, str] | None = None,
) -> OrderRunResult:
    """Register the order as a partition and run the pipeline for it, retries included."""
    partitions_name = ORDERS_PARTITIONS.name
    assert partitions_name is not None
    if not instance.has_dynamic_partition(partitions_name, order_id):
        instance.add_dynamic_partitions(partitions_name, [order_id])
    result = defs.resolve_job_def(ORDER_PIPELINE).execute_in_process(
        partition_key=order_id,
        instance=instance,
        run_config=run_config or {},
        raise_on_error=False,
        tags={"agentforge/order_id": order_id, **(tags or {})},
        asset_selection=asset_selection,
    )
    return OrderRunResult(order_id, result.run_id, result.success, store.get(order_id).status)


def run_replays(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    *,
    run_config: dict[str, Any] | None = None,
) -> list[OrderRunResult]:
    """Run every requested replay in this process, from each letter's failed step on.

    The embedded counterpart of the ``dead_letter_replays`` sensor; a failed replay is
    dead-lettered again, as the ``dead_letter_queue`` sensor would.
    """
    results = []
    for row in store.replays_to_launch():
        outcome = run_order(
            defs,
            instance,
            store,
            row["order_id"],
            run_config=run_config,
            asset_selection=replay_selection(row["failed_step"]),
            tags={"agentforge/replay_of": row["run_id"]},
        )
        if not outcome.success:
            dead_letter_failed_run(store, row["order_id"], outcome.run_id, "replay run failed")
            outcome = OrderRunResult(
                outcome.order_id, outcome.run_id, False, store.get(row["order_id"]).status
            )
        results.append(outcome)
    return results


DEFINITIONS_MODULE = "agentforge_dagster.definitions"
CARRIED_TAGS = ("dagster/partition", "agentforge/order_id")


def reexecute_from_failure(
    instance: DagsterInstance, run_id: str, *, run_config: dict[str, Any] | None = None
) -> str:
    """Re-run a failed run from its failed step; earlier steps' outputs are read, not redone.

    The job is loaded the way a code location loads it (module + lazy definitions), so the
    re-execution uses this environment's resources: the artifact store must be one the earlier
    run wrote to (the local folder or S3). Returns the new run's id.
    """
    job = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs").get_reconstructable_job(
        ORDER_PIPELINE
    )
    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise ValueError(f"no run {run_id!r} in this Dagster instance")
    # The partition (the order) is a run tag; execute_job does not carry it over by itself.
    tags = {key: value for key, value in parent.tags.items() if key in CARRIED_TAGS}
    options = ReexecutionOptions.from_failure(run_id, instance)
    result = execute_job(
        job, instance, run_config=run_config, tags=tags, reexecution_options=options
    )
    return result.run_id


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
