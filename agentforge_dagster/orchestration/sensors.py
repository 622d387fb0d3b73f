"""Sensors: the order queue, the drop folder, dead-lettering failed runs, launching replays.

Exactly once: every launch carries a run key derived from the order (``order-<id>`` for the
queue, ``replay-<id>-<n>`` for the n-th replay). Dagster launches a run key once per sensor, so
a sensor that runs again, or a daemon restarted mid-tick, re-requests without launching twice;
and because the queue is read afresh every tick, nothing requested before a crash is skipped.

One bad item never stops a tick: an order that cannot be launched is dead-lettered with the
reason (audited, in the sensor's log and in ``agentforge dlq list``), and the rest go on.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from agentforge_dagster.domain.errors import IllegalTransition, InvalidOrder
from agentforge_dagster.domain.models import parse_order
from agentforge_dagster.domain.runs import ORDER_PIPELINE, ORDER_TAG, PARTITION_TAG
from agentforge_dagster.orchestration.dead_letters import (
    ReplayPlan,
    planned_replays,
    resume_waiting_for_budget,
)
from agentforge_dagster.orchestration.failures import settle_failed_runs, settle_unlaunchable
from agentforge_dagster.orchestration.intake import (
    NotLaunchable,
    check_launchable,
    register_orders,
    submit_order,
)
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

UNFINISHED_STATUSES = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
)


def order_run_key(order_id: str) -> str:
    return f"order-{order_id}"


def launchable(
    context: SensorEvaluationContext,
    store: BusinessStore,
    order_ids: list[str],
) -> list[str]:
    """The orders runs can be launched for (partitions registered); the rest are dead-lettered.

    Each order is checked alone, so one that cannot be launched is set aside with its reason and
    the others still go.
    """
    ready = []
    for order_id in order_ids:
        try:
            check_launchable(order_id)
        except NotLaunchable as exc:
            verdict = settle_unlaunchable(store, order_id, str(exc))
            context.log.warning(f"order {order_id!r} not launched ({verdict.value}): {exc}")
            continue
        ready.append(order_id)
    register_orders(context.instance, ready)
    return ready


def orders_with_unfinished_runs(instance: DagsterInstance) -> set[str]:
    """Orders a run is queued or running for already (e.g. launched by hand from the UI)."""
    runs = instance.get_runs(
        RunsFilter(job_name=ORDER_PIPELINE, statuses=list(UNFINISHED_STATUSES))
    )
    return {order_id for run in runs if (order_id := run.tags.get(PARTITION_TAG))}


def queue_requests(
    context: SensorEvaluationContext, store: BusinessStore, batch: int
) -> list[RunRequest]:
    """Run requests for the queued orders (run key ``order-<id>``) that no run has taken yet."""
    busy = orders_with_unfinished_runs(context.instance)
    claimed = [order_id for order_id in store.claim_for_launch(batch) if order_id not in busy]
    return [
        RunRequest(
            run_key=order_run_key(order_id), partition_key=order_id, tags={ORDER_TAG: order_id}
        )
        for order_id in launchable(context, store, claimed)
    ]


def replay_requests(context: SensorEvaluationContext, store: BusinessStore) -> list[RunRequest]:
    """Run requests for the replays asked for, each starting at its plan's step."""
    plans: dict[str, ReplayPlan] = {plan.order_id: plan for plan in planned_replays(store)}
    return [
        RunRequest(
            run_key=plans[order_id].run_key,
            partition_key=order_id,
            asset_selection=plans[order_id].asset_selection,
            tags=plans[order_id].tags,
        )
        for order_id in launchable(context, store, list(plans))
    ]


def read_drop_file(path: Path) -> list[tuple[str, bytes | dict[str, Any]]]:
    """The orders in a dropped JSON (object or list) or CSV file, each with a stable id."""
    raw = path.read_bytes()
    digest = hashlib.sha256(path.name.encode() + raw).hexdigest()[:10]
    rows: list[Any]
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        except UnicodeDecodeError:
            return [(f"drop-{digest}-0", raw)]
    else:
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return [(f"drop-{digest}-0", raw)]  # parse_order names the problem
        rows = parsed if isinstance(parsed, list) else [parsed]
    return [
        (
            f"drop-{digest}-{index}",
            {"order_id": f"drop-{digest}-{index}", **row} if isinstance(row, dict) else row,
        )
        for index, row in enumerate(rows)
    ]


def take_drop_folder(
    store: BusinessStore, instance: DagsterInstance, folder: Path
) -> dict[str, int]:
    """Queue every order in the folder's files, record every refusal, move files to done/."""
    counts = {"files": 0, "queued": 0, "rejected": 0, "already_queued": 0}
    done = folder / "done"
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv")):
        counts["files"] += 1
        for _, payload in read_drop_file(path):
            try:
                order = parse_order(payload)  # type: ignore[arg-type]
            except InvalidOrder as exc:
                text = (
                    payload.decode("utf-8", "backslashreplace")
                    if isinstance(payload, bytes)
                    else json.dumps(payload, default=str)
                )
                store.reject(text, exc.errors, source=f"drop:{path.name}")
                counts["rejected"] += 1
                continue
            try:
                submit_order(store, instance, order, source=f"drop:{path.name}")
                counts["queued"] += 1
            except IllegalTransition:
                counts["already_queued"] += 1  # a file taken before a crash, seen again
        done.mkdir(exist_ok=True)
        shutil.move(str(path), done / path.name)
    return counts


def build_sensors(settings: AgentForgeSettings) -> list[SensorDefinition]:
    every_tick: dict[str, Any] = {
        "minimum_interval_seconds": settings.sensor_interval_seconds,
        "default_status": DefaultSensorStatus.RUNNING,
    }

    @sensor(
        name="order_queue",
        job_name=ORDER_PIPELINE,
        **every_tick,
        description="Launch one order_pipeline run per queued order (run key order-<id>).",
    )
    def order_queue_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> list[RunRequest]:
        return queue_requests(context, store.get_store(), settings.queue_batch)

    @sensor(
        name="order_drop_folder",
        **every_tick,
        description="Queue orders from JSON/CSV files dropped in AGENTFORGE_DROP_DIR.",
    )
    def drop_folder_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SkipReason:
        if settings.drop_dir is None or not settings.drop_dir.is_dir():
            return SkipReason("no drop folder configured (AGENTFORGE_DROP_DIR)")
        counts = take_drop_folder(store.get_store(), context.instance, settings.drop_dir)
        return SkipReason(f"drop folder: {counts}; the order_queue sensor launches the runs")

    @sensor(
        name="dead_letter_queue",
        **every_tick,
        description="Settle every failed order run once Dagster has said whether it retries it: "
        "a run it retries is left to the retry, any other moves its order to the dead letters.",
    )
    def dead_letter_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SkipReason:
        verdicts, cursor = settle_failed_runs(
            store.get_store(),
            context.instance,
            after=float(context.cursor) if context.cursor else None,
        )
        if cursor is not None:
            context.update_cursor(str(cursor))
        for run_id, verdict in verdicts.items():
            context.log.info(f"run {run_id}: {verdict.value}")
        return SkipReason(f"settled {len(verdicts)} failed runs")

    @sensor(
        name="dead_letter_replays",
        job_name=ORDER_PIPELINE,
        **every_tick,
        description="Launch replays of dead letters, from the failed step on (run key "
        "replay-<id>-<n>).",
    )
    def replay_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> list[RunRequest]:
        return replay_requests(context, store.get_store())

    @sensor(
        name="budget_resume",
        **{**every_tick, "minimum_interval_seconds": max(settings.sensor_interval_seconds, 60)},
        description="Resume orders paused for the model budget once it allows (cap raised or "
        "new month); dead_letter_replays then launches them.",
    )
    def budget_sensor(context: SensorEvaluationContext, store: BusinessStoreResource) -> SkipReason:
        resumed = resume_waiting_for_budget(store.get_store(), settings.monthly_budget_usd)
        return SkipReason(f"resumed {len(resumed)} orders waiting for the budget")

    return [
        order_queue_sensor,
        drop_folder_sensor,
        dead_letter_sensor,
        replay_sensor,
        budget_sensor,
    ]
