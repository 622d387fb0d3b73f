"""The broker sensors and ``model_providers`` (the providers' circuit breakers, observed).

``rabbitmq_intake`` and ``redis_intake`` queue orders from the brokers (the
``order_queue`` sensor launches their runs, as for every order), ``order_events_outbox`` publishes
order events. Each is off until its broker's URL is set, and skips — never fails — with the reason
when a broker is down; the next tick catches up. Their figures go on observations of the
``broker/*`` assets (queue depth, pending entries, outbox backlog), shown in the asset catalog.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from types import ModuleType
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
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

INTAKE_ASSETS = {
    "rabbitmq": AssetKey(["broker", "rabbitmq_intake"]),
    "redis": AssetKey(["broker", "redis_intake"]),
}
EVENTS_ASSET = AssetKey(["broker", "order_events"])
PROVIDERS_ASSET = AssetKey(["model", "providers"])
BROKER_ASSET_SPECS = [
    AssetSpec(
        INTAKE_ASSETS["rabbitmq"],
        group_name="broker",
        description="Orders taken from the RabbitMQ intake queue (observed each intake tick).",
    ),
    AssetSpec(
        INTAKE_ASSETS["redis"],
        group_name="broker",
        description="Orders taken from the Redis intake stream (observed each intake tick).",
    ),
    AssetSpec(
        EVENTS_ASSET,
        group_name="broker",
        description="Order events published from the outbox (backlog observed each tick).",
    ),
    AssetSpec(
        PROVIDERS_ASSET,
        group_name="model",
        description="The model providers' shared circuit breakers (observed every minute).",
    ),
]
# Batches of events one outbox tick publishes at most (each batch is broker_batch events).
OUTBOX_BATCHES_PER_TICK = 10

_URL_VARIABLE = {"rabbitmq": "AGENTFORGE_RABBITMQ_URL", "redis": "AGENTFORGE_REDIS_URL"}


def _broker() -> ModuleType:
    """The broker clients (pika, redis-py), imported by a tick that has a broker to talk to."""
    from agentforge_dagster.orchestration import broker

    return broker


def _configured(settings: AgentForgeSettings) -> dict[str, bool]:
    return {
        "rabbitmq": settings.resolved_rabbitmq_url() is not None,
        "redis": settings.resolved_redis_url() is not None,
    }


def _metadata(figures: dict[str, Any]) -> dict[str, Any]:
    """Observation metadata: the figures that have a value (numbers and text)."""
    return {
        name: value if isinstance(value, int | float) else str(value)
        for name, value in figures.items()
        if value is not None
    }


def intake_tick(
    context: SensorEvaluationContext,
    business: BusinessStore,
    settings: AgentForgeSettings,
    broker: str,
) -> SensorResult:
    """One intake tick from ``broker``: take a batch, record the channel's health, observe."""
    if not _configured(settings)[broker]:
        return SensorResult(skip_reason=f"{broker} intake off: {_URL_VARIABLE[broker]} is not set")
    clients = _broker()
    channel = clients.RABBITMQ_INTAKE if broker == "rabbitmq" else clients.REDIS_INTAKE
    take = clients.take_rabbitmq if broker == "rabbitmq" else clients.take_redis
    figures_of = clients.rabbitmq_figures if broker == "rabbitmq" else clients.redis_figures
    try:
        counts = take(business, context.instance, settings)
        figures = figures_of(settings)
    except clients.STATUS_ERRORS as exc:
        reason = clients.describe_error(exc)
        business.outbox.broker_seen(channel, error=reason)
        context.log.warning(f"{broker} intake: broker unavailable, nothing acknowledged: {reason}")
        return SensorResult(
            skip_reason=f"{broker} unavailable ({reason}); the next tick catches up",
            asset_events=[AssetObservation(INTAKE_ASSETS[broker], metadata={"last_error": reason})],
        )
    business.outbox.broker_seen(channel)
    if counts.refused:
        context.log.warning(f"{broker} intake: {counts.refused} messages refused and dead-lettered")
    return SensorResult(
        skip_reason=f"{broker} intake: {counts.as_dict()}; the order_queue sensor launches the runs",
        asset_events=[
            AssetObservation(
                INTAKE_ASSETS[broker], metadata=_metadata({**counts.as_dict(), **figures})
            )
        ],
    )


def outbox_tick(
    context: SensorEvaluationContext, business: BusinessStore, settings: AgentForgeSettings
) -> SensorResult:
    """Publish pending events to every configured broker; one that is down keeps its backlog."""
    configured = [broker for broker, on in _configured(settings).items() if on]
    if not configured:
        return SensorResult(
            skip_reason="no broker configured: order events wait in the outbox (order_events)"
        )
    clients = _broker()
    said = []
    metadata: dict[str, Any] = {}
    for broker in configured:
        channel = clients.RABBITMQ_EVENTS if broker == "rabbitmq" else clients.REDIS_EVENTS
        publish = clients.publish_rabbitmq if broker == "rabbitmq" else clients.publish_redis
        sent = 0
        try:
            for _ in range(OUTBOX_BATCHES_PER_TICK):
                published = publish(business, settings)
                sent += published
                if published < settings.broker_batch:
                    break
        except clients.STATUS_ERRORS as exc:
            reason = clients.describe_error(exc)
            business.outbox.broker_seen(channel, error=reason)
            context.log.warning(f"{broker} events: {sent} sent, then unavailable: {reason}")
            said.append(f"{broker}: {sent} sent, then unavailable ({reason})")
            metadata[f"{broker}_last_error"] = reason
        else:
            business.outbox.broker_seen(channel)
            said.append(f"{broker}: {sent} sent")
        metadata[f"{broker}_sent"] = sent
        for name, value in clients.outbox_figures(business, broker).items():
            metadata[f"{broker}_{name}"] = value
    return SensorResult(
        skip_reason="order events: " + "; ".join(said),
        asset_events=[AssetObservation(EVENTS_ASSET, metadata=_metadata(metadata))],
    )


def build_broker_sensors(settings: AgentForgeSettings) -> list[SensorDefinition]:
    every = every_tick(settings)

    @sensor(
        name="rabbitmq_intake",
        **every,
        description="Queue orders from the RabbitMQ intake queue (AGENTFORGE_RABBITMQ_URL); each "
        "message acknowledged after its order or refusal is committed.",
    )
    @skip_unless_migrated
    def rabbitmq_intake(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        return intake_tick(context, store.get_store(), settings, "rabbitmq")

    @sensor(
        name="redis_intake",
        **every,
        description="Queue orders from the Redis intake stream's consumer group "
        "(AGENTFORGE_REDIS_URL); each entry acknowledged after its order or refusal is committed.",
    )
    @skip_unless_migrated
    def redis_intake(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        return intake_tick(context, store.get_store(), settings, "redis")

    @sensor(
        name="order_events_outbox",
        **every,
        description="Publish order events from the outbox to the configured brokers; each marked "
        "sent once the broker confirmed it.",
    )
    @skip_unless_migrated
    def order_events_outbox(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        return outbox_tick(context, store.get_store(), settings)

    @sensor(
        name="model_providers",
        **{**every, "minimum_interval_seconds": max(settings.sensor_interval_seconds, 60)},
        description="Observe each model provider's shared circuit breaker (state, failures).",
    )
    @skip_unless_migrated
    def model_providers(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        breakers = store.get_store().breakers.breakers()
        metadata: dict[str, Any] = {"chain": settings.models}
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

    return [rabbitmq_intake, redis_intake, order_events_outbox, model_providers]


def broker_definitions(settings: AgentForgeSettings) -> Definitions:
    """The brokers' area: the queues and streams as external assets, and their sensors."""
    return Definitions(assets=BROKER_ASSET_SPECS, sensors=build_broker_sensors(settings))
