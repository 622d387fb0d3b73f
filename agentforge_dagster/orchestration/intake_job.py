"""Taking an order from the Dagster UI: the ``take_order`` job, its typed config, one op.

The launchpad (or ``dagster job launch -j take_order -c order.yaml``: the fields under
``ops: accept_order: config:``) gives the order's fields; Dagster's schema checks their types,
then the op applies the validator ``agentforge submit`` uses
(:func:`~agentforge_dagster.domain.models.parse_order`), with the same messages. A refused order
leaves no order row: it is recorded as a refusal (``agentforge submit``'s way, source
``job:take_order``) and the run fails without a retry, listing the errors. A valid order is
queued through :func:`~.intake.submit_order`, so its partition is registered and the
``order_queue`` sensor launches its ``order_pipeline`` run like any other order's.

Without an ``order_id`` the order's id comes from the run's root run id: a retry or a
re-execution of the run (same root) takes the same order again, which is success, never a
second order.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import hashlib
import json
from typing import Any
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from agentforge_dagster.domain.errors import AlreadySubmitted, InvalidOrder, PermanentError
from agentforge_dagster.domain.models import ServiceKind, parse_order
from agentforge_dagster.domain.runs import PARTITION_TAG
from agentforge_dagster.orchestration.intake import submit_order
from agentforge_dagster.orchestration.retry import step_retry_policy
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.settings import RetrySettings

TAKE_ORDER = "take_order"
# The op's own name: Dagster refuses an op and a job of one name in a code location.
ACCEPT_ORDER = "accept_order"
SOURCE = f"job:{TAKE_ORDER}"
MAX_ERRORS_SHOWN = 20  # as agentforge submit prints them
MAX_ERROR_CHARS = 500


class TakeOrderConfig(dg.Config):
    """One order, as ``agentforge submit`` takes it from its flags."""

    customer: str
    # Not an enum in the schema: an unknown service is refused and recorded like any other field.
    service: str = Field(description="One of: " + ", ".join(s.value for s in ServiceKind) + ".")
    brief: str
    # Text like "120.00", or a YAML number: Dagster's config has no str-or-float type, so the
    # order's validator checks it (ASCII decimal notation, at most two decimals).
    price: Any = Field(description='Price in the ledger currency, e.g. "120.00".')
    order_id: str | None = Field(
        default=None,
        description="Your own order id (letters, digits, - and _); without one, ord- and the "
        "start of the run's root run id (a retried run takes the same order).",
    )
    require_approval: bool = Field(
        default=False,
        description="Hold the reviewed deliverable until a person approves it (agentforge review).",
    )


def run_order_id(root_run_id: str) -> str:
    """The order id of a run group: ``ord-`` and the first 12 hex digits of its root run id."""
    return "ord-" + root_run_id.replace("-", "")[:12]


def refusal_text(rejection_id: int, errors: list[str]) -> str:
    """The refusal as ``agentforge submit`` prints it."""
    lines = [f"order rejected (recorded as rejection {rejection_id}):"]
    lines += [f"  - {error[:MAX_ERROR_CHARS]}" for error in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def next_steps(order_id: str, outcome: str) -> str:
    """Where the order goes next, with a link to its runs in the UI (its runs filter's URL)."""
    runs = "/runs?q%5B%5D=" + quote(f"tag:{PARTITION_TAG}={order_id}", safe="")
    return (
        f"Order `{order_id}`: {outcome}. The `order_queue` sensor launches a queued order's "
        f"`order_pipeline` run (without a daemon: `agentforge run`). [Its runs]({runs}) · "
        "`agentforge status`"
    )


@dg.op(
    name=ACCEPT_ORDER,
    description="Validate one order as agentforge submit does; queue it, or record its refusal.",
)
def accept_order(
    context: dg.OpExecutionContext, config: TakeOrderConfig, store: BusinessStoreResource
) -> dg.Output[str]:
    business = store.get_store()
    raw: dict[str, Any] = {
        key: value
        for key, value in config.model_dump().items()
        if key != "order_id" or value is not None
    }
    root_run_id = context.run.root_run_id or context.run.run_id
    try:
        order = parse_order(raw, default_order_id=run_order_id(root_run_id))
        submit_order(business, context.instance, order, source=SOURCE)
        outcome = "queued"
    except AlreadySubmitted as exc:  # this run's retry, or the same order again: done already
        order_id, outcome = exc.order_id, f"already queued (now {exc.status})"
    except InvalidOrder as exc:  # a bad order, or an id that holds a different order
        payload = json.dumps(raw, default=str)
        digest = hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        rejection = business.orders.reject(
            payload,
            exc.errors,
            source=SOURCE,
            # A re-execution of a refused run (same root, same config) is recorded once.
            message_key=f"{SOURCE}:{root_run_id}:{digest}",
        )
        raise dg.Failure(
            description=refusal_text(rejection, exc.errors),
            metadata={"rejection_id": rejection, "errors": dg.MetadataValue.json(exc.errors)},
            allow_retries=False,
        ) from None  # the errors say it all; the validator's trace would repeat the input
    except PermanentError as exc:  # nothing a retry could change
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    else:
        order_id = order.order_id
    context.log.info(f"{outcome} {order_id}")
    return dg.Output(
        order_id,
        metadata={
            "order_id": order_id,
            "outcome": outcome,
            "next": dg.MetadataValue.md(next_steps(order_id, outcome)),
        },
    )


def take_order_job(retries: RetrySettings) -> dg.JobDefinition:
    """The launchpad's way in for a new order.

    The op retries what the order steps retry around their bodies (a database blip: the step
    retry policy, ``AGENTFORGE_RETRY_*``); a refusal fails it at once. One op: in process.
    """

    @dg.job(
        name=TAKE_ORDER,
        description="Take a new order from the launchpad (config: customer, service, brief, "
        "price, order_id, require_approval); refused orders are recorded, not queued.",
        executor_def=dg.in_process_executor,
        op_retry_policy=step_retry_policy(retries),
    )
    def take_order() -> None:
        accept_order()

    return take_order
