"""Sensors: the order queue, the drop folder, dead-lettering failed runs, launching replays.

Exactly once: every launch carries a run key derived from the order (``order-<id>`` for the
queue, ``replay-<id>-<n>`` for the n-th replay). Dagster launches a run key once per sensor, so
a sensor that runs again, or a daemon restarted mid-tick, re-requests without launching twice;
and because the queue is read afresh every tick, nothing requested before a crash is skipped.
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
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from dagster._core.storage.tags import WILL_RETRY_TAG

from agentforge_dagster.domain.errors import IllegalTransition, InvalidOrder
from agentforge_dagster.domain.models import parse_order
from agentforge_dagster.execution.assets import ORDERS_PARTITIONS
from agentforge_dagster.orchestration.dead_letters import (
    dead_letter_failed_run,
    replay_selection,
    resume_waiting_for_budget,
)
from agentforge_dagster.orchestration.jobs import ORDER_PIPELINE
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

PARTITION_TAG = "dagster/partition"
ORDER_TAG = "agentforge/order_id"


def order_run_key(order_id: str) -> str:
    return f"order-{order_id}"


def queue_requests(store: BusinessStore, batch: int) -> tuple[list[RunRequest], list[str]]:
    """Run requests for the queued orders, and the order ids (the partitions they need)."""
    order_ids = store.claim_for_launch(batch)
    requests = [
        RunRequest(
            run_key=order_run_key(order_id), partition_key=order_id, tags={ORDER_TAG: order_id}
        )
        for order_id in order_ids
    ]
    return requests, order_ids


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


def take_drop_folder(store: BusinessStore, folder: Path) -> dict[str, int]:
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
                store.submit(order, source=f"drop:{path.name}")
                counts["queued"] += 1
            except IllegalTransition:
                counts["already_queued"] += 1  # a file taken before a crash, seen again
        done.mkdir(exist_ok=True)
        shutil.move(str(path), done / path.name)
    return counts


def build_sensors(settings: AgentForgeSettings) -> list[SensorDefinition]:
    interval = settings.sensor_interval_seconds

    @sensor(
        name="order_queue",
        job_name=ORDER_PIPELINE,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launch one order_pipeline run per queued order (run key order-<id>).",
    )
    def order_queue_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        requests, order_ids = queue_requests(store.get_store(), settings.queue_batch)
        partitions = ORDERS_PARTITIONS.name or "orders"
        new = [o for o in order_ids if not context.instance.has_dynamic_partition(partitions, o)]
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[ORDERS_PARTITIONS.build_add_request(new)] if new else [],
        )

    @sensor(
        name="order_drop_folder",
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Queue orders from JSON/CSV files dropped in AGENTFORGE_DROP_DIR.",
    )
    def drop_folder_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SkipReason:
        if settings.drop_dir is None or not settings.drop_dir.is_dir():
            return SkipReason("no drop folder configured (AGENTFORGE_DROP_DIR)")
        counts = take_drop_folder(store.get_store(), settings.drop_dir)
        return SkipReason(f"drop folder: {counts}; the order_queue sensor launches the runs")

    @run_failure_sensor(
        name="dead_letter_queue",
        monitored_jobs=None,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Move the order of a failed run to the dead-letter queue.",
    )
    def dead_letter_sensor(context: RunFailureSensorContext, store: BusinessStoreResource) -> None:
        run = context.dagster_run
        order_id = run.tags.get(PARTITION_TAG)
        if run.job_name != ORDER_PIPELINE or order_id is None:
            return
        if run.tags.get(WILL_RETRY_TAG) == "true":
            context.log.info(f"run {run.run_id} will be retried; {order_id} not dead-lettered")
            return
        message = context.failure_event.message or "run failed"
        if dead_letter_failed_run(store.get_store(), order_id, run.run_id, message):
            context.log.info(f"order {order_id} dead-lettered after run {run.run_id}")

    @sensor(
        name="dead_letter_replays",
        job_name=ORDER_PIPELINE,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Launch replays of dead letters, from the failed step on (run key "
        "replay-<id>-<n>).",
    )
    def replay_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> list[RunRequest]:
        return [
            RunRequest(
                run_key=row["replay_run_key"],
                partition_key=row["order_id"],
                asset_selection=replay_selection(row["failed_step"]),
                tags={ORDER_TAG: row["order_id"], "agentforge/replay_of": row["run_id"]},
            )
            for row in store.get_store().replays_to_launch()
        ]

    @sensor(
        name="budget_resume",
        minimum_interval_seconds=max(interval, 60),
        default_status=DefaultSensorStatus.RUNNING,
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
