"""The resources of an environment, built once from the settings (embedded default unless
configured): the business store, the models, the step options, deliverables, artifacts, backups.

:mod:`agentforge_dagster.definitions` hands them to the merged Definitions; the areas' own
Definitions carry none.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableIOManager, EnvVar

from agentforge_dagster.execution.faults import FaultInjector
from agentforge_dagster.execution.resources import ModelResource, StepOptions
from agentforge_dagster.metrics.assets import BusinessAssumptions
from agentforge_dagster.persistence.io_managers import LocalArtifactIOManager
from agentforge_dagster.persistence.resources import (
    BackupTargetResource,
    BusinessStoreResource,
    DeliverablesResource,
)
from agentforge_dagster.settings import AgentForgeSettings


def build_resources(settings: AgentForgeSettings, *, drills: bool = False) -> dict[str, Any]:
    """Resources for the environment the settings describe (embedded default unless configured).

    A database URL given in the environment is passed as ``EnvVar`` so its credentials never show
    in the UI or the run config. The ``faults`` resource is there only for drills.
    """
    database_url: Any = (
        EnvVar("AGENTFORGE_DATABASE_URL")
        if settings.storage.database_url
        else settings.storage.resolved_database_url()
    )
    drill_resources: dict[str, Any] = (
        {
            "faults": FaultInjector(
                rate=settings.drills.rate,
                seed=settings.drills.seed,
                model_latency_seconds=settings.drills.model_latency_seconds,
            )
        }
        if drills
        else {}
    )
    return {
        **drill_resources,
        "store": BusinessStoreResource(
            database_url=database_url, lease_seconds=settings.runs.lease_seconds
        ),
        "model": ModelResource(
            models=settings.models.chain,
            # Keys go in as EnvVar: the UI and the run config show the variable, never the value.
            openai_api_key=EnvVar("OPENAI_API_KEY") if settings.models.openai_api_key else None,
            anthropic_api_key=EnvVar("ANTHROPIC_API_KEY")
            if settings.models.anthropic_api_key
            else None,
            timeout_seconds=settings.models.timeout_seconds,
            fallback_after=settings.models.fallback_after,
            rate_limits_json=settings.models.rate_limits_json,
            max_rate_wait_seconds=settings.models.max_rate_wait_seconds,
            max_provider_wait_seconds=settings.models.max_provider_wait_seconds,
            max_response_bytes=settings.models.max_response_bytes,
            breaker_failures=settings.models.breaker_failures,
            breaker_window_seconds=settings.models.breaker_window_seconds,
            breaker_cooldown_seconds=settings.models.breaker_cooldown_seconds,
            max_reprompts=settings.models.max_reprompts,
            replay_only=settings.models.replay_only,
            monthly_budget_usd=settings.models.monthly_budget_usd,
            prices_json=settings.models.prices_json,
        ),
        "options": StepOptions(
            max_revisions=settings.review.max_revisions,
            retry_max_retries=settings.retries.max_retries,
            retry_delay_seconds=settings.retries.delay_seconds,
            retry_max_delay_seconds=settings.retries.max_delay_seconds,
            max_provider_wait_seconds=settings.models.max_provider_wait_seconds,
            approval_services=settings.review.approval_services,
            approval_customers=settings.review.approval_customers,
            image=settings.deploy.image,
            image_id=settings.deploy.image_id,
            trace_url=settings.traces.url,
        ),
        "deliverables": deliverables(settings),
        "artifact_io_manager": artifact_io_manager(settings),
        "backup_target": backup_target(settings),
        "assumptions": BusinessAssumptions(
            cash_on_hand=settings.figures.cash_on_hand,
            daily_fixed_costs=settings.figures.daily_fixed_costs,
            plan_start=settings.figures.plan_start.isoformat()
            if settings.figures.plan_start
            else None,
            plan_days=settings.figures.plan_days,
        ),
    }


def backup_target(settings: AgentForgeSettings) -> BackupTargetResource:
    """Backups go to the S3 bucket when one is configured, else to a local folder."""
    return BackupTargetResource(
        local_dir=str(settings.storage.resolved_backup_dir()),
        bucket=settings.s3.bucket,
        endpoint_url=settings.s3.endpoint_url,
        region_name=settings.s3.region,
        keep=settings.storage.backup_keep,
        anchor_key_file=str(settings.storage.audit_anchor_key_file)
        if settings.storage.audit_anchor_key_file
        else None,
        anchor_key=EnvVar("AGENTFORGE_AUDIT_ANCHOR_KEY")
        if settings.storage.audit_anchor_key
        else None,
    )


def deliverables(settings: AgentForgeSettings) -> DeliverablesResource:
    """Deliverables go to the S3 bucket when one is configured, else to a local folder."""
    return DeliverablesResource(
        local_dir=str(settings.storage.resolved_deliveries_dir()),
        bucket=settings.s3.bucket,
        endpoint_url=settings.s3.endpoint_url,
        region_name=settings.s3.region,
    )


def artifact_io_manager(settings: AgentForgeSettings) -> ConfigurableIOManager:
    """S3 when a bucket is configured, the local folder otherwise."""
    if settings.s3.bucket:  # only then the AWS SDK is imported (about a second a process)
        from dagster_aws.s3 import S3Resource

        from agentforge_dagster.persistence.io_managers_s3 import S3ArtifactIOManager

        return S3ArtifactIOManager(
            s3=S3Resource(endpoint_url=settings.s3.endpoint_url, region_name=settings.s3.region),
            bucket=settings.s3.bucket,
            prefix=settings.s3.prefix,
        )
    return LocalArtifactIOManager(base_dir=str(settings.storage.resolved_artifacts_dir()))
