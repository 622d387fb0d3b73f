"""Sensors: the order queue, the drop folder, dead-lettering failed runs, launching replays,
failing runs whose worker died unreported.

Exactly once: every launch carries a run key derived from the order (``order-<id>`` for the
queue, ``replay-<id>-<n>`` for the n-th replay). Dagster launches a run key once per sensor, so
a sensor that runs again, or a daemon restarted mid-tick, re-requests without launching twice;
and because the queue is read afresh every tick, nothing requested before a crash is skipped.

One bad item never stops a tick: an order that cannot be launched is dead-lettered with the
reason (audited, in the sensor's log and in ``agentforge dlq list``), and the rest go on.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import csv
import functools
import hashlib
import io
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from sqlalchemy.exc import SQLAlchemyError

from agentforge_dagster.domain.errors import IllegalTransition, InvalidOrder
from agentforge_dagster.domain.models import load_order_json, parse_order
from agentforge_dagster.domain.runs import ORDER_PIPELINE, PARTITION_TAG
from agentforge_dagster.orchestration.dead_letters import (
    ArtifactInventory,
    ReplayPlan,
    planned_replays,
    request_due_replays,
    resume_waiting_for_budget,
)
from agentforge_dagster.orchestration.failures import settle_failed_runs, settle_unlaunchable
from agentforge_dagster.orchestration.intake import (
    NotLaunchable,
    check_launchable,
    register_orders,
    submit_order,
)
from agentforge_dagster.orchestration.leases import take_back_expired
from agentforge_dagster.orchestration.run_workers import fail_runs_with_dead_workers
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import SensorSettings

NOT_MIGRATED = "the business database is not migrated: run agentforge db upgrade"
F = TypeVar("F", bound=Callable[..., Any])

UNFINISHED_STATUSES = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
)


def _migrated(store: BusinessStore) -> bool:
    """False only when the database answers and has no schema revision (never upgraded)."""
    try:
        return store.schema_revision() is not None
    except SQLAlchemyError:
        return True  # it does not answer: the tick's own error says so


def skip_unless_migrated(evaluate: F) -> F:
    """A tick on a business database never upgraded skips and says what to do, instead of
    failing on a missing table every tick (a fresh stack before ``agentforge db upgrade``)."""

    @functools.wraps(evaluate)  # Dagster reads the context and resource parameters through it
    def tick(context: SensorEvaluationContext, **resources: Any) -> Any:
        try:
            return evaluate(context, **resources)
        except SQLAlchemyError:
            if _migrated(resources["store"].get_store()):
                raise
            context.log.warning(NOT_MIGRATED)
            return SkipReason(NOT_MIGRATED)

    return tick  # type: ignore[return-value]


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
    claimed = [
        order_id for order_id in store.orders.claim_for_launch(batch) if order_id not in busy
    ]
    return [
        RunRequest(
            run_key=order_run_key(order_id),
            partition_key=order_id,
            tags=store.run_tags(order_id),
        )
        for order_id in launchable(context, store, claimed)
    ]


def replay_requests(
    context: SensorEvaluationContext, store: BusinessStore, artifacts: ArtifactInventory
) -> list[RunRequest]:
    """Run requests for the replays asked for, each starting at its plan's step."""
    plans: dict[str, ReplayPlan] = {
        plan.order_id: plan for plan in planned_replays(store, artifacts)
    }
    return [
        RunRequest(
            run_key=plans[order_id].run_key,
            partition_key=order_id,
            asset_selection=plans[order_id].asset_selection,
            tags={**plans[order_id].tags, **store.run_tags(order_id)},
        )
        for order_id in launchable(context, store, list(plans))
    ]


MAX_DROP_FILE_BYTES = 50 * 1024 * 1024


class DropFileUnreadable(OSError):
    """A dropped file that cannot be read as what its name says it is."""


class DropFolderReadOnly(OSError):
    """The drop folder cannot be written: taken files could not be moved out of it."""


def read_drop_file(path: Path) -> list[tuple[str, Any]]:
    """The orders in a dropped JSON (object or list) or CSV file, each with a stable id.

    The id is ``drop-<digest>-<index>``, from the file's name and content and the item's place
    in it, whatever the item is: the same file seen again yields the same ids. An item is
    returned as read (a mapping, or anything else for ``parse_order`` to refuse); a JSON file
    that does not parse is one item, its bytes. Raises ``OSError`` when the file cannot be read,
    :class:`DropFileUnreadable` when a CSV file cannot be read as one.
    """
    raw = _read_own_file(path)
    digest = hashlib.sha256(path.name.encode() + raw).hexdigest()[:10]
    rows: list[Any]
    if path.suffix.lower() == ".csv":
        try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
            rows = [
                {("extra_columns" if key is None else key): value for key, value in row.items()}
                for row in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
            ]
        except UnicodeDecodeError as exc:
            raise DropFileUnreadable(f"not UTF-8 text (bad byte at offset {exc.start})") from exc
        except csv.Error as exc:  # a field over the csv module's limit (128 KiB), a stray NUL
            raise DropFileUnreadable(f"not a CSV file this can read: {exc}") from exc
    else:
        try:
            parsed = load_order_json(raw)
        except InvalidOrder:
            return [(f"drop-{digest}-0", raw)]  # parse_order names the problem
        rows = parsed if isinstance(parsed, list) else [parsed]
    return [(f"drop-{digest}-{index}", row) for index, row in enumerate(rows)]


def _read_own_file(path: Path) -> bytes:
    """The bytes of a regular file that is the folder's own, never what a link points at.

    A symbolic link (even to a file inside the folder), a FIFO, a socket, a device or a folder is
    refused before it is opened; the file is then opened without following links and without
    blocking, and checked again on the descriptor, so a swap between the look and the open reads
    nothing it should not.
    """
    kind = _not_a_regular_file(path)
    if kind is not None:
        raise DropFileUnreadable(f"{kind}: only regular files inside the folder are read")
    if path.resolve().parent != path.parent.resolve():
        raise DropFileUnreadable("it resolves outside the folder")
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise DropFileUnreadable(
                "not a regular file: only regular files inside the folder are read"
            )
        if status.st_size > MAX_DROP_FILE_BYTES:
            raise OSError(f"larger than {MAX_DROP_FILE_BYTES // (1024 * 1024)} MiB")
        return handle.read(MAX_DROP_FILE_BYTES + 1)


def _not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (its own entry, links not followed)."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a device or other special file"


def _drop_payload_text(payload: Any, path: Path) -> str | bytes:
    """What to keep of a refused drop item: its JSON, else (too deep to write) the file's bytes."""
    if isinstance(payload, bytes):
        return payload
    try:
        return json.dumps(payload, default=str)
    except (RecursionError, ValueError, TypeError):
        return _read_own_file(path)  # as the first read: never what a link swapped in points at


def _json_kind(value: Any) -> str:
    kinds = {str: "a string", list: "a list", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


REASON_SUFFIX = ".reason.txt"


def _set_aside(path: Path, folder: Path, companion: str = "") -> Path:
    """Move a taken file into ``folder`` without overwriting one of the same name.

    With ``companion``, the name is also one under which ``<name><companion>`` is free, so the
    file written beside it is new (never an entry, or a link, someone left there).
    """
    folder.mkdir(exist_ok=True)

    def taken(candidate: Path) -> bool:
        beside = candidate.with_name(candidate.name + companion)
        return os.path.lexists(candidate) or (bool(companion) and os.path.lexists(beside))

    target = folder / path.name
    copy = 1
    while taken(target):
        target = folder / f"{path.name}.{copy}"
        copy += 1
    shutil.move(str(path), target)
    return target


def _refuse_drop_file(store: BusinessStore, path: Path, folder: Path, reason: str) -> None:
    """A file that cannot be read: recorded as a refusal and moved to rejected/ with its reason."""
    errors = [f"file: cannot be read ({reason})"]
    store.orders.reject(b"", errors, source=f"drop:{path.name}")
    target = _set_aside(path, folder / "rejected", companion=REASON_SUFFIX)
    reason_file = target.with_name(target.name + REASON_SUFFIX)
    # A new file, never through a link: one planted between the move and here fails the write.
    descriptor = os.open(reason_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(errors[0] + "\n")


def take_drop_folder(
    store: BusinessStore, instance: DagsterInstance, folder: Path
) -> dict[str, int]:
    """Queue every order in the folder's files, record every refusal, move files to done/.

    A file that cannot be read (a directory named ``x.json``, no permission, too large) is
    recorded as refused and moved to ``rejected/`` with a ``.reason.txt`` beside it; the other
    files are taken all the same. A folder files cannot be moved out of is not read at all
    (raises :class:`DropFolderReadOnly`): its files would be taken again on every tick.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DropFolderReadOnly(
            f"drop folder {folder} is read-only for this process: nothing taken from it (make it "
            "writable so taken files can move to done/ and rejected/)"
        )
    counts = {"files": 0, "queued": 0, "rejected": 0, "already_queued": 0}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv")):
        # A link is moved aside as it is (the link, not its target) and nothing of it is read.
        counts["files"] += 1
        try:
            items = read_drop_file(path)
        except OSError as exc:
            _refuse_drop_file(store, path, folder, exc.strerror or str(exc))
            counts["rejected"] += 1
            continue
        for item_id, payload in items:
            try:
                if not isinstance(payload, dict | bytes):  # read once: text is never re-decoded
                    raise InvalidOrder(
                        [f"item {item_id.rsplit('-', 1)[1]}: an order is a JSON object, not "
                         f"{_json_kind(payload)}"]
                    )  # fmt: skip
                order = parse_order(payload, default_order_id=item_id)
                submit_order(store, instance, order, source=f"drop:{path.name}")
                counts["queued"] += 1
            except IllegalTransition:
                counts["already_queued"] += 1  # a file taken before a crash, seen again
            except InvalidOrder as exc:  # a bad order, or its id holds a different order
                text = _drop_payload_text(payload, path)
                store.orders.reject(text, exc.errors, source=f"drop:{path.name}")
                counts["rejected"] += 1
        _set_aside(path, folder / "done")
    return counts


def every_tick(sensors: SensorSettings) -> dict[str, Any]:
    """The arguments of a sensor that runs from the start, every ``sensors.interval_seconds``."""
    return {
        "minimum_interval_seconds": sensors.interval_seconds,
        "default_status": DefaultSensorStatus.RUNNING,
    }


def build_sensors(sensors: SensorSettings, *, budget_usd: float | None) -> list[SensorDefinition]:
    """The order pipeline's sensors, from the sensors' settings and the month's default budget."""
    every = every_tick(sensors)

    @sensor(
        name="order_queue",
        job_name=ORDER_PIPELINE,
        **every,
        description="Launch one order_pipeline run per queued order (run key order-<id>).",
    )
    @skip_unless_migrated
    def order_queue_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> list[RunRequest]:
        return queue_requests(context, store.get_store(), sensors.queue_batch)

    @sensor(
        name="order_drop_folder",
        **every,
        description="Queue orders from JSON/CSV files dropped in AGENTFORGE_DROP_DIR.",
    )
    @skip_unless_migrated
    def drop_folder_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SkipReason:
        if sensors.drop_dir is None or not sensors.drop_dir.is_dir():
            return SkipReason("no drop folder configured (AGENTFORGE_DROP_DIR)")
        try:
            counts = take_drop_folder(store.get_store(), context.instance, sensors.drop_dir)
        except DropFolderReadOnly as exc:
            context.log.error(str(exc))
            return SkipReason(str(exc))
        return SkipReason(f"drop folder: {counts}; the order_queue sensor launches the runs")

    @sensor(
        name="dead_letter_queue",
        **every,
        description="Settle every failed order run once Dagster has said whether it retries it: "
        "a run it retries is left to the retry, any other moves its order to the dead letters.",
    )
    @skip_unless_migrated
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
        **every,
        description="Launch replays of dead letters, from the failed step on, or from the "
        "earliest step whose output is missing from the artifact store (run key replay-<id>-<n>).",
    )
    @skip_unless_migrated
    def replay_sensor(
        context: SensorEvaluationContext,
        store: BusinessStoreResource,
        artifact_io_manager: ResourceParam[ArtifactInventory],
    ) -> list[RunRequest]:
        business = store.get_store()
        due = request_due_replays(business, sensors.dlq_cooldown_seconds, sensors.dlq_max_replays)
        if due:
            context.log.info(f"replays requested after their back-off: {due}")
        return replay_requests(context, business, artifact_io_manager)

    @sensor(
        name="lost_run_workers",
        **every,
        description="Fail started order runs whose worker process died unreported (a code server "
        "whose cleanup thread stopped on a storage error), so Dagster retries them.",
    )
    def lost_run_workers_sensor(context: SensorEvaluationContext) -> SkipReason:
        suspects = json.loads(context.cursor) if context.cursor else []
        failed, suspects = fail_runs_with_dead_workers(context.instance, suspects)
        context.update_cursor(json.dumps(suspects))
        for run_id in failed:
            context.log.warning(f"run {run_id}: its worker died unreported; failed it")
        return SkipReason(f"failed {len(failed)} runs whose worker was gone")

    @sensor(
        name="expired_leases",
        **every,
        description="Take back orders whose runner stopped renewing its lease (a run worker "
        "killed, out of disk, its host gone): the dead run is failed and the order dead-lettered, "
        "to be replayed from its step after the replay cool-down.",
    )
    @skip_unless_migrated
    def expired_leases_sensor(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SkipReason:
        taken = take_back_expired(store.get_store(), context.instance, replay=False)
        for each in taken:
            context.log.warning(each.describe())
        return SkipReason(f"took back {len(taken)} orders whose runner was gone")

    @sensor(
        name="budget_resume",
        **{**every, "minimum_interval_seconds": max(sensors.interval_seconds, 60)},
        description="Resume orders paused for the model budget once it allows (cap raised or "
        "new month); dead_letter_replays then launches them.",
    )
    @skip_unless_migrated
    def budget_sensor(context: SensorEvaluationContext, store: BusinessStoreResource) -> SkipReason:
        resumed = resume_waiting_for_budget(store.get_store(), budget_usd)
        return SkipReason(f"resumed {len(resumed)} orders waiting for the budget")

    return [
        order_queue_sensor,
        drop_folder_sensor,
        dead_letter_sensor,
        replay_sensor,
        lost_run_workers_sensor,
        expired_leases_sensor,
        budget_sensor,
    ]
