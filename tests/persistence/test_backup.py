"""Backups and the restore drill, on the real PostgreSQL server (pg_dump/pg_restore) and SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import Engine, make_url, select, text

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution import steps
from agentforge_dagster.orchestration.backups import backup_job
from agentforge_dagster.persistence.backup import create_backup, restore_backup
from agentforge_dagster.persistence.backup_locations import (
    BackupCorrupted,
    BackupError,
    LocalBackupLocation,
    S3BackupLocation,
)
from agentforge_dagster.persistence.resources import BackupTargetResource, BusinessStoreResource
from agentforge_dagster.persistence.schema import metadata
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order, step_env


def process(store: BusinessStore, index: int, deliveries: Path) -> None:
    """One order through the step functions; every fifth one fails at review."""
    order = store.orders.submit(make_order(index))
    store.orders.claim(order.order_id, run_id=f"run-{index}", step="intake")
    env = step_env(store, order.order_id, deliveries, run_id=f"run-{index}")
    if index % 5 == 0:
        store.orders.transition(
            order.order_id, OrderStatus.FAILED, step="review", error="drill failure"
        )
        return
    plan = steps.plan(env, {"intake": order})
    draft = steps.draft(env, {"intake": order, "plan": plan})
    review = steps.review(env, {"intake": order, "plan": plan, "draft": draft})
    delivery = steps.deliver(env, {"review": review})
    steps.invoice(env, {"intake": order, "delivery": delivery})


def snapshot(store: BusinessStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every business table, in key order."""
    with store.engine.connect() as conn:
        return {
            name: [
                tuple(row)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for name, table in metadata.tables.items()
        }


def recreate_empty(pg_admin: Engine, url: str) -> None:
    name = make_url(url).database
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))


def test_restore_drill_fifty_orders_on_postgres(
    pg_admin: Engine, pg_url: str, pg_store: BusinessStore, tmp_path: Path
) -> None:
    for index in range(50):
        process(pg_store, index, tmp_path / "deliveries")
    pg_store.orders.reject('{"brief": ""}', ["brief: too short"], source="drill")
    before = snapshot(pg_store)
    assert len(before["orders"]) == 50 and len(before["ledger"]) == 40
    location = LocalBackupLocation(tmp_path / "backups")
    manifest = create_backup(pg_store, location, keep=3)
    assert manifest.dialect == "postgresql" and manifest.row_counts["orders"] == 50
    head = pg_store.schema_revision()  # the newest migration: the backup names it
    assert head is not None and manifest.schema_revision == head
    pg_store.engine.dispose()

    recreate_empty(pg_admin, pg_url)
    report = restore_backup(location, manifest.backup_id, pg_url)
    restored = BusinessStore.from_url(pg_url)
    try:
        assert snapshot(restored) == before
        assert report.audit_rows == len(before["audit_log"])
        assert restored.audit.verify_audit().ok
        assert restored.schema_revision() == head
        # The restored store keeps working: the chain goes on from the restored head.
        restored.orders.submit(make_order(999))
        assert restored.audit.verify_audit().ok
    finally:
        restored.engine.dispose()


def test_a_corrupted_backup_is_refused_and_nothing_is_restored(
    pg_admin: Engine, pg_url: str, pg_store: BusinessStore, tmp_path: Path
) -> None:
    process(pg_store, 1, tmp_path / "deliveries")
    location = LocalBackupLocation(tmp_path / "backups")
    manifest = create_backup(pg_store, location, keep=3)
    dump = tmp_path / "backups" / manifest.backup_id / manifest.dump_file
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    pg_store.engine.dispose()
    recreate_empty(pg_admin, pg_url)
    with pytest.raises(BackupCorrupted, match=f"backup {manifest.backup_id} is corrupted"):
        restore_backup(location, manifest.backup_id, pg_url)
    with pg_admin.connect() as conn:
        name = make_url(pg_url).database
        assert (
            conn.execute(text("select 1 from pg_database where datname = :n"), {"n": name}).scalar()
            == 1
        )
    empty = BusinessStore.from_url(pg_url)
    with empty.engine.connect() as conn:
        tables = conn.execute(
            text("select count(*) from information_schema.tables where table_schema = 'public'")
        ).scalar()
    empty.engine.dispose()
    assert tables == 0


def test_restore_refuses_a_database_that_is_not_empty(
    pg_store: BusinessStore, pg_url: str, tmp_path: Path
) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    manifest = create_backup(pg_store, location, keep=1)
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(location, manifest.backup_id, pg_url)


def test_only_the_newest_backups_are_kept(store: BusinessStore, tmp_path: Path) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    made = [create_backup(store, location, keep=2).backup_id for _ in range(4)]
    assert location.backup_ids() == sorted(made)[-2:]


def test_backup_job_writes_to_s3_and_restores_into_sqlite(
    store: BusinessStore, settings, tmp_path: Path, s3_endpoint: str, s3_bucket: str, s3_client
) -> None:
    for index in range(3):
        process(store, index + 1, tmp_path / "deliveries")
    target = BackupTargetResource(
        local_dir=str(tmp_path / "unused"), bucket=s3_bucket, endpoint_url=s3_endpoint, keep=2
    )
    with DagsterInstance.ephemeral() as instance:
        result = backup_job.execute_in_process(
            instance=instance,
            resources={
                "store": BusinessStoreResource(
                    database_url=settings.storage.resolved_database_url()
                ),
                "backup_target": target,
            },
        )
    assert result.success
    backup_id = result.output_for_node("backup_business_database")
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    anchors = {key for key in keys if key.startswith("backups/anchors/")}
    assert keys - anchors == {
        f"backups/{backup_id}/manifest.json",
        f"backups/{backup_id}/business.sqlite.gz",
    }
    location = S3BackupLocation(s3_client, s3_bucket)
    assert len(anchors) == 1 and location.names("anchors") == [anchors.pop().rsplit("/", 1)[-1]]
    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    report = restore_backup(location, backup_id, restored_url)
    assert report.row_counts["orders"] == 3 and report.row_counts["ledger"] == 3
    restored = BusinessStore.from_url(restored_url)
    assert snapshot(restored) == snapshot(store)
    restored.engine.dispose()
