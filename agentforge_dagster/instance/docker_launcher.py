"""The Docker run launcher of the deployment: per-run resource caps, and the image a run ran in.

Dagster's ``DockerRunLauncher`` has one ``container_kwargs`` for the whole deployment. Orders differ
(a long press release needs more memory than a product blurb), so a run may ask for its own caps
with tags (``agentforge/mem_limit: 512m``, ``agentforge/nano_cpus: 500000000``); the operator's
maxima (``max_mem_limit``, ``max_nano_cpus``; by default the ``container_kwargs`` values) bound what
a tag can get, and a request above them is clamped and reported as an engine event on the run.

Each run container also gets ``AGENTFORGE_IMAGE`` (the tag it runs) and ``AGENTFORGE_IMAGE_ID``
(the local image id), which every step records in its audit row and metadata, so a roll-back can
be traced to the runs it affected.

The image is the one the code location serves *now*: asked of its gRPC server when the run is
launched, not read from the daemon's copy of the workspace (refreshed only every 60 s), so runs
launched right after ``agentforge deploy`` already use the new image.

Secrets reach a run container as files, never as values in its environment (``docker inspect``
shows the environment to anyone with the engine's API): the host folder ``secrets_dir`` is mounted
read-only at ``/run/secrets``, and for each name in ``secrets`` the container gets ``NAME_FILE``,
which the image's entrypoint turns into ``NAME`` inside the process. A secret named in ``env_vars``
too is refused when the launcher is built.

Run containers are hardened unless the operator's ``container_kwargs`` say otherwise: read-only
root filesystem with a writable ``/tmp``, every capability dropped, ``no-new-privileges``; the
image's own non-root user.

A run container resolves what the daemon resolves: with ``copy_host_entries`` the launcher copies
the host entries of its own ``/etc/hosts`` that Docker's defaults do not explain (in compose, the
daemon service's ``extra_hosts``: one list, no second copy) into every run container, and the
container's command first checks that every configured host resolves
(``agentforge_dagster.execution.hosts``), ending at once with a message naming the host if not.

A run container that dies says why, at once. Containers are not auto-removed (that lost their
state and their output): a watch thread in the daemon (started by the first launch or health
check there) fails a STARTING run whose container has already exited within one poll — Dagster's
run monitoring does not health-check STARTING runs and would wait out ``start_timeout_seconds`` —
and, like :meth:`get_run_worker_debug_info` (which run monitoring calls at its start and cancel
timeouts and on a failed health check), records the container's exit code, OOM flag and last
lines of output as an engine event with metadata, which the order's dead letter carries
(``orchestration/failures.py``). Then it removes the container; containers of successful runs are
removed too. It is not a sensor because sensors run in the code server, which has no access to
the engine: only the daemon is allowed the engine's logs and delete calls
(``docker/proxy/docker-api.allowlist``).

Dagster internals used here (pinned by ``tests/instance/test_internals.py``), and why:

* ``DockerRunLauncher._launch_container_with_command(run, docker_image, command)`` is overridden:
  it is where the container is created, and the only place to add per-run caps, mounts, labels and
  the host check. The public ``container_kwargs`` are one setting for every run.
* ``dagster_docker.utils.DOCKER_CONFIG_SCHEMA`` and ``dagster._utils.merger.merge_dicts`` extend
  the launcher's config schema; ``config_type()`` has no public way to add fields.
* ``dagster_docker.docker_run_launcher.DOCKER_CONTAINER_ID_TAG``,
  ``dagster._core.storage.tags.DOCKER_IMAGE_TAG``: the tags the parent writes and reads.
* ``dagster._core.launcher.base.CheckRunHealthResult``/``WorkerStatus``: the return type of
  ``check_run_worker_health`` (the run-monitoring API has no public export of them).
* ``dagster._core.events.EngineEventData``: metadata on an engine event
  (``instance.report_engine_event`` takes it; there is no public constructor).
* ``dagster._core.remote_origin.GrpcServerCodeLocationOrigin``, ``dagster._grpc.types
  .GetCurrentImageResult``, ``dagster._core.errors.DagsterUserCodeUnreachableError``: asking the
  code server for its current image at launch (the public job origin carries the image only as
  the daemon last loaded it, up to 60 s stale after ``agentforge deploy``).
* ``dagster._core.utils.parse_env_var``, ``dagster._serdes.config_class.ConfigurableClassData``:
  the parent's own env-var parsing and constructor argument, kept identical.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import docker.errors
from dagster import (
    Array,
    BoolSource,
    DagsterInvariantViolationError,
    DagsterRun,
    DagsterRunStatus,
    Field,
    IntSource,
    RunsFilter,
    StringSource,
    deserialize_value,
)
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.storage.tags import DOCKER_IMAGE_TAG
from dagster._core.utils import parse_env_var
from dagster._grpc.types import GetCurrentImageResult
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.merger import merge_dicts
from dagster_docker import DockerRunLauncher
from dagster_docker.docker_run_launcher import DOCKER_CONTAINER_ID_TAG
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA

from agentforge_dagster.domain.runs import CONTAINER_OUTPUT_KEY
from agentforge_dagster.execution.containers import (
    HARDENING,
    HOST_CHECK,
    IMAGE_ID_TAG,
    MEM_LIMIT_TAG,
    NANO_CPUS_TAG,
    NEVER_FORWARDED,
    ROLE_LABEL,
    SECRETS_MOUNT,
    CapDecision,
    ContainerReport,
    container_death,
    decide_cap,
    parse_memory,
    trace_environment,
    with_volumes,
)
from agentforge_dagster.execution.hosts import host_entries

FINISHED = frozenset(
    {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
)
# Finished runs a starting watch looks at, in case their containers were left behind.
ADOPT_HOURS = 24
ADOPT_LIMIT = 1000
log = logging.getLogger(__name__)

CAPPED_DOCKER_CONFIG_SCHEMA = merge_dicts(
    DOCKER_CONFIG_SCHEMA,
    {
        "max_mem_limit": Field(
            StringSource,
            is_required=False,
            description="Largest memory a run may ask for with the agentforge/mem_limit tag "
            "(default: container_kwargs.mem_limit).",
        ),
        "max_nano_cpus": Field(
            IntSource,
            is_required=False,
            description="Largest CPU share (1e9 = one CPU) a run may ask for with the "
            "agentforge/nano_cpus tag (default: container_kwargs.nano_cpus).",
        ),
        "secrets_dir": Field(
            StringSource,
            is_required=False,
            description="Host folder of secret files (one per variable, named in lower case), "
            f"mounted read-only at {SECRETS_MOUNT} in every run container.",
        ),
        "secrets": Field(
            Array(str),
            is_required=False,
            default_value=[],
            description="Variables a run gets as NAME_FILE=/run/secrets/name, never as values.",
        ),
        "copy_host_entries": Field(
            BoolSource,
            is_required=False,
            default_value=False,
            description="Give every run container the host entries of the launching process's "
            "/etc/hosts (in compose: the daemon's extra_hosts), so it resolves what it does.",
        ),
        "check_hosts": Field(
            BoolSource,
            is_required=False,
            default_value=True,
            description="A run container first checks that every configured host resolves "
            "(agentforge_dagster.execution.hosts) and ends at once, naming the host, if not.",
        ),
        "watch_interval_seconds": Field(
            IntSource,
            is_required=False,
            description="How often the daemon looks at the containers it launched (a STARTING "
            "run whose container exited is failed; finished runs' containers are removed). "
            "Default: run monitoring's poll_interval_seconds.",
        ),
    },
)


class CappedDockerRunLauncher(DockerRunLauncher):
    """``DockerRunLauncher`` with per-run caps from tags and the image recorded in each run."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        max_mem_limit: str | None = None,
        max_nano_cpus: int | None = None,
        secrets_dir: str | None = None,
        secrets: list[str] | None = None,
        copy_host_entries: bool = False,
        check_hosts: bool = True,
        watch_interval_seconds: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inst_data=inst_data, **kwargs)
        self.copy_host_entries = copy_host_entries
        self.check_hosts = check_hosts
        self.watch_interval_seconds = watch_interval_seconds
        self._watch: ContainerWatch | None = None
        self._watch_lock = threading.Lock()
        forwarded = {item.split("=", 1)[0] for item in self.env_vars or []}
        if forwarded & NEVER_FORWARDED:
            raise DagsterInvariantViolationError(
                f"run_launcher: env_vars lists {', '.join(sorted(forwarded & NEVER_FORWARDED))}: "
                "a run container never gets the engine's address"
            )
        self.max_mem_limit = parse_memory(max_mem_limit) if max_mem_limit else None
        self.max_nano_cpus = max_nano_cpus
        self.secrets_dir = secrets_dir
        self.secrets = list(secrets or [])
        as_values = {item.split("=", 1)[0] for item in self.env_vars or []} & set(self.secrets)
        if as_values:
            raise DagsterInvariantViolationError(
                f"run_launcher: {', '.join(sorted(as_values))} listed both in env_vars and in "
                "secrets: a secret goes to run containers as a file only; remove it from env_vars"
            )
        if self.secrets and not self.secrets_dir:
            raise DagsterInvariantViolationError(
                "run_launcher: secrets are named but secrets_dir (the host folder holding them) "
                "is not set"
            )

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return CAPPED_DOCKER_CONFIG_SCHEMA

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def run_caps(self, run: DagsterRun, container_kwargs: Mapping[str, Any]) -> list[CapDecision]:
        """The memory and CPU caps of this run's container."""
        default_mem = container_kwargs.get("mem_limit")
        return [
            decide_cap(
                "mem_limit",
                run.tags.get(MEM_LIMIT_TAG),
                parse_memory(default_mem) if default_mem is not None else None,
                self.max_mem_limit,
                parse_memory,
            ),
            decide_cap(
                "nano_cpus",
                run.tags.get(NANO_CPUS_TAG),
                container_kwargs.get("nano_cpus"),
                self.max_nano_cpus,
                int,
            ),
        ]

    def serving_image(self, run: DagsterRun) -> str | None:
        """The image the run's code location serves now (its gRPC server's current image).

        None when the location is not a gRPC server or does not answer: the caller keeps the
        image the run was created with.
        """
        origin = run.remote_job_origin
        location = origin.repository_origin.code_location_origin if origin else None
        if not isinstance(location, GrpcServerCodeLocationOrigin):
            return None
        try:
            answer = deserialize_value(
                location.create_client().get_current_image(), GetCurrentImageResult
            )
        except DagsterUserCodeUnreachableError as exc:  # the known image is still a right one
            self._instance.report_engine_event(
                message=f"Could not ask the code server for its current image ({exc}); "
                "launching in the image the run was created with",
                dagster_run=run,
                cls=self.__class__,
            )
            return None
        return answer.current_image

    def secret_mounts(self) -> tuple[dict[str, str], list[str]]:
        """The NAME_FILE variables and the read-only volume of the secrets folder."""
        if not self.secrets:
            return {}, []
        files = {f"{name}_FILE": f"{SECRETS_MOUNT}/{name.lower()}" for name in self.secrets}
        return files, [f"{self.secrets_dir}:{SECRETS_MOUNT}:ro"]

    def _launch_container_with_command(
        self, run: DagsterRun, docker_image: str, command: list[str]
    ) -> None:
        """As the base class does it, plus the serving image, caps, secret files, hardening,
        the image's tag and id, and a role label.

        Replaces the base method (dagster-docker 0.29) rather than wrapping it: the container's
        environment and kwargs are built inside it, with no hook to add to them.
        """
        serving = self.serving_image(run)
        if serving and serving != docker_image:
            self._instance.report_engine_event(
                message=f"The code location now serves {serving}: the run is launched in it "
                f"(it was created with {docker_image})",
                dagster_run=run,
                cls=self.__class__,
            )
            docker_image = serving
        container_context = self.get_container_context(run)
        client = self._get_client(container_context)
        image_id = self._image_id(client, docker_image)

        secret_files, secret_volumes = self.secret_mounts()
        environment = dict(parse_env_var(env_var) for env_var in container_context.env_vars)
        environment.update(trace_environment(os.environ))
        environment.update(secret_files)
        environment["DAGSTER_RUN_JOB_NAME"] = run.job_name
        environment["AGENTFORGE_IMAGE"] = docker_image
        environment["AGENTFORGE_IMAGE_ID"] = image_id

        container_kwargs: dict[str, Any] = {**HARDENING, **container_context.container_kwargs}
        if secret_volumes:
            container_kwargs["volumes"] = with_volumes(
                container_kwargs.get("volumes"), secret_volumes
            )
        container_kwargs.pop("stop_timeout", None)
        configured_labels = container_kwargs.pop("labels", {})
        labels = (
            {key: "" for key in configured_labels}
            if isinstance(configured_labels, list)
            else dict(configured_labels)  # a copy: the operator's dict serves every launch
        )
        labels.update(
            {"dagster/run_id": run.run_id, "dagster/job_name": run.job_name, ROLE_LABEL: "run"}
        )

        notes = []
        for cap in self.run_caps(run, container_kwargs):
            if cap.value is not None:
                container_kwargs[cap.kwarg] = cap.value
            if cap.note:
                notes.append(cap.note)
        if "mem_limit" in container_kwargs and "memswap_limit" not in container_kwargs:
            # Memory plus swap equal to the memory cap: over it the worker is OOM-killed, it
            # does not crawl on swap.
            container_kwargs["memswap_limit"] = container_kwargs["mem_limit"]
        if notes:
            self._instance.report_engine_event(
                message="Per-run caps: " + "; ".join(notes), dagster_run=run, cls=self.__class__
            )

        if self.copy_host_entries:
            configured = container_kwargs.get("extra_hosts") or {}
            container_kwargs["extra_hosts"] = {**host_entries(), **dict(configured)}
        if self.check_hosts:
            command = [*HOST_CHECK, *command]

        networks = container_context.networks
        container = client.containers.create(
            image=docker_image,
            command=command,
            detach=True,
            environment=environment,
            network=networks[0] if networks else None,
            labels=labels,
            **container_kwargs,
        )
        for network_name in networks[1:]:
            client.networks.get(network_name).connect(container)

        caps = ", ".join(
            f"{key}={container_kwargs[key]}"
            for key in ("mem_limit", "nano_cpus", "pids_limit")
            if key in container_kwargs
        )
        self._instance.report_engine_event(
            message=f"Launching run in a new container {container.id} with image {docker_image} "
            f"({image_id}); caps: {caps or 'none'}",
            dagster_run=run,
            cls=self.__class__,
        )
        self._instance.add_run_tags(
            run.run_id,
            {
                DOCKER_CONTAINER_ID_TAG: container.id,
                DOCKER_IMAGE_TAG: docker_image,
                IMAGE_ID_TAG: image_id,
            },
        )
        container.start()
        self.watch().follow(run.run_id)

    def watch(self) -> ContainerWatch:
        """The daemon's watch over the containers it launched, started on first use."""
        with self._watch_lock:
            if self._watch is None:
                interval = (
                    self.watch_interval_seconds
                    or self._instance.run_monitoring_poll_interval_seconds
                )
                self._watch = ContainerWatch(self, float(interval))
                self._watch.start()
            return self._watch

    def _image_id(self, client: Any, docker_image: str) -> str:
        """The local id of the image; pulled first only if the engine does not have it."""
        try:
            return str(client.images.get(docker_image).id)
        except docker.errors.ImageNotFound:
            return str(client.images.pull(docker_image).id)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """Whether the run's container runs; if not, why it ended, in one line.

        Called by run monitoring in the daemon only, so it also starts the container watch there
        (a restarted daemon's first poll picks up what the previous one launched).
        """
        self.watch().follow(run.run_id)
        result = super().check_run_worker_health(run)
        container_id = run.tags.get(DOCKER_CONTAINER_ID_TAG)
        if result.status is WorkerStatus.RUNNING or not container_id:
            return result
        client = self._get_client(self.get_container_context(run))
        if result.status is WorkerStatus.NOT_FOUND:
            death = container_death(client, container_id)
            return CheckRunHealthResult(result.status, msg=f"{result.msg} {death}".strip())
        report = ContainerReport.of(client, container_id)
        return CheckRunHealthResult(result.status, msg=report.headline() if report else result.msg)

    def get_run_worker_debug_info(
        self, run: DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        """What the run's container says of itself: state, exit code, OOM, its last lines.

        Run monitoring calls this at its start and cancel timeouts and when a health check
        failed, just before it fails the run; the report also goes into the run's event log with
        its figures as metadata (the order's dead letter reads them from there). The output is
        included whatever ``include_container_logs`` says: it is bounded to the last lines.
        """
        container_id = run.tags.get(DOCKER_CONTAINER_ID_TAG)
        if not container_id:
            return None
        report = ContainerReport.of(self._get_client(self.get_container_context(run)), container_id)
        if report is None:
            return None
        self.record(run, report)
        return report.text()

    def record(self, run: DagsterRun, report: ContainerReport) -> None:
        """The report as an engine event of the run, figures as metadata."""
        self._instance.report_engine_event(
            message=report.text(),
            dagster_run=run,
            engine_event_data=EngineEventData(metadata=report.metadata()),
            cls=self.__class__,
        )

    def remove_container(self, run: DagsterRun) -> bool:
        """Remove the run's container (killed first if it still runs); False if it is gone."""
        container_id = run.tags.get(DOCKER_CONTAINER_ID_TAG)
        if not container_id:
            return False
        client = self._get_client(self.get_container_context(run))
        try:
            client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            return False
        return True


class ContainerWatch(threading.Thread):
    """The daemon's eye on the containers it launched, one pass every ``interval`` seconds.

    A STARTING run whose container has exited is failed with the container's report (Dagster
    would wait out ``start_timeout_seconds``); a finished run's container is removed, once its
    report is recorded if the run did not succeed. Runs are followed by id, so a pass costs one
    run lookup and one container inspect per followed run.
    """

    def __init__(self, launcher: CappedDockerRunLauncher, interval: float) -> None:
        super().__init__(name="agentforge-container-watch", daemon=True)
        self.launcher, self.interval = launcher, interval
        self.followed: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def follow(self, run_id: str) -> None:
        with self.lock:
            self.followed.add(run_id)

    def run(self) -> None:
        self.adopt()
        while not self.stopping.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a pass that failed (storage down): the next one tries again
                log.exception("container watch: a pass failed")

    def adopt(self) -> None:
        """Runs a previous daemon launched that may still have a container: follow them too.

        Those in flight, and those that ended in the last ``ADOPT_HOURS`` (a daemon restarted
        between a run's end and the removal of its container left it behind); a run whose
        container is gone already is forgotten at the first pass.
        """
        instance = self.launcher._instance
        since = datetime.now(UTC) - timedelta(hours=ADOPT_HOURS)
        try:
            runs = [
                *instance.get_runs(
                    RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED])
                ),
                *instance.get_runs(
                    RunsFilter(statuses=sorted(FINISHED, key=str), updated_after=since),
                    limit=ADOPT_LIMIT,
                ),
            ]
        except Exception:
            log.exception("container watch: could not list the runs to follow")
            return
        for run in runs:
            if run.tags.get(DOCKER_CONTAINER_ID_TAG):
                self.follow(run.run_id)

    def sweep(self) -> None:
        with self.lock:
            followed = sorted(self.followed)
        instance = self.launcher._instance
        for run_id in followed:
            run = instance.get_run_by_id(run_id)
            if run is None or not run.tags.get(DOCKER_CONTAINER_ID_TAG):
                self.forget(run_id)
                continue
            if run.status is DagsterRunStatus.STARTING:
                self.fail_if_dead(run)
            elif run.status in FINISHED:
                self.clear(run)

    def forget(self, run_id: str) -> None:
        with self.lock:
            self.followed.discard(run_id)

    def fail_if_dead(self, run: DagsterRun) -> None:
        launcher = self.launcher
        client = launcher._get_client(launcher.get_container_context(run))
        report = ContainerReport.of(client, run.tags[DOCKER_CONTAINER_ID_TAG])
        if report is None or not report.exited:
            return
        current = launcher._instance.get_run_by_id(run.run_id)
        if current is None or current.status is not DagsterRunStatus.STARTING:
            return  # it started after all, between the two looks
        launcher.record(run, report)
        launcher._instance.report_run_failed(
            run, f"The run's container ended before the run started. {report.headline()}"
        )

    def clear(self, run: DagsterRun) -> None:
        launcher = self.launcher
        client = launcher._get_client(launcher.get_container_context(run))
        report = ContainerReport.of(client, run.tags[DOCKER_CONTAINER_ID_TAG])
        if report is None:
            self.forget(run.run_id)
            return
        if not report.exited and run.status is DagsterRunStatus.SUCCESS:
            return  # the worker is still on its way out
        if run.status is not DagsterRunStatus.SUCCESS and not _reported(launcher, run):
            launcher.record(run, report)
        launcher.remove_container(run)
        self.forget(run.run_id)


def _reported(launcher: CappedDockerRunLauncher, run: DagsterRun) -> bool:
    """Whether the run's event log already holds a report of its container."""
    from dagster import DagsterEventType

    for entry in launcher._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.event_specific_data if event is not None else None
        if data is not None and CONTAINER_OUTPUT_KEY in (getattr(data, "metadata", None) or {}):
            return True
    return False
