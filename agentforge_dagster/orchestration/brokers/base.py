"""What a message broker is to the intake, the relay and the status: the :class:`Broker` protocol,
and the :class:`BrokerKind` that names one without importing it.

A broker module (:mod:`.rabbitmq`, :mod:`.redis_streams`) implements the protocol and is the only
module that imports its client library; what is the same for every broker is written once against
it (:mod:`.intake`, :mod:`.relay`, :mod:`.status`, :mod:`.sensors`). A kind knows the broker's
names and where its class lives (:mod:`.registry` holds one per broker); no broker module imports
the registry, and nothing compares kinds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentforge_dagster.settings import AgentForgeSettings

if TYPE_CHECKING:
    from agentforge_dagster.persistence.outbox import PendingEvent


class BrokerMisconfigured(RuntimeError):
    """The broker refuses what the intake needs (a queue declared without a dead-letter exchange)."""


@dataclass(frozen=True)
class BrokerMessage:
    """One delivery from an intake, as the intake takes it, and what settles it on its broker."""

    body: bytes
    publisher_id: str | None  # RabbitMQ message_id, Redis entry id: the order id by default
    key: str | None  # what names this message for good: rabbitmq:<vhost>/<queue>:<id> ...
    source: str  # what rejected_orders records: rabbitmq:<queue>, redis:<stream>
    receipt: int | str  # what acknowledges it: a RabbitMQ delivery tag, a Redis entry id
    redelivered: bool = False
    # Why the broker's own envelope is not an order (a stream entry without its order field):
    # refused as it is, without parsing the body.
    refusal: tuple[str, ...] = ()
    # The sender's W3C trace context (a ``traceparent`` header or field), linked from the order's
    # intake span; the order keeps its own trace.
    traceparent: str | None = None


class Intake(Protocol):
    """A broker's intake for one tick: a bounded batch, each message settled before the next."""

    def messages(self) -> Iterator[BrokerMessage]:
        """Up to ``broker_batch`` messages, redeliveries first where the broker has them."""
        ...

    def acknowledge(self, message: BrokerMessage) -> None:
        """The message's order is committed (or was already): the broker forgets it."""
        ...

    def dead_letter(self, message: BrokerMessage, errors: list[str]) -> None:
        """The message's refusal is committed: off the intake, to the dead-letter place."""
        ...


class EventPublisher(Protocol):
    """A broker's events destination for one batch of outbox events."""

    def publish(self, event: PendingEvent) -> None:
        """Publish one order event; returns once the broker confirmed it, raises if it did not."""
        ...


@dataclass(frozen=True)
class BrokerKind:
    """A broker as the code location and the CLI see it, its client not imported."""

    # The outbox's destination, and the prefix of its sensor, asset, health channels, figures.
    name: str
    url_variable: str  # the setting that switches it on
    url: Callable[[AgentForgeSettings], str | None]
    module: str  # where its Broker lives: a class of the same module named by `class_name`
    class_name: str
    intake_description: str  # the intake sensor's, in the UI
    asset_description: str  # the intake asset's, in the catalog

    @property
    def intake_sensor(self) -> str:
        return f"{self.name}_intake"

    @property
    def intake_channel(self) -> str:
        """The health channel of its intake (``broker_health``)."""
        return f"{self.name}-intake"

    @property
    def events_channel(self) -> str:
        """The health channel of its events."""
        return f"{self.name}-events"

    def configured(self, settings: AgentForgeSettings) -> bool:
        return self.url(settings) is not None

    def open(self, settings: AgentForgeSettings) -> Broker:
        """The broker for ``settings``, its module (and client library) imported now."""
        cls = getattr(importlib.import_module(self.module), self.class_name)
        broker: Broker = cls(self, settings)
        return broker


@runtime_checkable
class Broker(Protocol):
    """One message broker, built by :meth:`BrokerKind.open` from the settings; it connects when
    the intake, the relay or the status asks, and closes when they are done."""

    kind: (
        BrokerKind  # what it is called: the outbox's destination, its sensor's and channels' names
    )
    # What its client raises when the broker is down or went away: the tick skips with the
    # reason, nothing acknowledged, events left pending.
    unavailable: tuple[type[BaseException], ...]

    def intake(self) -> AbstractContextManager[Intake]:
        """A connection to the intake (declared or made if missing), closed on leaving."""
        ...

    def events(self) -> AbstractContextManager[EventPublisher]:
        """A connection to the events exchange or stream, closed on leaving."""
        ...

    def figures(self) -> dict[str, Any]:
        """What the broker says of the intake: depth, pending, dead letters (nothing created)."""
        ...


def skipping_errors(broker: Broker) -> tuple[type[BaseException], ...]:
    """What a tick or the status reports as the broker's error instead of failing."""
    return (*broker.unavailable, BrokerMisconfigured)


def describe_error(exc: BaseException) -> str:
    """A broker error as one line, whatever the client library put in it (never the URL)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]
