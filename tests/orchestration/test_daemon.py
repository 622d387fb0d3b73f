"""Orders under the real dagster-daemon: sensors, run queue, pools, a SIGKILL mid-way.

The daemon runs with the repository's dagster.yaml (PostgreSQL storage, S3 compute logs, run
monitoring and retries, pools) against a fresh PostgreSQL database and a moto S3 server.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from agentforge_dagster.persistence.io_managers import ensure_bucket
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order
from tests.orchestration.daemon import Daemon, daemon_environment, wait_until

pytestmark = pytest.mark.service
TERMINAL = {"completed", "dead_lettered"}


@pytest.fixture
def deployment(
    tmp_path: Path,
    new_pg_database: Callable[[], str],
    s3_endpoint: str,
    s3_bucket: str,
    s3_client: Any,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Any]]:
    extra = getattr(request, "param", {})
    dagster_url, business_url = new_pg_database(), new_pg_database()
    ensure_bucket(s3_client, s3_bucket)
    home, env = daemon_environment(
        tmp_path,
        dagster_url=dagster_url,
        business_url=business_url,
        s3_endpoint=s3_endpoint,
        bucket=s3_bucket,
        extra=extra,
    )
    store = BusinessStore.from_url(business_url)
    store.upgrade()
    daemon = Daemon(home, env, tmp_path / "daemon.log")
    saved = {
        k: os.environ.get(k)
        for k in (
            "DAGSTER_HOME",
            "DAGSTER_PG_URL",
            "AGENTFORGE_S3_BUCKET",
            "AGENTFORGE_S3_ENDPOINT_URL",
        )
    }
    os.environ.update({k: env[k] for k in saved})
    try:
        with DagsterInstance.get() as instance:
            yield {
                "store": store,
                "daemon": daemon,
                "instance": instance,
                "log": tmp_path / "daemon.log",
            }
    finally:
        daemon.stop_everything()
        store.engine.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def statuses(store: BusinessStore, ids: list[str]) -> Counter[str]:
    current = store.statuses()
    return Counter(current.get(order_id, "lost") for order_id in ids)


@pytest.mark.parametrize(
    "deployment", [{"AGENTFORGE_FAULT_RATE": "0.3", "AGENTFORGE_FAULT_SEED": "5"}], indirect=True
)
def test_hundred_orders_with_faults_and_a_killed_daemon_none_lost_none_twice(
    deployment: dict[str, Any],
) -> None:
    store: BusinessStore = deployment["store"]
    daemon: Daemon = deployment["daemon"]
    instance: DagsterInstance = deployment["instance"]
    log: Path = deployment["log"]
    ids = [store.submit(make_order(i), source="test").order_id for i in range(100)]

    daemon.start()
    wait_until(
        lambda: sum(statuses(store, ids)[s] for s in TERMINAL) >= 25,
        600,
        "a quarter of the orders to finish",
        log,
    )
    daemon.kill()
    finished_at_kill = sum(statuses(store, ids)[s] for s in TERMINAL)
    assert finished_at_kill < 100, "the kill should land mid-way"
    daemon.start()
    wait_until(
        lambda: sum(statuses(store, ids)[s] for s in TERMINAL) == 100,
        900,
        f"all orders to finish ({statuses(store, ids)})",
        log,
    )

    final = statuses(store, ids)
    assert set(final) <= TERMINAL and sum(final.values()) == 100
    ledger = [row["order_id"] for row in store.ledger_rows()]
    assert len(ledger) == len(set(ledger)) == final["completed"]
    assert final["completed"] >= 95

    runs = instance.get_runs(RunsFilter(job_name="order_pipeline"))
    launched = Counter(
        run.tags.get("dagster/partition")
        for run in runs
        if run.tags.get("dagster/sensor_name") == "order_queue" and run.parent_run_id is None
    )
    assert set(launched) == set(ids)
    assert max(launched.values()) == 1, "an order was launched twice by the queue sensor"
    assert all(run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE) for run in runs)
    assert store.verify_audit().ok


@pytest.mark.parametrize(
    "deployment", [{"AGENTFORGE_FAULT_MODEL_LATENCY_SECONDS": "0.7"}], indirect=True
)
def test_the_model_pool_caps_concurrent_model_calls(deployment: dict[str, Any]) -> None:
    store: BusinessStore = deployment["store"]
    daemon: Daemon = deployment["daemon"]
    instance: DagsterInstance = deployment["instance"]
    ids = [store.submit(make_order(i)).order_id for i in range(8)]
    daemon.start()
    wait_until(lambda: statuses(store, ids)["completed"] == 8, 600, "8 orders", deployment["log"])

    pool_limit = instance.get_concurrency_config().pool_config.default_pool_limit
    assert pool_limit == 2
    calls = [(row["started_at"], row["ended_at"]) for row in store.model_call_rows()]
    assert len(calls) >= 16  # plan and draft of each order, plus any revisions
    events = sorted([(start, 1) for start, _ in calls] + [(end, -1) for _, end in calls])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert 1 <= peak <= pool_limit
