"""The six per-order assets, built from the step table by one factory.

Each asset is partitioned by order (dynamic partitions named ``orders``). :func:`run_step` is the one
mechanism around every step: it audits the attempt, injects faults before and after the work, and
turns our error classes into Dagster's: a permanent error fails at once (``allow_retries=False``);
anything else is left to the job's retry policy.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import functools
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    Failure,
    MetadataValue,
    Output,
    RetryRequested,
    asset,
)

from agentforge_dagster import tracing
from agentforge_dagster.domain.errors import (
    AgentForgeError,
    BudgetExhausted,
    ContentRefusal,
    OrderTaken,
    PermanentError,
    TransientError,
)
from agentforge_dagster.domain.models import Artifact, Delivery, Invoice, Review
from agentforge_dagster.domain.policy import Finding
from agentforge_dagster.domain.runs import (
    ORDERS_PARTITIONS_NAME,
    PARENT_RUN_TAG,
    REPLAY_OF_TAG,
    ROOT_RUN_TAG,
)
from agentforge_dagster.execution.checks import STEP_CHECKS, StepCheck
from agentforge_dagster.execution.faults import NO_DRILLS, FaultInjector, FaultPoint
from agentforge_dagster.execution.resources import ModelResource, StepOptions
from agentforge_dagster.execution.steps import STEPS, StepEnv, StepSpec
from agentforge_dagster.persistence.deliverables import Deliverables
from agentforge_dagster.persistence.io_managers import dump_artifact
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore

ORDERS_PARTITIONS = DynamicPartitionsDefinition(name=ORDERS_PARTITIONS_NAME)
ORDER_GROUP = "orders"


# The concurrency pool of every step that calls a model (its limit in dagster.yaml): the overall
# cap on model steps. Which provider answers is decided at call time (fallback, open breakers), so
# each provider's own limits are kept by the shared limiter (persistence/rate_limits.py), not here.
MODEL_POOL = "model_calls"


def run_step(
    context: AssetExecutionContext,
    spec: StepSpec,
    inputs: Mapping[str, Artifact],
    *,
    store: BusinessStoreResource,
    model: ModelResource,
    faults: FaultInjector,
    options: StepOptions,
    deliverables: Deliverables,
) -> Output[Artifact] | None:
    """One attempt of one step; with tracing on, a span of the order's trace under its run's.

    The span says the attempt's outcome (succeeded, held, retrying, failed) and error class, and
    what a delivery or an invoice made; the output's metadata carries the trace id (and a link
    to it when ``AGENTFORGE_TRACE_URL`` is set). Spans are flushed before the step returns: a
    forked run worker ends without the exporter's own shutdown.
    """
    attempt = functools.partial(
        _attempt,
        context,
        spec,
        inputs,
        store=store,
        model=model,
        faults=faults,
        options=options,
        deliverables=deliverables,
    )
    if not tracing.enabled():
        return attempt()
    run_id = context.run.run_id
    trace = store.get_store().order_trace(context.partition_key)
    attributes = {
        "agentforge.step": spec.name,
        "agentforge.attempt": context.retry_number + 1,
        "dagster.run_id": run_id,
        "agentforge.image": options.image or "local",
        "agentforge.image_id": options.image_id,
    }
    try:
        with tracing.span(
            f"step {spec.name}", trace, parent=trace.run_span_id(run_id), attributes=attributes
        ) as span:
            try:
                output = attempt()
            except (RetryRequested, Failure) as exc:
                cause = exc.__cause__
                span.set(
                    "agentforge.outcome",
                    "retrying" if isinstance(exc, RetryRequested) else "failed",
                )
                span.fail(
                    cause.error_class
                    if isinstance(cause, AgentForgeError)
                    else type(cause or exc).__name__,
                    str(cause or exc),
                )
                raise
            span.set("agentforge.outcome", "held" if output is None else "succeeded")
            if output is None:
                return None
            for key, value in _made(output.value).items():
                span.set(key, value)
            found: dict[str, Any] = {"trace_id": trace.trace_id_hex}
            url = tracing.link(options.trace_url, trace.trace_id_hex)
            if url:
                found["trace"] = MetadataValue.url(url)
            return Output(output.value, metadata={**output.metadata, **found})
    finally:
        tracing.flush()


def _made(artifact: Artifact) -> dict[str, Any]:
    """What a step's span says it made (a delivery's object and hash, an invoice's amount)."""
    if isinstance(artifact, Delivery):
        return {
            "agentforge.delivery.location": artifact.location,
            "agentforge.delivery.sha256": artifact.content_sha256,
        }
    if isinstance(artifact, Invoice):
        return {"agentforge.invoice_usd": artifact.amount_cents / 100}
    return {}


def _attempt(
    context: AssetExecutionContext,
    spec: StepSpec,
    inputs: Mapping[str, Artifact],
    *,
    store: BusinessStoreResource,
    model: ModelResource,
    faults: FaultInjector,
    options: StepOptions,
    deliverables: Deliverables,
) -> Output[Artifact] | None:
    order_id = context.partition_key
    attempt = context.retry_number + 1
    business = store.get_store()
    # A person's decision on an earlier hold shapes this run: a re-drive's model and instruction,
    # or what the delivery delivers.
    hold = business.review.latest_hold(order_id) if spec.may_hold else None
    redrive = hold is not None and hold.decision == "redrive"
    gateway = model.gateway(
        business,
        order_id=order_id,
        step=spec.name,
        run_id=context.run.run_id,
        attempt=attempt,
        wrap=lambda provider: faults.wrap_model(provider, step=spec.name, attempt=attempt),
        models=hold.redrive_model if hold is not None and redrive else None,
    )
    env = StepEnv(
        order_id=order_id,
        run_id=context.run.run_id,
        attempt=attempt,
        store=business,
        gateway=gateway,
        deliverables=deliverables,
        max_revisions=options.max_revisions,
        requires_approval=options.requires_approval,
        hold=hold,
    )
    audit_common: dict[str, Any] = {
        "order_id": order_id,
        "step": spec.name,
        "attempt": attempt,
        "run_id": context.run.run_id,
    }
    image = {"image": options.image or "local", "image_id": options.image_id or "none"}
    business.audit.record_event(
        "step_started",
        **audit_common,
        detail={"inputs": sorted(inputs), "fault_rate": faults.rate, **image},
    )
    try:
        business.orders.claim(
            order_id,
            run_id=context.run.run_id,
            step=spec.name,
            predecessors=frozenset(
                context.run.tags[tag]
                for tag in (PARENT_RUN_TAG, ROOT_RUN_TAG)
                if tag in context.run.tags
            ),
            lease_seconds=store.lease_seconds,
        )
        point = FaultPoint(
            order_id=order_id,
            step=spec.name,
            attempt=attempt,
            phase="before",
            replay_of=context.run.tags.get(REPLAY_OF_TAG, ""),
        )
        faults.check(**point)
        ballast = faults.allocate(spec.name)
        output = spec.run(env, inputs)
        del ballast
        point["phase"] = "after"
        faults.check(**point)
    except ContentRefusal as exc:  # not a failure: a person decides what to do instead
        refusal = Finding("content_refused", "quarantine", f"{spec.name}: {exc}"[:1000])
        hold_id = business.review.hold_for_review(
            order_id,
            run_id=context.run.run_id,
            kind="quarantined",
            step=spec.name,
            findings=[refusal],
            draft=None,
            model=gateway.providers[0].model,
        )
        business.audit.record_event(
            "step_held", **audit_common, detail={"hold_id": hold_id, "reason": refusal.reason}
        )
        context.log.warning(f"order {order_id} quarantined: {refusal.reason}")
        return None
    except Exception as exc:
        error_class = exc.error_class if isinstance(exc, AgentForgeError) else "unexpected"
        business.audit.record_event(
            "step_failed",
            **audit_common,
            detail={
                "error_class": error_class,
                "error_type": type(exc).__name__,
                "message": str(exc)[:2000],
                "fault_rate": faults.rate,
                "model_calls": len(env.model_calls),
            },
        )
        if isinstance(exc, OrderTaken):  # another runner's: not this order's failure
            raise Failure(
                description=f"{spec.name} stopped: {exc}",
                metadata={"error_class": error_class, "error_type": type(exc).__name__},
                allow_retries=False,
            ) from exc
        if isinstance(exc, BudgetExhausted):
            raise Failure(
                description=f"{spec.name} paused: {exc}",
                metadata={"error_class": "budget"},
                allow_retries=False,
            ) from exc
        if isinstance(exc, PermanentError):
            raise Failure(
                description=f"{spec.name} failed permanently: {exc}",
                metadata={"error_class": error_class, "error_type": type(exc).__name__},
                allow_retries=False,
            ) from exc
        # Transient, or unexpected: another attempt after the capped back-off (at least what a
        # server asked for). Past the last retry Dagster fails the step with this error.
        backoff = options.backoff()
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        raise RetryRequested(
            max_retries=backoff.max_retries,
            seconds_to_wait=backoff.wait(attempt, at_least=retry_after),
        ) from exc
    if output is None:  # held for a person's decision: nothing to deliver yet
        business.audit.record_event(
            "step_held", **audit_common, detail={"reason": "waiting for a person's decision"}
        )
        context.log.info(f"order {order_id}: {spec.name} waits for a person's decision")
        return None
    digest = hashlib.sha256(dump_artifact(output)).hexdigest()
    usage = _usage(env)
    business.audit.record_event(
        "step_succeeded",
        **audit_common,
        detail={"output_sha256": digest, "fault_rate": faults.rate, **usage},
    )
    held = {"hold": output.hold} if isinstance(output, Review) and output.hold else {}
    return Output(
        output,
        metadata={
            "attempt": attempt,
            "output_sha256": digest,
            **held,
            **image,
            **{k: _meta(v) for k, v in usage.items()},
        },
    )


def _usage(env: StepEnv) -> dict[str, Any]:
    calls = env.model_calls
    if not calls:
        return {"model_calls": 0}
    return {
        "model_calls": len(calls),
        "model": calls[-1].model,
        "provider": calls[-1].provider,
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "cost_usd": round(sum(c.cost_usd for c in calls), 6),
    }


def _meta(value: Any) -> Any:
    return MetadataValue.float(value) if isinstance(value, float) else value


STEP_RESOURCES = frozenset({"store", "model", "options", "deliverables"})


def check_result(
    context: AssetExecutionContext,
    check: StepCheck,
    business: BusinessStore,
    deliverables: Deliverables,
    output: Output[Artifact] | None,
) -> AssetCheckResult:
    """One check of a step's output; a failure is also an audited operator flag (check_failed)."""
    if output is None:
        return AssetCheckResult(
            check_name=check.name,
            passed=True,
            metadata={"outcome": "nothing to check: the order is held for a person"},
        )
    order_id = context.partition_key
    outcome = check.evaluate(business, deliverables, order_id, output.value)
    if not outcome.passed:
        business.audit.record_event(
            "check_failed",
            order_id=order_id,
            step=check.step,
            run_id=context.run.run_id,
            detail={"check": check.name, "blocking": check.blocking, **outcome.metadata},
        )
        context.log.error(f"order {order_id}: check {check.name} failed: {outcome.metadata}")
    return AssetCheckResult(
        check_name=check.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata=outcome.metadata,
    )


def build_step_asset(spec: StepSpec, pool: str, *, drills: bool = False) -> AssetsDefinition:
    """One asset for one step of the table; it requires the ``faults`` resource only for drills."""

    @asset(
        name=spec.asset_name,
        partitions_def=ORDERS_PARTITIONS,
        group_name=ORDER_GROUP,
        ins={name: AssetIn(f"order_{name}") for name in spec.inputs},
        description=spec.description
        + " Orders that failed for good are listed in the dead_letter_queue asset.",
        kinds={"python", "llm"} if spec.uses_model else {"python"},
        owners=["team:agentforge"],
        pool=pool if spec.uses_model else None,
        io_manager_key="artifact_io_manager",
        metadata={"step": spec.name, "output_type": spec.output_type.__name__},
        required_resource_keys=STEP_RESOURCES | ({"faults"} if drills else set()),
        # A step that may hold the order for a person ends without an output; the steps after it
        # are skipped and the run succeeds.
        output_required=not spec.may_hold,
        check_specs=[
            AssetCheckSpec(
                check.name,
                asset=spec.asset_name,
                blocking=check.blocking,
                description=check.description,
            )
            for check in STEP_CHECKS.get(spec.name, ())
        ],
    )
    def _step_asset(
        context: AssetExecutionContext, **inputs: Artifact
    ) -> Iterator[Output[Artifact] | AssetCheckResult]:
        resources = context.resources
        deliverables = resources.deliverables.target()
        output = run_step(
            context,
            spec,
            inputs,
            store=resources.store,
            model=resources.model,
            faults=getattr(resources, "faults", NO_DRILLS),
            options=resources.options,
            deliverables=deliverables,
        )
        if output is not None:
            yield output
        for check in STEP_CHECKS.get(spec.name, ()):
            yield check_result(context, check, resources.store.get_store(), deliverables, output)

    return _step_asset


def build_order_assets(*, drills: bool = False) -> list[AssetsDefinition]:
    """The six order assets; the model steps share the pool :data:`MODEL_POOL`."""
    return [build_step_asset(spec, MODEL_POOL, drills=drills) for spec in STEPS]
