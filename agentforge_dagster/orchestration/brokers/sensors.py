"""The broker sensors, written once for every broker, and the ``broker/*`` assets they observe.

An intake sensor per broker (``rabbitmq_intake``, ``redis_intake``) queues orders from it (the
``order_queue`` sensor launches their runs, as for every order); ``order_events_outbox`` publishes
order events to every configured broker. Each is off until its broker's URL is set, and skips —
never fails — with the reason when a broker is down; the next tick catches up. Their figures go
on observations of the ``broker/*`` assets (queue depth, pending entries, outbox backlog), shown
in the asset catalog. A broker's client is imported by the first tick that has it to talk to.
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

from agentforge_dagster.orchestration.brokers.base import (
    BrokerKind,
    describe_error,
    skipping_errors,
)
from agentforge_dagster.orchestration.brokers.intake import take_batch
from agentforge_dagster.orchestration.brokers.registry import BROKERS
from agentforge_dagster.orchestration.brokers.relay import publish_pending
from agentforge_dagster.orchestration.brokers.status import outbox_figures
from agentforge_dagster.orchestration.sensors import every_tick, skip_unless_migrated
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

EVENTS_ASSET = AssetKey(["broker", "order_events"])
# Batches of events one outbox tick publishes at most (each batch is broker_batch events).
OUTBOX_BATCHES_PER_TICK = 10


def intake_asset(kind: BrokerKind) -> AssetKey:
    return AssetKey(["broker", f"{kind.name}_intake"])


BROKER_ASSET_SPECS = [
    *(
        AssetSpec(intake_asset(kind), group_name="broker", description=kind.asset_description)
        for kind in BROKERS
    ),
    AssetSpec(
        EVENTS_ASSET,
        group_name="broker",
        description="Order events published from the outbox (backlog observed each tick).",
    ),
]


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
    kind: BrokerKind,
) -> SensorResult:
    """One intake tick from ``kind``: take a batch, record the channel's health, observe."""
    name, asset = kind.name, intake_asset(kind)
    if not kind.configured(settings):
        return SensorResult(skip_reason=f"{name} intake off: {kind.url_variable} is not set")
    broker = kind.open(settings)
    try:
        counts = take_batch(broker, business, context.instance, settings)
        figures = broker.figures()
    except skipping_errors(broker) as exc:
        reason = describe_error(exc)
        business.outbox.broker_seen(kind.intake_channel, error=reason)
        context.log.warning(f"{name} intake: broker unavailable, nothing acknowledged: {reason}")
        return SensorResult(
            skip_reason=f"{name} unavailable ({reason}); the next tick catches up",
            asset_events=[AssetObservation(asset, metadata={"last_error": reason})],
        )
    business.outbox.broker_seen(kind.intake_channel)
    if counts.refused:
        context.log.warning(f"{name} intake: {counts.refused} messages refused and dead-lettered")
    return SensorResult(
        skip_reason=f"{name} intake: {counts.as_dict()}; the order_queue sensor launches the runs",
        asset_events=[AssetObservation(asset, metadata=_metadata({**counts.as_dict(), **figures}))],
    )


def outbox_tick(
    context: SensorEvaluationContext, business: BusinessStore, settings: AgentForgeSettings
) -> SensorResult:
    """Publish pending events to every configured broker; one that is down keeps its backlog."""
    configured = [kind for kind in BROKERS if kind.configured(settings)]
    if not configured:
        return SensorResult(
            skip_reason="no broker configured: order events wait in the outbox (order_events)"
        )
    said = []
    metadata: dict[str, Any] = {}
    for kind in configured:
        name, broker = kind.name, kind.open(settings)
        sent = 0
        try:
            for _ in range(OUTBOX_BATCHES_PER_TICK):
                published = publish_pending(broker, business, settings)
                sent += published
                if published < settings.brokers.batch:
                    break
        except skipping_errors(broker) as exc:
            reason = describe_error(exc)
            business.outbox.broker_seen(kind.events_channel, error=reason)
            context.log.warning(f"{name} events: {sent} sent, then unavailable: {reason}")
            said.append(f"{name}: {sent} sent, then unavailable ({reason})")
            metadata[f"{name}_last_error"] = reason
        else:
            business.outbox.broker_seen(kind.events_channel)
            said.append(f"{name}: {sent} sent")
        metadata[f"{name}_sent"] = sent
        for figure, value in outbox_figures(business, name).items():
            metadata[f"{name}_{figure}"] = value
    return SensorResult(
        skip_reason="order events: " + "; ".join(said),
        asset_events=[AssetObservation(EVENTS_ASSET, metadata=_metadata(metadata))],
    )


def _intake_sensor(kind: BrokerKind, settings: AgentForgeSettings) -> SensorDefinition:
    @sensor(
        name=kind.intake_sensor, **every_tick(settings.sensors), description=kind.intake_description
    )
    @skip_unless_migrated
    def intake(context: SensorEvaluationContext, store: BusinessStoreResource) -> SensorResult:
        return intake_tick(context, store.get_store(), settings, kind)

    return intake


def build_broker_sensors(settings: AgentForgeSettings) -> list[SensorDefinition]:
    @sensor(
        name="order_events_outbox",
        **every_tick(settings.sensors),
        description="Publish order events from the outbox to the configured brokers; each marked "
        "sent once the broker confirmed it.",
    )
    @skip_unless_migrated
    def order_events_outbox(
        context: SensorEvaluationContext, store: BusinessStoreResource
    ) -> SensorResult:
        return outbox_tick(context, store.get_store(), settings)

    return [*(_intake_sensor(kind, settings) for kind in BROKERS), order_events_outbox]


def broker_definitions(settings: AgentForgeSettings) -> Definitions:
    """The brokers' area: the queues and streams as external assets, and their sensors."""
    return Definitions(assets=BROKER_ASSET_SPECS, sensors=build_broker_sensors(settings))
