"""The backup job and its nightly schedule."""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

import dagster as dg

from agentforge_dagster.orchestration.retry import backup_retry_policy
from agentforge_dagster.persistence.backup import create_backup
from agentforge_dagster.persistence.resources import BackupTargetResource, BusinessStoreResource


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
    manifest = create_backup(store.get_store(), location, keep=backup_target.keep)
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


nightly_backup = dg.ScheduleDefinition(
    name="nightly_backup",
    job=backup_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 UTC: back up the business database, keep the newest N.",
)
