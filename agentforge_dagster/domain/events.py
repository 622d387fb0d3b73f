"""Order events: what a client hears about an order's state, as published to the brokers.

An event is written to the outbox (``order_events``) in the transaction that changes the order's
status, then published by the ``order_events_outbox`` sensor at least once to each configured
broker. Consumers drop duplicates by ``event_id``. The schema is versioned: a field is only ever
added within a version; anything else is a new ``schema_version`` (and a new schema file,
``docs/events/order-event.v<N>.schema.json``, which a test keeps equal to this model).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentforge_dagster.domain.state import OrderStatus

SCHEMA_VERSION: Literal[1] = 1

# The states a client cares about: an order taken, finished, failed, given up on, paused for the
# budget, held for a person, or closed by one. processing and replayed are internal steps.
PUBLISHED_STATES = frozenset(
    {
        OrderStatus.QUEUED,
        OrderStatus.COMPLETED,
        OrderStatus.FAILED,
        OrderStatus.DEAD_LETTERED,
        OrderStatus.WAITING_BUDGET,
        OrderStatus.QUARANTINED,
        OrderStatus.AWAITING_APPROVAL,
        OrderStatus.REJECTED,
    }
)


class DeliveryReference(BaseModel):
    """Which deliverable a completed order delivered (its content's hash, to check a copy)."""

    model_config = ConfigDict(extra="forbid")

    delivery_id: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class OrderEvent(BaseModel):
    """One state change of one order, as published (JSON)."""

    model_config = ConfigDict(
        extra="forbid",
        title="AgentForge order event",
        json_schema_extra={"$id": "https://agentforge.example/schemas/order-event.v1.json"},
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(description="Unique per event: drop a message whose id you have seen.")
    type: str = Field(pattern=r"^order\.[a-z_]+$", description="order.<state>")
    order_id: str
    state: Literal[
        "queued",
        "completed",
        "failed",
        "dead_lettered",
        "waiting_budget",
        "quarantined",
        "awaiting_approval",
        "rejected",
    ]
    previous_state: str | None = Field(description="None for queued (a new order).")
    occurred_at: datetime
    amount_cents: int = Field(
        ge=0, description="The invoiced amount once completed, else the order's price."
    )
    delivery: DeliveryReference | None = Field(
        default=None, description="Set on completed: the deliverable that was delivered."
    )
    traceparent: str | None = Field(
        default=None,
        max_length=128,
        description="Set when the deployment exports traces: the W3C trace context of the "
        "order's trace (its current episode's root span); continue it to join the order's trace.",
    )
    error_class: str | None = Field(
        default=None, description="transient or permanent, on failed and dead_lettered."
    )


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`OrderEvent`, as ``docs/events/order-event.v1.schema.json``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **OrderEvent.model_json_schema(),
    }
