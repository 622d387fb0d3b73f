"""Retention of order partitions: a growing business stays under Dagster's partition limits.

Orders are the dynamic partitions of the order pipeline, and Dagster advises staying under about
100,000 partitions per asset. The ``prune_order_partitions`` job (daily at 03:30 UTC, off until
``AGENTFORGE_PARTITION_RETENTION_DAYS`` is set) deletes the partition of every order that reached a
final state (completed, rejected) more than that many days ago. What is kept: the order's business
records (order, delivery, ledger, audit trail) and Dagster's runs and events of it. What is never
touched: an order in any other state — queued, processing, held for a person, failed, dead-lettered
or waiting for the budget — whatever its age. A partition is registered again whenever a run is
launched for its order (:func:`~agentforge_dagster.orchestration.intake.register_orders`).
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from datetime import timedelta

import dagster as dg

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.orchestration.schedules import utc_schedule
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import SensorSettings


def prune_order_partitions(
    store: BusinessStore, instance: dg.DagsterInstance, older_than_days: float
) -> list[str]:
    """Delete the partitions of orders final for over ``older_than_days``; returns their ids."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    finished = set(store.orders.finished_before(cutoff))
    known = instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME)
    pruned = [order_id for order_id in known if order_id in finished]
    for order_id in pruned:
        instance.delete_dynamic_partition(ORDERS_PARTITIONS_NAME, order_id)
    if pruned:
        store.audit.record_event(
            "partitions_pruned",
            detail={
                "count": len(pruned),
                "final_before": cutoff.isoformat(timespec="seconds"),
                "first": pruned[:20],
            },
        )
    return pruned


class RetentionConfig(dg.Config):
    older_than_days: float | None = None


def build_retention(
    sensors: SensorSettings,
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    days = sensors.partition_retention_days

    @dg.op(
        name="delete_old_order_partitions",
        description="Delete the partitions of orders final (completed, rejected) for longer than "
        "the retention; their records and events are kept.",
    )
    def prune_op(
        context: dg.OpExecutionContext, config: RetentionConfig, store: BusinessStoreResource
    ) -> dg.Output[int]:
        older_than = config.older_than_days if config.older_than_days is not None else days
        if older_than is None:
            context.log.info("retention off (AGENTFORGE_PARTITION_RETENTION_DAYS is not set)")
            return dg.Output(0, metadata={"pruned": 0, "retention": "off"})
        pruned = prune_order_partitions(store.get_store(), context.instance, older_than)
        left = len(context.instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME))
        return dg.Output(
            len(pruned),
            metadata={"pruned": len(pruned), "older_than_days": older_than, "partitions": left},
        )

    @dg.job(name="prune_order_partitions", description=prune_op.description)
    def retention_job() -> None:
        prune_op()

    schedule = utc_schedule(
        "daily_partition_retention",
        retention_job,
        "30 3 * * *",
        "Every day at 03:30 UTC: delete the partitions of orders final for longer than "
        "AGENTFORGE_PARTITION_RETENTION_DAYS (off until set).",
    )
    return retention_job, schedule
