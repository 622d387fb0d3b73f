"""The backup job and its nightly schedule; the audit anchor job and its hourly schedule."""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import dagster as dg

from agentforge_dagster.orchestration.retry import backup_retry_policy
from agentforge_dagster.orchestration.schedules import utc_schedule
from agentforge_dagster.persistence.anchors import verify_against_anchors, write_anchor
from agentforge_dagster.persistence.backup import create_backup
from agentforge_dagster.persistence.resources import BackupTargetResource, BusinessStoreResource
from agentforge_dagster.settings import SensorSettings


@dg.op(
    retry_policy=backup_retry_policy(),
    description="Dump the business database (compressed, checksummed, with a manifest); prune old.",
)
def backup_business_database(
    context: dg.OpExecutionContext,
    store: BusinessStoreResource,
    backup_target: BackupTargetResource,
) -> dg.Output[str]:
    location = backup_target.location()
    manifest = create_backup(
        store.get_store(),
        location,
        keep=backup_target.keep,
        anchor_key=backup_target.anchor_signing_key(),
    )
    context.log.info(f"backup {manifest.backup_id} written to {location.describe()}")
    return dg.Output(
        manifest.backup_id,
        metadata={
            "backup_id": manifest.backup_id,
            "location": location.describe(),
            "size_bytes": manifest.size_bytes,
            "sha256": manifest.sha256,
            "rows": dg.MetadataValue.json(manifest.row_counts),
            "kept": len(location.backup_ids()),
        },
    )


@dg.job(name="backup", description="Back up the business database to S3 or a local folder.")
def backup_job() -> None:
    backup_business_database()


nightly_backup = utc_schedule(
    "nightly_backup",
    backup_job,
    "0 2 * * *",
    "Every night at 02:00 UTC: back up the business database, keep the newest N.",
)


@dg.op(
    retry_policy=backup_retry_policy(),
    description="Verify the audit chain, then write its head (seq, hash, rows) beside the backups, "
    "signed if keyed.",
)
def anchor_audit_chain(
    store: BusinessStoreResource, backup_target: BackupTargetResource
) -> dg.Output[str]:
    """The anchor's name is the op's output; where it went is in the metadata.

    The chain is verified first — the database's integrity, every link, the newest anchors — so
    this hourly job is also the audit trail's scheduled check: a broken chain fails the run (red
    in the UI, with the reason) and is never witnessed as if it were whole.
    """
    business = store.get_store()
    location = backup_target.location()
    key = backup_target.anchor_signing_key()
    reason = business.integrity_problem()
    if reason is None:
        chain = business.audit.verify_audit()
        if not chain.ok:
            reason = f"the chain breaks at row {chain.first_broken_seq}: {chain.reason}"
    if reason is None:
        reason = "; ".join(verify_against_anchors(business, location, key).problems) or None
    if reason is not None:
        raise dg.Failure(
            description=f"audit trail check failed, no anchor written: {reason}",
            allow_retries=False,
        )
    anchor, name = write_anchor(business, location, key)
    return dg.Output(
        name,
        metadata={
            "seq": anchor.seq if anchor.seq is not None else 0,
            "rows": anchor.rows,
            "row_hash": anchor.row_hash or "",
            "signed": key is not None,
            "location": location.describe(),
        },
    )


@dg.job(
    name="audit_anchor_job",
    description="Witness the audit chain's head outside the database (an anchor file or object).",
)
def audit_anchor_job() -> None:
    anchor_audit_chain()


audit_anchor = utc_schedule(
    "audit_anchor",
    audit_anchor_job,
    "0 * * * *",
    "Every hour: verify the audit chain (a broken one fails the run), then write its head as an "
    "anchor beside the backups.",
)


def backups_definitions(sensors: SensorSettings) -> dg.Definitions:
    """The backups' area: the nightly backup, the hourly audit anchor, partition retention."""
    from agentforge_dagster.orchestration.retention import build_retention

    retention_job, retention_schedule = build_retention(sensors)
    return dg.Definitions(
        jobs=[backup_job, audit_anchor_job, retention_job],
        schedules=[nightly_backup, audit_anchor, retention_schedule],
    )
