"""A run whose worker died and that nobody reported is failed, and its order goes on to a replay.

The worker here is a real ``dagster job execute`` process, SIGKILLed while its draft step waits on a
hung model call: exactly what a code server whose cleanup thread has died leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from agentforge_dagster.orchestration.dead_letters import eligible_for_auto_replay
from agentforge_dagster.orchestration.failures import settle_failed_runs
from agentforge_dagster.orchestration.intake import submit_order
from agentforge_dagster.orchestration.run_workers import (
    fail_runs_with_dead_workers,
    process_alive,
)
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order
from tests.orchestration.daemon import ROOT, wait_until

DAGSTER = str(Path(sys.executable).parent / "dagster")


def test_a_dead_worker_is_failed_once_and_its_order_is_replayed_without_a_person(
    tmp_path: Path, settings: AgentForgeSettings, store: BusinessStore
) -> None:
    settings.storage.dagster_home.mkdir(parents=True)
    (settings.storage.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(settings.storage.dagster_home),
        "AGENTFORGE_HOME": str(settings.storage.home),
        "AGENTFORGE_DRILLS": "true",
        "PYTHONPATH": str(ROOT),
    }
    hang = {"resources": {"faults": {"config": {"hang_first": {"draft": 1}, "hang_seconds": 600}}}}
    (tmp_path / "run.json").write_text(json.dumps(hang))
    with DagsterInstance.from_config(str(settings.storage.dagster_home)) as instance:
        order = submit_order(store, instance, make_order(), source="test")
        worker = subprocess.Popen(
            [
                *(DAGSTER, "job", "execute", "-m", "agentforge_dagster.definitions"),
                *("-j", "order_pipeline", "-c", str(tmp_path / "run.json")),
                *("--tags", json.dumps({"dagster/partition": order.order_id})),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: any(
                    r["event"] == "step_started" and r["step"] == "draft"
                    for r in store.audit.audit_rows(order.order_id)
                ),
                120,
                "the draft step to start",
            )
            [run] = instance.get_runs(RunsFilter(job_name="order_pipeline"))
            assert fail_runs_with_dead_workers(instance) == ([], []), "a live worker is left be"
        finally:
            worker.kill()
            worker.wait(timeout=30)
        assert not process_alive(worker.pid)
        assert instance.get_run_by_id(run.run_id).status is DagsterRunStatus.STARTED

        # First look: a suspect (a live cleanup thread would report it meanwhile); next: failed.
        assert fail_runs_with_dead_workers(instance) == ([], [run.run_id])
        assert instance.get_run_by_id(run.run_id).status is DagsterRunStatus.STARTED
        assert fail_runs_with_dead_workers(instance, [run.run_id]) == ([run.run_id], [])
        assert fail_runs_with_dead_workers(instance, [run.run_id]) == ([], []), "failed once"
        failed = instance.get_run_by_id(run.run_id)
        assert failed is not None and failed.status is DagsterRunStatus.FAILURE
        [event] = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert "worker" in (event.message or "") and str(worker.pid) in (event.message or "")
        steps_failed = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        assert steps_failed == [], "no step failed: Dagster's run retry takes such a run"

        # With no run retry configured, the order is lettered as a blip the auto replay takes.
        settle_failed_runs(store, instance, after=None)
        record = store.orders.get(order.order_id)
        assert record.status.value == "dead_lettered"
        assert record.failed_error_class == "infrastructure"
        assert eligible_for_auto_replay(store, 0, 3) == [order.order_id]


def test_a_zombie_or_missing_pid_is_dead_and_this_process_is_alive(tmp_path: Path) -> None:
    assert process_alive(os.getpid())
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "stat").write_text("123 (python3 (x)) Z 1 123 123")
    assert not process_alive(123, proc=tmp_path)
    assert not process_alive(456, proc=tmp_path)
