"""The outbox relay, written once for every broker: pending order events out, marked once confirmed.

The outbox itself (the ``order_events`` table, written in the transaction of each state change) is
:mod:`~agentforge_dagster.persistence.outbox`; this reads what a broker has not confirmed yet and
marks each event sent to it only after it confirmed: every event reaches every configured broker
at least once, in order per broker.
"""

from __future__ import annotations

from agentforge_dagster.orchestration.brokers.base import Broker
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings


def publish_pending(broker: Broker, store: BusinessStore, settings: AgentForgeSettings) -> int:
    """Publish up to ``broker_batch`` events ``broker`` has not confirmed, oldest first; those it
    confirmed are marked sent even when a later one fails. Returns how many it confirmed."""
    destination = broker.kind.name
    pending = store.outbox.pending_events(destination, settings.brokers.batch)
    if not pending:
        return 0
    sent: list[str] = []
    try:
        with broker.events() as events:
            for event in pending:
                events.publish(event)
                sent.append(event.event_id)
    finally:
        store.outbox.mark_events_sent(destination, sent)
    return len(sent)
