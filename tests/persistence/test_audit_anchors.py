"""Audit anchors: the chain's head witnessed outside the database catches a cut or rewritten tail."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import DagsterInstance, EnvVar
from sqlalchemy import delete, select, update

from agentforge_dagster.orchestration.backups import audit_anchor_job
from agentforge_dagster.persistence import anchors
from agentforge_dagster.persistence.anchors import (
    ANCHOR_FOLDER,
    chain_head,
    verify_against_anchors,
    write_anchor,
)
from agentforge_dagster.persistence.audit import _hashed_fields, _row_hash
from agentforge_dagster.persistence.backup import create_backup
from agentforge_dagster.persistence.backup_locations import LocalBackupLocation
from agentforge_dagster.persistence.resources import BackupTargetResource, BusinessStoreResource
from agentforge_dagster.persistence.schema import audit_log
from agentforge_dagster.persistence.store import BusinessStore

KEY = b"a test key, never logged"


def record(store: BusinessStore, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        store.audit.record_event("drill_event", order_id=f"o-{index}", detail={"n": index})


def test_an_intact_chain_matches_its_anchors(store: BusinessStore, tmp_path: Path) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    assert verify_against_anchors(store, location).newest is None  # nothing witnessed yet
    record(store, 3)
    write_anchor(store, location, KEY)
    record(store, 2, start=3)  # after the anchor: no outside witness, but no problem either
    report = verify_against_anchors(store, location, KEY)
    assert report.ok and report.checked == 1
    assert report.newest is not None and report.newest.rows == 3


def test_deleting_the_last_rows_after_an_anchor_is_truncation(
    store: BusinessStore, tmp_path: Path
) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    record(store, 5)
    anchor, _ = write_anchor(store, location)
    assert anchor.seq is not None
    with store.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq > anchor.seq - 2))
    assert store.audit.verify_audit().ok  # the chain alone cannot tell
    report = verify_against_anchors(store, location)
    assert not report.ok
    assert report.problems[0].startswith(f"truncated: row {anchor.seq}")


def test_a_rewritten_last_row_with_its_hash_recomputed_is_a_rewritten_tail(
    store: BusinessStore, tmp_path: Path
) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    record(store, 4)
    anchor, _ = write_anchor(store, location, KEY)
    with store.begin() as conn:
        last = conn.execute(select(audit_log).where(audit_log.c.seq == anchor.seq)).mappings().one()
        fields = {**_hashed_fields(last), "detail": json.dumps({"n": 999})}
        conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == anchor.seq)
            .values(detail=fields["detail"], row_hash=_row_hash(last["prev_hash"], fields))
        )
    assert store.audit.verify_audit().ok
    report = verify_against_anchors(store, location, KEY)
    assert report.problems == [
        f"rewritten tail: row {anchor.seq} has another hash than the one anchored "
        f"{anchor.written_at:%Y-%m-%d %H:%M:%S} UTC by schedule"
    ]


def test_a_tampered_anchor_is_forged_when_a_key_is_set(
    store: BusinessStore, tmp_path: Path
) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    record(store, 4)
    anchor, name = write_anchor(store, location, KEY)
    assert (
        anchor.hmac
        and KEY.decode() not in (tmp_path / "backups" / ANCHOR_FOLDER / name).read_text()
    )
    with store.begin() as conn:  # cut the tail, then move the anchor back to match it
        conn.execute(delete(audit_log).where(audit_log.c.seq == anchor.seq))
    path = tmp_path / "backups" / ANCHOR_FOLDER / name
    forged = json.loads(path.read_text())
    forged.update(seq=anchor.seq - 1, rows=anchor.rows - 1, row_hash=chain_head(store).row_hash)
    path.write_text(json.dumps(forged))
    assert verify_against_anchors(store, location).ok  # without the key it looks fine
    report = verify_against_anchors(store, location, KEY)
    assert report.problems == [
        f"anchor {name} forged: its signature does not match the configured key"
    ]
    assert report.newest is None


def test_a_backup_and_the_anchor_job_each_write_an_anchor(
    store: BusinessStore, settings, tmp_path: Path, monkeypatch
) -> None:
    location = LocalBackupLocation(tmp_path / "backups")
    record(store, 2)
    manifest = create_backup(store, location, keep=2, anchor_key=KEY)
    assert manifest.audit_seq is not None
    monkeypatch.setenv("AGENTFORGE_AUDIT_ANCHOR_KEY", KEY.decode())
    with DagsterInstance.ephemeral() as instance:
        result = audit_anchor_job.execute_in_process(
            instance=instance,
            resources={
                "store": BusinessStoreResource(
                    database_url=settings.storage.resolved_database_url()
                ),
                "backup_target": BackupTargetResource(
                    local_dir=str(tmp_path / "backups"),
                    anchor_key=EnvVar("AGENTFORGE_AUDIT_ANCHOR_KEY"),
                ),
            },
        )
    assert result.success
    assert len(location.names(ANCHOR_FOLDER)) == 2
    assert location.backup_ids() == [manifest.backup_id]  # anchors are not a backup
    report = verify_against_anchors(store, location, KEY)
    assert report.ok and report.checked == 2


def test_a_corrupt_sqlite_file_fails_the_integrity_check(
    store: BusinessStore, tmp_path: Path
) -> None:
    assert store.integrity_problem() is None
    record(store, 200)
    store.engine.dispose()
    database = Path(str(store.engine.url.database))
    data = bytearray(database.read_bytes())
    data[4096 * 2 :] = b"\xa5" * (len(data) - 4096 * 2)
    database.write_bytes(bytes(data))
    assert store.integrity_problem()


def test_only_a_week_of_anchors_is_kept_and_the_newest_still_witnesses_every_row(
    store: BusinessStore, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(anchors, "ANCHORS_KEPT", 3)
    location = LocalBackupLocation(tmp_path / "backups")
    names = []
    for index in range(5):
        record(store, 1, start=index)
        names.append(write_anchor(store, location, KEY)[1])
    assert location.names(ANCHOR_FOLDER) == sorted(names)[-3:]
    with store.begin() as conn:  # cut the first rows: the newest anchor's row goes with the chain
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 2))
    assert not store.audit.verify_audit().ok


def test_the_hourly_anchor_job_is_the_scheduled_check_and_fails_on_a_broken_chain(
    store: BusinessStore, settings, tmp_path: Path
) -> None:
    record(store, 4)
    with store.begin() as conn:  # a middle row edited in place
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(detail='{"n": 99}'))
    with DagsterInstance.ephemeral() as instance:
        result = audit_anchor_job.execute_in_process(
            instance=instance,
            resources={
                "store": BusinessStoreResource(
                    database_url=settings.storage.resolved_database_url()
                ),
                "backup_target": BackupTargetResource(local_dir=str(tmp_path / "backups")),
            },
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "audit trail check failed, no anchor written: the chain breaks at row 2" in str(
        failure.event_specific_data
    )
    assert LocalBackupLocation(tmp_path / "backups").names(ANCHOR_FOLDER) == []
