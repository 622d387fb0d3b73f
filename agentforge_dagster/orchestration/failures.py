"""What a failed run means for its order, decided once, here, from Dagster's own records.

Three callers, one decision (:func:`settle_failed_run`):

* the ``mark_order_failed`` hook, when a step has failed for good (its retry policy ran out, or
  the error was permanent) and a step failure can never make Dagster retry the run;
* the ``dead_letter_queue`` sensor, for every failed run of the order pipeline once Dagster has
  said whether it will retry it (the ``dagster/will_retry`` tag is written just *after* the
  failure event, so a run is judged only when the tag is there or run retries are off);
* the in-process runner (``agentforge run``/``demo``), after each run it executed.

A run Dagster will retry is never dead-lettered: its order stays ``processing`` for the retry run.
Everything the letter says (the step that ended the run, the error class and type, a one-line
message, the attempts) comes from the run's events in Dagster's event log, not from the audit log.
Settling is idempotent, so two callers judging the same run change the order once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

from agentforge_dagster.domain import errors
from agentforge_dagster.domain.errors import IllegalTransition, UnknownOrder
from agentforge_dagster.domain.runs import (
    CONTAINER_HEADLINE_KEY,
    CONTAINER_OUTPUT_KEY,
    LAUNCH_STEP,
    ORDER_PIPELINE,
    PARTITION_TAG,
    WILL_RETRY_TAG,
    order_of_run,
    root_error,
)
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.store import BusinessStore

RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
MAX_MESSAGE = 500


_SETTLED = frozenset({OrderStatus.DEAD_LETTERED, OrderStatus.COMPLETED, OrderStatus.WAITING_BUDGET})


class Verdict(StrEnum):
    """What settling a failed run did."""

    NOT_AN_ORDER_RUN = "not_an_order_run"
    UNDECIDED = "undecided"  # Dagster has not said yet whether it retries the run: ask later
    RETRIED_BY_DAGSTER = "retried_by_dagster"  # the order stays processing for the retry run
    SUPERSEDED = "superseded"  # a newer run of the order exists: this one no longer speaks for it
    UNKNOWN_ORDER = "unknown_order"  # a run for an order that was never submitted
    DEAD_LETTERED = "dead_lettered"
    WAITING_BUDGET = "waiting_budget"
    ALREADY_SETTLED = "already_settled"
    TAKEN = "taken"  # the run stopped because another runner holds the order: not its failure


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed, from its events: the step that ended it and that step's error."""

    step: str
    error_class: str  # transient | permanent | budget | infrastructure
    error_type: str
    message: str  # one line
    attempts: int
    worker_output: str | None = None  # a run container's last lines, when it died around steps

    def letter(self) -> dict[str, Any]:
        """The dead letter's fields (the keywords of ``store.dead_letters.dead_letter``)."""
        return {
            "failed_step": self.step,
            "error_class": self.error_class,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "worker_output": self.worker_output,
        }


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message on one line (a dead-letter list shows one letter a line), cut to ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _error_classes() -> dict[str, str]:
    """Our exception class names → their error class (transient, permanent, budget)."""
    table: dict[str, str] = {}
    pending: list[type[errors.AgentForgeError]] = [errors.AgentForgeError]
    while pending:
        cls = pending.pop()
        table[cls.__name__] = cls.error_class
        pending.extend(cls.__subclasses__())
    return table


def _root(error: Any, fallback: str) -> tuple[str, str]:
    return root_error(error) or ("RunFailure", fallback)


def failure_of_run(instance: DagsterInstance, run_id: str) -> RunFailure:
    """The step that ended a failed run and its error, read from the run's Dagster events.

    A run with no failed step died around its steps (crash, kill, timeout, resource set-up, never
    started): that is an ``infrastructure`` failure at the last step it started, or at ``launch``.
    """
    entries = instance.all_logs(
        run_id,
        of_type={
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_UP_FOR_RETRY,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.RUN_FAILURE,
            DagsterEventType.ENGINE_EVENT,
        },
    )
    events = [entry.dagster_event for entry in entries if entry.dagster_event is not None]
    container = _container_report(events)
    failures = [e for e in events if e.event_type == DagsterEventType.STEP_FAILURE]
    started = [e.step_key for e in events if e.event_type == DagsterEventType.STEP_START]
    if failures:
        failed = failures[-1]
        step_key = failed.step_key or ""
        error = failed.step_failure_data.error
        error_type, message = _root(error, failed.message or "step failed")
        error_class = _error_classes().get(error_type) or (
            # Anything else was retried by the step's policy until it ran out.
            "transient"
            if error is not None
            and error.cls_name in ("RetryRequested", "RetryRequestedFromPolicy")
            else "permanent"
        )
    else:
        run_failures = [e for e in events if e.event_type == DagsterEventType.RUN_FAILURE]
        step_key = next((key for key in reversed(started) if key), "")
        error_class, error_type = "infrastructure", "RunFailure"
        message = "the run failed without a failed step"
        if run_failures:
            data = run_failures[-1].event_specific_data
            reason = getattr(data, "failure_reason", None)
            error_type, message = _root(
                getattr(data, "error", None), run_failures[-1].message or message
            )
            if error_type == "RunFailure" and reason is not None:
                error_type = reason.value  # e.g. a worker that died: no error, only a reason
        if container is not None:
            # Dagster's own message (a timeout, a failed health check) first, then the
            # container's end: its exit code, OOM flag and the last thing it said.
            first = message.splitlines()[0] if message else ""
            message = first if container[0] in first else f"{first} {container[0]}".strip()
    retries = sum(
        1
        for e in events
        if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == step_key
    )
    return RunFailure(
        step=step_key.removeprefix("order_") or LAUNCH_STEP,
        error_class=error_class,
        error_type=error_type,
        message=one_line(message),
        attempts=(retries + 1) if step_key in started else 0,
        worker_output=container[1] if container is not None and not failures else None,
    )


def _container_report(events: list[Any]) -> tuple[str, str] | None:
    """(headline, output) of the run launcher's last report of the run's container, if any."""
    for event in reversed(events):
        if event.event_type != DagsterEventType.ENGINE_EVENT:
            continue
        metadata = getattr(event.event_specific_data, "metadata", None) or {}
        if CONTAINER_OUTPUT_KEY in metadata:
            headline = metadata.get(CONTAINER_HEADLINE_KEY)
            return (
                str(getattr(headline, "value", headline) or ""),
                str(getattr(metadata[CONTAINER_OUTPUT_KEY], "value", "")),
            )
    return None


def dagster_will_retry(instance: DagsterInstance, run: DagsterRun) -> bool | None:
    """Whether Dagster's run retries will run this failed run again; None: not said yet."""
    if not instance.run_retries_enabled:
        return False
    tag = run.tags.get(WILL_RETRY_TAG)
    return None if tag is None else tag.lower() == "true"


def step_failure_is_final(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether a step that failed for good ends the order's run for good (no run retry)."""
    if not instance.run_retries_enabled:
        return True
    retry_on_step_failure = run.tags.get(RETRY_ON_STEP_FAILURE_TAG)
    if retry_on_step_failure is None:
        return not instance.run_retries_retry_on_asset_or_op_failure
    return retry_on_step_failure.lower() != "true"


def _is_latest_run(instance: DagsterInstance, run: DagsterRun, order_id: str) -> bool:
    [latest] = instance.get_runs(RunsFilter(tags={PARTITION_TAG: order_id}), limit=1) or [run]
    return latest.run_id == run.run_id


def settle_failed_run(
    store: BusinessStore, instance: DagsterInstance, run: DagsterRun, *, step_failed: bool = False
) -> Verdict:
    """Decide, once, what the failed ``run`` means for its order, and apply it.

    ``step_failed`` says the caller knows a step failed for good (the failure hook, called while
    the run is still ending); otherwise the run must have ended, and Dagster must have said
    whether it retries it.
    """
    order_id = order_of_run(run.tags)
    if order_id is None:
        return Verdict.NOT_AN_ORDER_RUN
    if step_failed:
        if not step_failure_is_final(instance, run):
            return Verdict.UNDECIDED  # the sensor judges it once Dagster has decided
    else:
        try:
            if store.orders.status(order_id) in _SETTLED:
                return Verdict.ALREADY_SETTLED  # judged before (e.g. by the hook)
        except UnknownOrder:
            return Verdict.UNKNOWN_ORDER
        will_retry = dagster_will_retry(instance, run)
        if will_retry is None:
            return Verdict.UNDECIDED
        if will_retry:
            return Verdict.RETRIED_BY_DAGSTER
        if not _is_latest_run(instance, run, order_id):
            return Verdict.SUPERSEDED
    failure = failure_of_run(instance, run.run_id)
    if failure.error_type == errors.OrderTaken.__name__:
        return Verdict.TAKEN
    try:
        return _apply(store, order_id, run.run_id, failure)
    except UnknownOrder:
        return Verdict.UNKNOWN_ORDER
    except IllegalTransition:
        return Verdict.ALREADY_SETTLED  # another caller settled it between our read and write


def _apply(store: BusinessStore, order_id: str, run_id: str, failure: RunFailure) -> Verdict:
    status = store.orders.status(order_id)
    if status in (OrderStatus.QUEUED, OrderStatus.REPLAYED):
        # The run died before its first step took the order in: take it in, to fail it.
        status = store.orders.claim(order_id, run_id=run_id, step=failure.step, lease_seconds=None)
    if status is OrderStatus.PROCESSING:
        if failure.error_class == "budget":
            store.dead_letters.park_for_budget(
                order_id, run_id=run_id, step=failure.step, message=failure.message
            )
            return Verdict.WAITING_BUDGET
        store.orders.transition(
            order_id,
            OrderStatus.FAILED,
            run_id=run_id,
            step=failure.step,
            error=failure.message,
            error_class=failure.error_class,
        )
        status = OrderStatus.FAILED
    if status is not OrderStatus.FAILED:
        return Verdict.ALREADY_SETTLED
    store.dead_letters.dead_letter(order_id, run_id=run_id, **failure.letter())
    return Verdict.DEAD_LETTERED


NO_RUN = "none"  # the run id of a letter for an order no run could be launched for


def settle_unlaunchable(store: BusinessStore, order_id: str, reason: str) -> Verdict:
    """Dead-letter an order that no run can be launched for, so one bad item never blocks a tick."""
    failure = RunFailure(
        step=LAUNCH_STEP,
        error_class="permanent",
        error_type="NotLaunchable",
        message=one_line(reason),
        attempts=0,
    )
    try:
        return _apply(store, order_id, NO_RUN, failure)
    except UnknownOrder:
        return Verdict.UNKNOWN_ORDER
    except IllegalTransition:
        return Verdict.ALREADY_SETTLED


def settle_failed_runs(
    store: BusinessStore, instance: DagsterInstance, *, after: float | None, limit: int = 100
) -> tuple[dict[str, Verdict], float | None]:
    """Settle the failed order runs that ended after the ``after`` timestamp, oldest first.

    Returns the verdict per run and the new cursor: the time up to which every failed run has
    been judged. A run Dagster has not decided about yet keeps the cursor before it, so it is
    judged again on the next call (settling is idempotent, so the runs after it may be too).
    """
    records = instance.get_run_records(
        RunsFilter(
            job_name=ORDER_PIPELINE,
            statuses=[DagsterRunStatus.FAILURE],
            updated_after=datetime.fromtimestamp(after, tz=UTC) if after is not None else None,
        ),
        limit=limit,
        order_by="update_timestamp",
        ascending=True,
    )
    verdicts: dict[str, Verdict] = {}
    cursor = after
    waiting = False
    for record in records:
        verdict = settle_failed_run(store, instance, record.dagster_run)
        verdicts[record.dagster_run.run_id] = verdict
        if verdict is Verdict.UNDECIDED:
            waiting = True
        elif not waiting:
            cursor = record.update_timestamp.timestamp()
    return verdicts, cursor
