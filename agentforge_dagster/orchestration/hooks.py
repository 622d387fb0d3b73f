"""When a step has failed for good, its order is settled at once (see :mod:`.failures`)."""

from __future__ import annotations

from dagster import HookContext, failure_hook

from agentforge_dagster.orchestration.failures import Verdict, settle_failed_run


@failure_hook(required_resource_keys={"store"})
def mark_order_failed(context: HookContext) -> None:
    """Fires on the step whose retries ran out (or that failed permanently)."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is None:
        return
    verdict = settle_failed_run(
        context.resources.store.get_store(), context.instance, run, step_failed=True
    )
    if verdict is Verdict.UNKNOWN_ORDER:
        context.log.error(f"run {context.run_id} is for an order the business store does not hold")
    else:
        context.log.info(f"{context.op.name} failed for good: {verdict.value}")
