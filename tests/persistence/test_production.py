"""The pipeline on the production persistence: PostgreSQL instance and store, S3 artifacts.

Real services only: the PostgreSQL server on 127.0.0.1:5432 (a fresh database per test) and a moto
S3 server on a loopback port. The Dagster instance is built from the repository's own dagster.yaml.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from sqlalchemy import create_engine, text

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.models import ARTIFACT_TYPES
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.steps import STEPS
from agentforge_dagster.orchestration.runner import run_order, run_replays
from agentforge_dagster.persistence.io_managers_s3 import ensure_bucket
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import load_settings
from tests.conftest import make_order

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_pg_database: Callable[[], str],
    s3_endpoint: str,
    s3_bucket: str,
    s3_client: Any,
) -> dict[str, Any]:
    """Environment as an operator sets it; instance from the repo's dagster.yaml."""
    dagster_url, business_url = new_pg_database(), new_pg_database()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_url,
        "AGENTFORGE_DATABASE_URL": business_url,
        "AGENTFORGE_S3_BUCKET": s3_bucket,
        "AGENTFORGE_S3_ENDPOINT_URL": s3_endpoint,
        "AGENTFORGE_HOME": str(tmp_path / "agentforge"),
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.001",  # a test need not wait out a real outage
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ensure_bucket(s3_client, s3_bucket)  # the compute-log bucket must exist before the instance
    store = BusinessStore.from_url(business_url)
    store.upgrade()
    return {"dagster_url": dagster_url, "store": store, "bucket": s3_bucket}


def test_orders_run_on_postgres_with_artifacts_in_s3(production, s3_client) -> None:
    store: BusinessStore = production["store"]
    settings = load_settings()
    with DagsterInstance.get() as instance:
        # dagster-postgres's, with the pool-default fix and a kept connection
        # (instance/storage.py)
        assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PoolSafePostgresEventLogStorage"
        order = store.orders.submit(make_order())
        result = run_order(build_definitions(settings), instance, store, order.order_id)
    assert result.success and result.status is OrderStatus.COMPLETED

    for spec in STEPS:
        key = f"artifacts/{spec.asset_name}/{order.order_id}.json"
        document = json.loads(
            s3_client.get_object(Bucket=production["bucket"], Key=key)["Body"].read()
        )
        assert document["type"] == spec.output_type.__name__
        ARTIFACT_TYPES[document["type"]].model_validate(document["data"])
    versioning = s3_client.get_bucket_versioning(Bucket=production["bucket"])
    assert versioning["Status"] == "Enabled"

    engine = create_engine(production["dagster_url"])
    with engine.connect() as conn:
        events = conn.execute(
            text("select count(*) from event_logs where run_id = :r"), {"r": result.run_id}
        ).scalar()
        run_status = conn.execute(
            text("select status from runs where run_id = :r"), {"r": result.run_id}
        ).scalar()
    engine.dispose()
    assert events and events > 20
    assert run_status == DagsterRunStatus.SUCCESS.value
    assert [r["order_id"] for r in store.deliveries.ledger_rows()] == [order.order_id]
    assert store.audit.verify_audit().ok


def test_a_replay_reads_earlier_outputs_from_s3(production) -> None:
    store: BusinessStore = production["store"]
    settings = load_settings()
    order = store.orders.submit(make_order())
    always_fail_delivery = {"resources": {"faults": {"config": {"fail_first": {"delivery": 99}}}}}
    defs = build_definitions(settings, drills=True)
    with DagsterInstance.get() as instance:
        first = run_order(defs, instance, store, order.order_id, run_config=always_fail_delivery)
        assert not first.success and first.status is OrderStatus.DEAD_LETTERED
        assert store.orders.get(order.order_id).failed_step == "delivery"

        # The one replay mechanism: a run of the order's partition from the failed step on, in a
        # new process's worth of state: its inputs come from the S3 artifact store.
        store.dead_letters.request_replay(order.order_id, actor="test")
        [second] = run_replays(defs, instance, store)
        assert second.success
        run = instance.get_run_by_id(second.run_id)
        assert run is not None and run.tags["agentforge/replay_of"] == first.run_id
        executed = {
            entry.step_key
            for entry in instance.all_logs(second.run_id, of_type=DagsterEventType.STEP_START)
        }
    assert executed == {"order_delivery", "order_invoice"}
    started = [
        (r["step"], r["run_id"])
        for r in store.audit.audit_rows(order.order_id)
        if r["event"] == "step_started"
    ]
    assert {step for step, run in started if run == second.run_id} == {"delivery", "invoice"}
    assert store.orders.get(order.order_id).status is OrderStatus.COMPLETED
    assert len(store.deliveries.ledger_rows()) == 1


def test_a_replay_whose_s3_artifacts_are_gone_reruns_from_there_without_paying_again(
    production, s3_client
) -> None:
    store: BusinessStore = production["store"]
    order = store.orders.submit(make_order())
    always_fail_delivery = {"resources": {"faults": {"config": {"fail_first": {"delivery": 99}}}}}
    defs = build_definitions(load_settings(), drills=True)
    with DagsterInstance.get() as instance:
        first = run_order(defs, instance, store, order.order_id, run_config=always_fail_delivery)
        assert first.status is OrderStatus.DEAD_LETTERED
        paid = [r for r in store.model_calls.model_call_rows(order.order_id) if not r["cache_hit"]]
        for asset in ("order_plan", "order_review"):  # as after an S3 server lost its objects
            s3_client.delete_object(
                Bucket=production["bucket"], Key=f"artifacts/{asset}/{order.order_id}.json"
            )

        store.dead_letters.request_replay(order.order_id, actor="test")
        [second] = run_replays(defs, instance, store)
        assert second.success and second.status is OrderStatus.COMPLETED
        run = instance.get_run_by_id(second.run_id)
        assert run is not None and run.tags["agentforge/replay_from"] == "plan"
        executed = {
            entry.step_key
            for entry in instance.all_logs(second.run_id, of_type=DagsterEventType.STEP_START)
        }
    assert executed == {f"order_{s}" for s in ("plan", "draft", "review", "delivery", "invoice")}
    assert [
        r for r in store.model_calls.model_call_rows(order.order_id) if not r["cache_hit"]
    ] == paid
    assert len(store.deliveries.ledger_rows()) == 1
