"""Backups of the business database and a restore that checks what it restored.

A backup is a folder (local or an S3 prefix) named by its id holding the compressed dump and a
``manifest.json`` written last: checksum, size, row counts, the audit chain's head and the schema
revision. PostgreSQL is dumped with ``pg_dump --format=custom`` (compressed); SQLite with the
SQLite online-backup API, then gzip. A restore goes only into an empty database, refuses a file
whose checksum differs from its manifest, and afterwards compares the row counts and verifies the
audit hash chain up to the recorded head. Each backup also writes its head as an audit anchor
(:mod:`~agentforge_dagster.persistence.anchors`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, inspect, make_url, select

from agentforge_dagster.persistence.anchors import chain_head, write_anchor
from agentforge_dagster.persistence.backup_locations import (
    MANIFEST,
    BackupCorrupted,
    BackupError,
    BackupLocation,
)
from agentforge_dagster.persistence.schema import audit_log, metadata
from agentforge_dagster.persistence.store import BusinessStore


class BackupManifest(BaseModel):
    backup_id: str
    created_at: datetime
    dialect: str
    dump_file: str
    sha256: str
    size_bytes: int
    row_counts: dict[str, int]
    audit_head: str | None
    audit_seq: int | None = None  # the head's row; older manifests lack it
    schema_revision: str | None
    tool: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that carries the password."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BackupError(
            f"{command[0]} is not installed: install the PostgreSQL client (postgresql-client)"
        ) from exc
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[:2000]}")
    return done.stdout


def _counts(store: BusinessStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in metadata.tables.items()
        }


def _audit_head(store: BusinessStore) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(
            select(audit_log.c.row_hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).scalar_one_or_none()


def create_backup(
    store: BusinessStore,
    location: BackupLocation,
    *,
    keep: int,
    anchor_key: bytes | None = None,
) -> BackupManifest:
    """Dump the database into ``location`` and keep only the ``keep`` newest backups there.

    The manifest's audit-chain head is also written as an anchor (signed with ``anchor_key``).
    """
    url = store.engine.url
    now = datetime.now(UTC)
    backup_id = f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"
    counts, head = _counts(store), chain_head(store, source=f"backup {backup_id}")
    with tempfile.TemporaryDirectory() as tmp:
        if url.get_backend_name() == "postgresql":
            dump = Path(tmp) / "business.pgdump"
            dsn, env = _libpq(url.render_as_string(hide_password=False))
            _run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--compress=6",
                    "--no-owner",
                    "--no-privileges",
                    f"--file={dump}",
                    f"--dbname={dsn}",
                ],
                env,
            )
            tool = _run(["pg_dump", "--version"]).strip()
        elif url.get_backend_name() == "sqlite":
            raw, dump = Path(tmp) / "copy.sqlite", Path(tmp) / "business.sqlite.gz"
            source = sqlite3.connect(str(url.database))
            target = sqlite3.connect(str(raw))
            with target:
                source.backup(target)
            source.close()
            target.close()
            with raw.open("rb") as plain, gzip.open(dump, "wb", compresslevel=6) as packed:
                shutil.copyfileobj(plain, packed)
            tool = f"sqlite3 {sqlite3.sqlite_version} backup API + gzip"
        else:
            raise BackupError(f"no backup method for {url.get_backend_name()} databases")
        manifest = BackupManifest(
            backup_id=backup_id,
            created_at=now,
            dialect=url.get_backend_name(),
            dump_file=dump.name,
            sha256=_sha256(dump),
            size_bytes=dump.stat().st_size,
            row_counts=counts,
            audit_head=head.row_hash,
            audit_seq=head.seq,
            schema_revision=store.schema_revision(),
            tool=tool,
        )
        location.put(backup_id, dump.name, dump)
        manifest_path = Path(tmp) / MANIFEST
        manifest_path.write_text(manifest.model_dump_json(indent=2))
        location.put(backup_id, MANIFEST, manifest_path)  # last: its presence marks a whole backup
    write_anchor(store, location, anchor_key, anchor=head)
    for old in location.backup_ids()[:-keep]:
        location.delete(old)
    return manifest


def read_manifest(location: BackupLocation, backup_id: str) -> BackupManifest:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MANIFEST
        location.get(backup_id, MANIFEST, path)
        return BackupManifest.model_validate_json(path.read_text())


class RestoreReport(BaseModel):
    backup_id: str
    row_counts: dict[str, int]
    audit_rows: int


def restore_backup(location: BackupLocation, backup_id: str, target_url: str) -> RestoreReport:
    """Restore ``backup_id`` into the empty database at ``target_url`` and verify it."""
    manifest = read_manifest(location, backup_id)
    target = BusinessStore.from_url(target_url)
    try:
        if target.engine.url.get_backend_name() != manifest.dialect:
            raise BackupError(
                f"backup {backup_id} is a {manifest.dialect} dump; the target is "
                f"{target.engine.url.get_backend_name()}"
            )
        existing = inspect(target.engine).get_table_names()
        if existing:
            raise BackupError(
                f"refusing to restore into a database that is not empty (has {', '.join(existing)})"
            )
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / manifest.dump_file
            location.get(backup_id, manifest.dump_file, dump)
            actual = _sha256(dump)
            if actual != manifest.sha256:
                raise BackupCorrupted(
                    f"backup {backup_id} is corrupted: {manifest.dump_file} has SHA-256 "
                    f"{actual[:16]}…, its manifest says {manifest.sha256[:16]}…; nothing was "
                    "restored — choose another backup"
                )
            if manifest.dialect == "postgresql":
                dsn, env = _libpq(target_url)
                _run(
                    [
                        "pg_restore",
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        f"--dbname={dsn}",
                        str(dump),
                    ],
                    env,
                )
            else:
                target.engine.dispose()
                database = Path(str(target.engine.url.database))
                with gzip.open(dump, "rb") as packed, database.open("wb") as plain:
                    shutil.copyfileobj(packed, plain)
        target.engine.dispose()
        counts = _counts(target)
        if counts != manifest.row_counts:
            raise BackupError(
                f"restored row counts {counts} differ from the manifest's {manifest.row_counts}"
            )
        chain = target.audit.verify_audit()
        if not chain.ok or _audit_head(target) != manifest.audit_head:
            raise BackupError(f"restored audit chain does not verify: {chain.reason}")
        return RestoreReport(backup_id=backup_id, row_counts=counts, audit_rows=chain.rows)
    finally:
        target.engine.dispose()
