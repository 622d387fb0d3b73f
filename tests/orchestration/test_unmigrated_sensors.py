"""On a business database never upgraded, the store's sensors skip and say what to do.

A fresh stack whose daemon starts before ``agentforge db upgrade`` has run: the ticks skip with the
remedy instead of failing on a missing table, and work as soon as the schema is there.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context

from agentforge_dagster.orchestration.sensors import NOT_MIGRATED, build_sensors
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.resources import artifact_io_manager
from agentforge_dagster.settings import AgentForgeSettings

STORE_SENSORS = ("order_queue", "dead_letter_replays", "budget_resume")


@pytest.mark.parametrize("backend", ["embedded", "postgresql"])
def test_store_sensors_skip_until_the_database_is_upgraded(
    backend: str,
    settings: AgentForgeSettings,
    instance: DagsterInstance,
    request: pytest.FixtureRequest,
) -> None:
    url = (
        settings.storage.resolved_database_url()
        if backend == "embedded"
        else str(request.getfixturevalue("pg_url"))
    )
    sensors = {
        s.name: s
        for s in build_sensors(settings.sensors, budget_usd=None)
        if s.name in STORE_SENSORS
    }
    resources = {
        "store": BusinessStoreResource(database_url=url),
        "artifact_io_manager": artifact_io_manager(settings),
    }

    def tick(name: str) -> object:
        with build_sensor_context(instance=instance, resources=resources) as context:
            return sensors[name](context)

    for name in STORE_SENSORS:
        skipped = tick(name)
        assert isinstance(skipped, SkipReason) and skipped.skip_message == NOT_MIGRATED, name
    store = BusinessStore.opened(url)
    try:
        assert tick("order_queue") == [], "the schema is there: an ordinary tick"
    finally:
        store.engine.dispose()


def test_the_review_and_provider_sensors_skip_until_the_database_is_upgraded(
    settings: AgentForgeSettings, instance: DagsterInstance
) -> None:
    from agentforge_dagster.orchestration.model_providers import build_providers_sensor
    from agentforge_dagster.orchestration.review_gate import build_escalation_sensor

    sensors = [
        build_escalation_sensor(settings.review, settings.sensors),
        build_providers_sensor(settings.models, settings.sensors),
    ]
    resources = {
        "store": BusinessStoreResource(database_url=settings.storage.resolved_database_url())
    }
    for sensor in sensors:
        with build_sensor_context(instance=instance, resources=resources) as context:
            skipped = sensor(context)
        assert isinstance(skipped, SkipReason) and skipped.skip_message == NOT_MIGRATED, sensor.name
