"""The ``model_providers`` sensor: the model providers' shared circuit breakers, observed.

Each minute at most, the state of every provider's breaker (closed, open until when, half-open)
goes on an observation of the ``model/providers`` asset, shown in the asset catalog.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSpec,
    Definitions,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from agentforge_dagster.orchestration.sensors import every_tick, skip_unless_migrated
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.settings import ModelSettings, SensorSettings

PROVIDERS_ASSET = AssetKey(["model", "providers"])
PROVIDERS_ASSET_SPEC = AssetSpec(
    PROVIDERS_ASSET,
    group_name="model",
    description="The model providers' shared circuit breakers (observed every minute).",
)


def build_providers_sensor(models: ModelSettings, sensors: SensorSettings) -> SensorDefinition:
    every = every_tick(sensors)

    @sensor(
        name="model_providers",
        **{**every, "minimum_interval_seconds": max(sensors.interval_seconds, 60)},
        description="Observe each model provider's shared circuit breaker (state, failures).",
    )
    @skip_unless_migrated
    def model_providers(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        breakers = store.get_store().breakers.breakers()
        metadata: dict[str, Any] = {"chain": models.chain}
        for breaker in breakers:
            metadata[breaker.provider] = f"{breaker.state.value}, {breaker.failures} failures" + (
                f", open until {breaker.open_until.isoformat(timespec='seconds')}"
                if breaker.open_until is not None and breaker.state.value == "open"
                else ""
            )
        opened = [b.provider for b in breakers if b.state.value != "closed"]
        return SensorResult(
            skip_reason=f"open breakers: {opened or 'none'}",
            asset_events=[AssetObservation(PROVIDERS_ASSET, metadata=metadata)],
        )

    return model_providers


def providers_definitions(models: ModelSettings, sensors: SensorSettings) -> Definitions:
    """The model providers' area in the catalog: their breakers as an observed asset."""
    return Definitions(
        assets=[PROVIDERS_ASSET_SPEC], sensors=[build_providers_sensor(models, sensors)]
    )
