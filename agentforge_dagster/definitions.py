"""The one Definitions object: assets, jobs and the resources for this environment."""

from __future__ import annotations

from typing import Any

from dagster import (
    ConfigurableIOManager,
    Definitions,
    EnvVar,
    define_asset_job,
    definitions,
)

from agentforge_dagster.execution.assets import build_order_assets
from agentforge_dagster.execution.faults import FaultInjector
from agentforge_dagster.execution.llm.registry import sdk_module
from agentforge_dagster.execution.resources import (
    ModelResource,
    StepOptions,
    parse_model_specs,
)
from agentforge_dagster.metrics.assets import (
    FIGURES_JOB,
    BusinessAssumptions,
    build_figures_schedule,
    daily_business_figures,
    daily_reliability,
)
from agentforge_dagster.orchestration.backups import (
    audit_anchor,
    audit_anchor_job,
    backup_job,
    nightly_backup,
)
from agentforge_dagster.orchestration.broker_sensors import BROKER_ASSET_SPECS, build_broker_sensors
from agentforge_dagster.orchestration.dead_letter_ui import (
    dead_letter_queue_asset,
    dead_letters_job,
    dead_letters_schedule,
    replay_dead_letters_job,
)
from agentforge_dagster.orchestration.intake_job import take_order_job
from agentforge_dagster.orchestration.jobs import order_pipeline_job
from agentforge_dagster.orchestration.retention import build_retention
from agentforge_dagster.orchestration.review_gate import (
    build_escalation_sensor,
    review_decision_job,
)
from agentforge_dagster.orchestration.sensors import build_sensors
from agentforge_dagster.persistence.io_managers import LocalArtifactIOManager
from agentforge_dagster.persistence.resources import (
    BackupTargetResource,
    BusinessStoreResource,
    DeliverablesResource,
)
from agentforge_dagster.settings import AgentForgeSettings, load_settings


def build_resources(settings: AgentForgeSettings, *, drills: bool = False) -> dict[str, Any]:
    """Resources for the environment the settings describe (embedded default unless configured).

    A database URL given in the environment is passed as ``EnvVar`` so its credentials never show
    in the UI or the run config. The ``faults`` resource is there only for drills.
    """
    database_url: Any = (
        EnvVar("AGENTFORGE_DATABASE_URL")
        if settings.database_url
        else settings.resolved_database_url()
    )
    drill_resources: dict[str, Any] = (
        {
            "faults": FaultInjector(
                rate=settings.fault_rate,
                seed=settings.fault_seed,
                model_latency_seconds=settings.fault_model_latency_seconds,
            )
        }
        if drills
        else {}
    )
    return {
        **drill_resources,
        "store": BusinessStoreResource(
            database_url=database_url, lease_seconds=settings.lease_seconds
        ),
        "model": ModelResource(
            models=settings.models,
            # Keys go in as EnvVar: the UI and the run config show the variable, never the value.
            openai_api_key=EnvVar("OPENAI_API_KEY") if settings.openai_api_key else None,
            anthropic_api_key=EnvVar("ANTHROPIC_API_KEY") if settings.anthropic_api_key else None,
            timeout_seconds=settings.model_timeout_seconds,
            fallback_after=settings.model_fallback_after,
            rate_limits_json=settings.model_rate_limits_json,
            max_rate_wait_seconds=settings.model_max_rate_wait_seconds,
            max_provider_wait_seconds=settings.max_provider_wait_seconds,
            max_response_bytes=settings.model_max_response_bytes,
            breaker_failures=settings.model_breaker_failures,
            breaker_window_seconds=settings.model_breaker_window_seconds,
            breaker_cooldown_seconds=settings.model_breaker_cooldown_seconds,
            max_reprompts=settings.model_max_reprompts,
            replay_only=settings.model_replay_only,
            monthly_budget_usd=settings.monthly_budget_usd,
            prices_json=settings.model_prices_json,
        ),
        # The step options named as the settings are.
        "options": StepOptions(**settings.model_dump(include=set(StepOptions.model_fields))),
        "deliverables": deliverables(settings),
        "artifact_io_manager": artifact_io_manager(settings),
        "backup_target": backup_target(settings),
        "assumptions": BusinessAssumptions(
            cash_on_hand=settings.cash_on_hand,
            daily_fixed_costs=settings.daily_fixed_costs,
            plan_start=settings.plan_start.isoformat() if settings.plan_start else None,
            plan_days=settings.plan_days,
        ),
    }


def backup_target(settings: AgentForgeSettings) -> BackupTargetResource:
    """Backups go to the S3 bucket when one is configured, else to a local folder."""
    return BackupTargetResource(
        local_dir=str(settings.resolved_backup_dir()),
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        keep=settings.backup_keep,
        anchor_key_file=str(settings.audit_anchor_key_file)
        if settings.audit_anchor_key_file
        else None,
        anchor_key=EnvVar("AGENTFORGE_AUDIT_ANCHOR_KEY") if settings.audit_anchor_key else None,
    )


def deliverables(settings: AgentForgeSettings) -> DeliverablesResource:
    """Deliverables go to the S3 bucket when one is configured, else to a local folder."""
    return DeliverablesResource(
        local_dir=str(settings.resolved_deliveries_dir()),
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
    )


def artifact_io_manager(settings: AgentForgeSettings) -> ConfigurableIOManager:
    """S3 when a bucket is configured, the local folder otherwise."""
    if settings.s3_bucket:  # only then the AWS SDK is imported (about a second a process)
        from dagster_aws.s3 import S3Resource

        from agentforge_dagster.persistence.io_managers_s3 import S3ArtifactIOManager

        return S3ArtifactIOManager(
            s3=S3Resource(endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    return LocalArtifactIOManager(base_dir=str(settings.resolved_artifacts_dir()))


def build_definitions(settings: AgentForgeSettings, *, drills: bool | None = None) -> Definitions:
    """The code location for ``settings``; ``drills`` (default: as the settings say) adds fault
    injection, which the demo, the benchmarks, the tests and fault campaigns switch on."""
    drills = settings.drills_enabled() if drills is None else drills
    retention_job, retention_schedule = build_retention(settings)
    figures_job = define_asset_job(
        FIGURES_JOB, selection=[daily_business_figures, daily_reliability]
    )
    return Definitions(
        assets=[
            *build_order_assets(drills=drills),
            daily_business_figures,
            daily_reliability,
            dead_letter_queue_asset,
            *BROKER_ASSET_SPECS,
        ],
        jobs=[
            order_pipeline_job(settings),
            take_order_job(settings),
            review_decision_job,
            replay_dead_letters_job,
            dead_letters_job,
            backup_job,
            audit_anchor_job,
            figures_job,
            retention_job,
        ],
        schedules=[
            nightly_backup,
            audit_anchor,
            build_figures_schedule(),
            dead_letters_schedule,
            retention_schedule,
        ],
        sensors=[
            *build_sensors(settings),
            build_escalation_sensor(settings),
            *build_broker_sensors(settings),
        ],
        resources=build_resources(settings, drills=drills),
    )


def run_worker_modules(settings: AgentForgeSettings) -> list[str]:
    """What a run worker of this code location imports besides Dagster (instance/run_worker_start.py)."""
    modules = [__name__]
    providers = {spec.provider for spec in parse_model_specs(settings.models)}
    modules += [sdk for sdk in ("openai", "anthropic") if sdk in providers]
    modules += [sdk_module(sdk) for sdk in ("openai", "anthropic") if sdk in providers]
    if settings.s3_bucket:
        modules += [
            "boto3",
            "dagster_aws.s3.compute_log_manager",
            "agentforge_dagster.persistence.io_managers_s3",
        ]
    return modules


@definitions
def defs() -> Definitions:
    """The code location: loaded lazily, so the environment is read when Dagster loads it."""
    settings = load_settings()
    if settings.run_worker_start == "forkserver":
        from agentforge_dagster.instance.run_worker_start import preload_run_workers

        preload_run_workers(run_worker_modules(settings))
    return build_definitions(settings)
