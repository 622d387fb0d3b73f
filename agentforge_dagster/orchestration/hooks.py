"""What happens when a step has failed for good: the order is marked failed, with the reason."""

from __future__ import annotations

from dagster import Failure, HookContext, failure_hook

from agentforge_dagster.domain.errors import AgentForgeError, BudgetExhausted, UnknownOrder
from agentforge_dagster.domain.state import OrderStatus

PARTITION_TAG = "dagster/partition"


def classify(exc: BaseException | None) -> str:
    """Error class of the exception that ended a step (retries exhausted counts as transient)."""
    if isinstance(exc, Failure) and not exc.allow_retries:
        return "permanent"
    if isinstance(exc, AgentForgeError):
        return exc.error_class
    return "transient" if exc is not None else "unknown"


@failure_hook(required_resource_keys={"store"})
def mark_order_failed(context: HookContext) -> None:
    """Fires once per run, on the step whose retries ran out (or that failed permanently)."""
    run = context.instance.get_run_by_id(context.run_id)
    order_id = run.tags.get(PARTITION_TAG) if run else None
    if order_id is None:
        context.log.error("failed step has no order partition; nothing to mark")
        return
    exc = context.op_exception
    step = context.op.name.removeprefix("order_")
    message = str(exc)[:2000] if exc is not None else "step failed"
    store = context.resources.store.get_store()
    try:
        current = store.get(order_id).status
    except UnknownOrder:
        context.log.error(f"run for unknown order {order_id!r} failed at {step}: {message}")
        return
    if current is not OrderStatus.PROCESSING:
        # A run that never took the order in (it was completed or failed already) changes nothing.
        context.log.warning(f"order {order_id} is {current.value}; {step} failure not applied")
        return
    if exc is not None and isinstance(exc.__cause__, BudgetExhausted):
        store.park_for_budget(order_id, run_id=context.run_id, step=step, message=message)
        return
    store.transition(
        order_id,
        OrderStatus.FAILED,
        run_id=context.run_id,
        step=step,
        error=message,
        error_class=classify(exc),
    )
