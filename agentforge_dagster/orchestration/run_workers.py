"""Runs whose worker died unreported: failed, so Dagster's run retry and the dead letters take them.

With the default run launcher a run executes in a child process of the code server, and the code
server's ``grpc-server-cleanup`` thread is what notices a dead child and fails its run. That thread
has no error handling (``dagster/_grpc/server.py``, ``_cleanup_thread`` →
``_check_for_orphaned_runs``): one storage error — PostgreSQL restarting, say — ends it for good.
From then on that server reports no dead worker, and it never exits either, since the same thread is
what stops it after its heartbeat lapses. Run monitoring cannot step in, because the default
launcher has no run-worker health check: such a run would stay STARTED until its
``dagster/max_runtime``.

So a sensor does that thread's job: a started order run whose worker (the pid Dagster recorded in
"Started process for run") is no longer alive on this host, on two looks a sensor tick apart (the
first look leaves a live cleanup thread time to report it), is failed, with an engine event saying
why. A failure with no failed step is one Dagster's run retry takes. Only the default launcher is
checked: the Docker launcher has its own health check, and its workers are containers.
"""

from __future__ import annotations

from collections.abc import Collection

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)

from agentforge_dagster.domain.runs import ORDER_PIPELINE
from agentforge_dagster.persistence.leases import process_alive


def worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the process a run executes in, as its launch recorded it."""
    for record in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=20
    ).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            return int(str(pid.value))
    return None


def fail_runs_with_dead_workers(
    instance: DagsterInstance, suspects: Collection[str] = ()
) -> tuple[list[str], list[str]]:
    """Fail the started order runs whose worker was already found dead on the last look.

    A run whose worker is gone is a suspect first: the code server, when its cleanup thread is
    alive, reports it within a second, and one report is enough. A suspect still unfinished on
    the next look (the next sensor tick) is failed here. Returns the runs failed and the suspects
    to look at again.
    """
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return [], []
    failed, dead = [], []
    started = instance.get_runs(
        RunsFilter(job_name=ORDER_PIPELINE, statuses=[DagsterRunStatus.STARTED])
    )
    for run in started:
        pid = worker_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        if run.run_id not in suspects:
            dead.append(run.run_id)
            continue
        # Dead since the last look; read the run again: it may have ended just before dying.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue
        message = (
            f"The run worker (pid {pid}) is gone and nothing reported it: its code server's "
            "cleanup thread has stopped (a storage outage). Failing the run so it is retried."
        )
        instance.report_engine_event(message, current)
        instance.report_run_failed(current, message)
        failed.append(run.run_id)
    return failed, dead
