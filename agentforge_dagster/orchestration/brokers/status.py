"""``agentforge broker status`` and the sensors' figures: each configured broker's intake, its
outbox backlog, and what each channel last said. Imports no Dagster, and a broker's client only
when that broker is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentforge_dagster.orchestration.brokers.base import describe_error, skipping_errors
from agentforge_dagster.orchestration.brokers.registry import BROKERS
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings


@dataclass
class BrokerStatus:
    """What ``agentforge broker status`` shows, and the sensors put on their observations."""

    configured: dict[str, bool]
    intake: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)


def outbox_figures(store: BusinessStore, destination: str) -> dict[str, Any]:
    """How many events ``destination`` has not confirmed, and how old the oldest is."""
    backlog, oldest = store.outbox.outbox_backlog(destination)
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
    return {"pending_events": backlog, "oldest_pending_age_s": round(age, 1) if age else None}


def broker_status(store: BusinessStore, settings: AgentForgeSettings) -> BrokerStatus:
    status = BrokerStatus(configured={kind.name: kind.configured(settings) for kind in BROKERS})
    for kind in BROKERS:
        if not status.configured[kind.name]:
            continue
        broker = kind.open(settings)
        try:
            status.intake[kind.name] = broker.figures()
        except skipping_errors(broker) as exc:
            status.intake[kind.name] = {"error": describe_error(exc)}
        status.outbox[kind.name] = outbox_figures(store, kind.name)
    for channel, health in store.outbox.broker_health().items():
        status.health[channel] = {
            "last_ok_at": health.last_ok_at,
            "last_error": health.last_error,
            "last_error_at": health.last_error_at,
        }
    return status
