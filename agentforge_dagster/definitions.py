"""The one Definitions object: the areas' Definitions merged, with the resources built once.

Each area builds its own Definitions (no resources): the order pipeline
(:func:`~.orchestration.jobs.orders_definitions`), dead letters, the review gate, the brokers,
the model providers' breakers, figures and backups, each from its own groups of the settings
(the review gate from ``settings.review`` and ``settings.sensors``; the order pipeline, which
spans retries, runs, sensors and the budget, and the brokers, which open from the settings, take
them whole); :mod:`.resources` builds the environment's resources from the settings.
"""

from __future__ import annotations

from dagster import Definitions, definitions

from agentforge_dagster.execution.llm.registry import sdk_module
from agentforge_dagster.execution.resources import parse_model_specs
from agentforge_dagster.metrics.assets import figures_definitions
from agentforge_dagster.orchestration.backups import backups_definitions
from agentforge_dagster.orchestration.brokers.sensors import broker_definitions
from agentforge_dagster.orchestration.dead_letter_ui import dead_letters_definitions
from agentforge_dagster.orchestration.jobs import orders_definitions
from agentforge_dagster.orchestration.model_providers import providers_definitions
from agentforge_dagster.orchestration.review_gate import review_definitions
from agentforge_dagster.resources import build_resources
from agentforge_dagster.settings import AgentForgeSettings, load_settings


def build_definitions(settings: AgentForgeSettings, *, drills: bool | None = None) -> Definitions:
    """The code location for ``settings``; ``drills`` (default: as the settings say) adds fault
    injection, which the demo, the benchmarks, the tests and fault campaigns switch on."""
    drills = settings.drills.active() if drills is None else drills
    return Definitions.merge(
        orders_definitions(settings, drills=drills),
        dead_letters_definitions(),
        review_definitions(settings.review, settings.sensors),
        broker_definitions(settings),
        providers_definitions(settings.models, settings.sensors),
        figures_definitions(),
        backups_definitions(settings.sensors),
        Definitions(resources=build_resources(settings, drills=drills)),
    )


def run_worker_modules(settings: AgentForgeSettings) -> list[str]:
    """What a run worker imports besides Dagster (instance/run_worker_start.py)."""
    providers = {spec.provider for spec in parse_model_specs(settings.models.chain)}
    sdks = [sdk for sdk in ("openai", "anthropic") if sdk in providers]
    modules = [__name__, *sdks, *(sdk_module(sdk) for sdk in sdks)]
    if settings.s3.bucket:
        modules += ["boto3", "dagster_aws.s3.compute_log_manager"]
        modules += ["agentforge_dagster.persistence.io_managers_s3"]
    return modules


@definitions
def defs() -> Definitions:
    """The code location: loaded lazily, so the environment is read when Dagster loads it."""
    settings = load_settings()
    if settings.runs.run_worker_start == "forkserver":
        from agentforge_dagster.instance.run_worker_start import preload_run_workers

        preload_run_workers(run_worker_modules(settings))
    return build_definitions(settings)
