"""The order pipeline job: one run per order partition, with the one retry policy and failure hook."""

from __future__ import annotations

from typing import Any

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from agentforge_dagster.domain.runs import ORDER_PIPELINE, ORDER_PIPELINE_TAG_VALUE, PIPELINE_TAG
from agentforge_dagster.execution.assets import ORDER_GROUP
from agentforge_dagster.orchestration.hooks import mark_order_failed
from agentforge_dagster.orchestration.retry import step_retry_policy
from agentforge_dagster.settings import AgentForgeSettings, RetrySettings, RunSettings

__all__ = ["ORDER_PIPELINE", "order_pipeline_job"]


def order_pipeline_job(
    retries: RetrySettings, runs: RunSettings
) -> Any:  # Dagster exports no name for it
    return define_asset_job(
        ORDER_PIPELINE,
        selection=AssetSelection.groups(ORDER_GROUP),
        description="Take, plan, draft, review, deliver and invoice one order (one partition).",
        op_retry_policy=step_retry_policy(retries),
        hooks={mark_order_failed},
        tags={
            PIPELINE_TAG: ORDER_PIPELINE_TAG_VALUE,
            # Enforced by run monitoring (dagster.yaml): a run past it is failed, then retried.
            "dagster/max_runtime": runs.order_run_max_runtime_seconds,
        },
        # One order is a chain of six steps: nothing to parallelise inside a run, and a process per
        # step would re-import Dagster six times (measured: 42 s against 8 s a run).
        executor_def=in_process_executor,
    )


def orders_definitions(settings: AgentForgeSettings, *, drills: bool) -> Definitions:
    """The order pipeline's area: the six step assets, the pipeline and take_order jobs, and the
    sensors that feed and settle it (queue, drop folder, dead letters, replays, workers, leases)."""
    from agentforge_dagster.execution.assets import build_order_assets
    from agentforge_dagster.orchestration.intake_job import take_order_job
    from agentforge_dagster.orchestration.sensors import build_sensors

    return Definitions(
        assets=build_order_assets(drills=drills),
        jobs=[
            order_pipeline_job(settings.retries, settings.runs),
            take_order_job(settings.retries),
        ],
        sensors=build_sensors(settings.sensors, budget_usd=settings.models.monthly_budget_usd),
    )
