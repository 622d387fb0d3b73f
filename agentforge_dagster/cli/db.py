"""``agentforge db``, ``audit``, ``backup``, ``backups`` and ``restore``: the business database,
its audit trail and its backups."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from agentforge_dagster.cli.common import (
    EXIT_FAILED,
    open_instance,
    open_store,
    safe_url,
    user_errors,
)

if TYPE_CHECKING:
    from agentforge_dagster.persistence.backup_locations import BackupLocation
    from agentforge_dagster.persistence.resources import BackupTargetResource
    from agentforge_dagster.settings import AgentForgeSettings


@click.group("db")
def db() -> None:
    """The business database."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: AgentForgeSettings) -> None:
    """Create or bring the business tables up to date; register every order's partition."""
    from agentforge_dagster.orchestration.intake import register_existing_orders

    store = open_store(settings)
    with open_instance(settings) as instance:
        added = register_existing_orders(store, instance)
    click.echo(f"business database ready: {safe_url(settings.storage.resolved_database_url())}")
    click.echo(f"order partitions registered in Dagster: {len(added)} new")


def _backup_target(settings: AgentForgeSettings) -> BackupTargetResource:
    """Where backups and audit anchors go: the S3 bucket when one is set, else a local folder."""
    from agentforge_dagster.resources import backup_target

    return backup_target(settings)


def _backup_location(settings: AgentForgeSettings) -> BackupLocation:
    return _backup_target(settings).location()


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.pass_obj
@user_errors
def audit_verify(settings: AgentForgeSettings) -> None:
    """Check the database's integrity, the hash chain, and its tail against the newest anchors."""
    from agentforge_dagster.persistence.anchors import verify_against_anchors
    from agentforge_dagster.persistence.store import BusinessStore

    url = settings.storage.resolved_database_url()
    store = BusinessStore.from_url(url)
    damaged = store.integrity_problem()
    if damaged:
        click.echo(
            f"database DAMAGED ({safe_url(url)}): {damaged}; the audit chain was not checked "
            "— restore the newest backup into an empty database (agentforge restore)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    click.echo("database integrity: ok")
    store.upgrade()
    chain = store.audit.verify_audit()
    if chain.ok:
        click.echo(f"audit chain intact: {chain.rows} rows")
    else:
        click.echo(f"audit chain BROKEN at row {chain.first_broken_seq}: {chain.reason}", err=True)
    location = _backup_location(settings)
    anchors = verify_against_anchors(store, location, settings.storage.resolved_audit_anchor_key())
    for problem in anchors.problems:
        click.echo(f"audit tail: {problem}", err=True)
    if anchors.newest is None:
        click.echo(
            f"no trusted audit anchor in {location.describe()}: the chain's tail has no outside "
            "witness yet (agentforge audit anchor, or a backup, writes one)"
        )
    elif anchors.ok:
        newest = anchors.newest
        click.echo(
            f"audit tail matches {anchors.checked} anchor(s), the newest at row {newest.seq} "
            f"({newest.written_at:%Y-%m-%d %H:%M:%S} UTC); rows after it have no outside witness"
        )
    if not chain.ok or not anchors.ok:
        sys.exit(EXIT_FAILED)


@audit.command("anchor")
@click.pass_obj
@user_errors
def audit_anchor(settings: AgentForgeSettings) -> None:
    """Write the audit chain's head beside the backups now (signed when a key is configured)."""
    from agentforge_dagster.persistence.anchors import write_anchor

    key = settings.storage.resolved_audit_anchor_key()
    location = _backup_location(settings)
    anchor, name = write_anchor(
        open_store(settings), location, key, source="agentforge audit anchor"
    )
    click.echo(
        f"audit anchor {name}: row {anchor.seq}, {anchor.rows} rows, "
        f"{'signed' if key else 'unsigned'}, in {location.describe()}"
    )


@click.command()
@click.option(
    "--keep",
    type=click.IntRange(1),
    default=None,
    help="How many newest backups to keep (default AGENTFORGE_BACKUP_KEEP).",
)
@click.pass_obj
@user_errors
def backup(settings: AgentForgeSettings, keep: int | None) -> None:
    """Back up the business database now (the nightly schedule does the same)."""
    from agentforge_dagster.persistence.backup import create_backup
    from agentforge_dagster.progress import working

    target = _backup_target(settings)
    location = target.location()
    with working(f"backing up to {location.describe()}"):
        manifest = create_backup(
            open_store(settings),
            location,
            keep=keep or target.keep,
            anchor_key=settings.storage.resolved_audit_anchor_key(),
        )
    click.echo(
        f"backup {manifest.backup_id}: {manifest.size_bytes} bytes, sha256 "
        f"{manifest.sha256[:16]}…, in {location.describe()}"
    )


@click.command("backups")
@click.pass_obj
@user_errors
def backups_list(settings: AgentForgeSettings) -> None:
    """List the backups kept, newest last."""
    from agentforge_dagster.persistence.backup import read_manifest

    location = _backup_location(settings)
    ids = location.backup_ids()
    if not ids:
        click.echo(f"no backups in {location.describe()}")
    for backup_id in ids:
        manifest = read_manifest(location, backup_id)
        click.echo(
            f"{backup_id}  {manifest.dialect:<10} {manifest.size_bytes:>10} bytes  "
            f"orders {manifest.row_counts.get('orders', 0)}"
        )


@click.command()
@click.argument("backup_id")
@click.option("--target-url", help="Empty database to restore into (default: the configured one).")
@click.pass_obj
@user_errors
def restore(settings: AgentForgeSettings, backup_id: str, target_url: str | None) -> None:
    """Restore a backup into an empty database; verify its checksum, rows and audit chain."""
    from agentforge_dagster.persistence.backup import restore_backup
    from agentforge_dagster.progress import working

    target = target_url or settings.storage.resolved_database_url()
    with working(f"restoring {backup_id} and verifying it"):
        report = restore_backup(_backup_location(settings), backup_id, target)
    click.echo(
        f"restored {backup_id} into {safe_url(target)}: "
        + ", ".join(f"{table} {count}" for table, count in report.row_counts.items())
        + f"; audit chain verified ({report.audit_rows} rows)"
    )
