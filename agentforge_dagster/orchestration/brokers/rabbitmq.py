"""RabbitMQ (pika): the intake queue with its dead-letter exchange, and the events exchange.

The intake queue is durable and dead-letters to a fanout exchange bound to ``<queue>.rejected``
(declared by the intake, or by a policy on a queue that exists already:
``AGENTFORGE_RABBITMQ_DLX_BY_POLICY``); messages are taken with ``basic_get`` and manual
acknowledgement, a refused one nacked without requeue (to the dead letters, ``x-death`` saying
why). A message's id is its ``message_id`` property, its key ``rabbitmq:<vhost>/<queue>:<id>``.
Events go to a topic exchange, routing key ``order.<state>``, with publisher confirms.
The only module that imports pika.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pika
import pika.exceptions

from agentforge_dagster.domain.events import SCHEMA_VERSION
from agentforge_dagster.orchestration.brokers.base import (
    BrokerKind,
    BrokerMessage,
    BrokerMisconfigured,
)
from agentforge_dagster.persistence.outbox import PendingEvent
from agentforge_dagster.settings import AgentForgeSettings


def rabbitmq_parameters(url: str, settings: AgentForgeSettings, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = settings.brokers.timeout_seconds
    params.blocked_connection_timeout = settings.brokers.timeout_seconds
    params.client_properties = {"connection_name": name}
    return params


@contextmanager
def rabbitmq_channel(
    settings: AgentForgeSettings, name: str
) -> Iterator[tuple[Any, pika.URLParameters]]:
    url = settings.brokers.resolved_rabbitmq_url()
    if url is None:
        raise BrokerMisconfigured("RabbitMQ is not configured (AGENTFORGE_RABBITMQ_URL)")
    params = rabbitmq_parameters(url, settings, name)
    connection = pika.BlockingConnection(params)
    try:
        yield connection.channel(), params
    finally:
        if connection.is_open:  # (gone already: what was not acknowledged is redelivered)
            with suppress(pika.exceptions.AMQPError):
                connection.close()


def rejected_queue_name(settings: AgentForgeSettings) -> str:
    return f"{settings.brokers.rabbitmq_queue}.rejected"


def declare_intake(channel: Any, settings: AgentForgeSettings) -> None:
    """The intake queue (durable, dead-lettering to the DLX) and the DLX's ``.rejected`` queue."""
    dlx = settings.brokers.rabbitmq_dead_letter_exchange
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(rejected_queue_name(settings), durable=True)
    channel.queue_bind(rejected_queue_name(settings), dlx)
    if settings.brokers.rabbitmq_dlx_by_policy:
        channel.queue_declare(settings.brokers.rabbitmq_queue, passive=True)
        return
    try:
        channel.queue_declare(
            settings.brokers.rabbitmq_queue, durable=True, arguments={"x-dead-letter-exchange": dlx}
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        raise BrokerMisconfigured(
            f"queue {settings.brokers.rabbitmq_queue!r} exists with other arguments than "
            f"x-dead-letter-exchange={dlx!r} ({exc.reply_text}); a queue's arguments cannot "
            "change. Either set the dead-letter exchange by policy — rabbitmqctl set_policy "
            f"agentforge-dlx '^{settings.brokers.rabbitmq_queue}$' '{{\"dead-letter-exchange\":\"{dlx}\"}}' "
            "--apply-to queues — and set AGENTFORGE_RABBITMQ_DLX_BY_POLICY=true, or drain and "
            "delete the queue so the intake declares it anew"
        ) from exc


class _QueueIntake:
    """The intake queue on one channel: ``basic_get`` up to a batch, ack or nack each."""

    def __init__(self, channel: Any, params: pika.URLParameters, settings: AgentForgeSettings):
        self.channel = channel
        self.settings = settings
        self.key_prefix = f"rabbitmq:{params.virtual_host}/{settings.brokers.rabbitmq_queue}"

    def messages(self) -> Iterator[BrokerMessage]:
        queue = self.settings.brokers.rabbitmq_queue
        for _ in range(self.settings.brokers.batch):
            method, properties, body = self.channel.basic_get(queue, auto_ack=False)
            if method is None:
                return
            message_id = properties.message_id or None
            yield BrokerMessage(
                body=body,
                publisher_id=message_id,
                key=f"{self.key_prefix}:{message_id}" if message_id is not None else None,
                source=f"rabbitmq:{queue}",
                receipt=method.delivery_tag,
                redelivered=bool(method.redelivered),
                traceparent=_text((properties.headers or {}).get("traceparent")),
            )

    def acknowledge(self, message: BrokerMessage) -> None:
        self.channel.basic_ack(message.receipt)

    def dead_letter(self, message: BrokerMessage, errors: list[str]) -> None:
        # To the dead-letter exchange, with x-death saying why (the reasons are in the store).
        self.channel.basic_nack(message.receipt, requeue=False)


class _ExchangePublisher:
    """The events exchange on a channel with publisher confirms."""

    def __init__(self, channel: Any, exchange: str):
        self.channel = channel
        self.exchange = exchange

    def publish(self, event: PendingEvent) -> None:
        self.channel.basic_publish(  # returns once confirmed; raises on a nack
            self.exchange,
            routing_key=f"order.{event.state}",
            body=event.payload.encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=event.event_id,
                type=f"order.{event.state}",
                headers={
                    "schema_version": SCHEMA_VERSION,
                    **({"traceparent": event.traceparent} if event.traceparent else {}),
                },
            ),
        )


class RabbitMQ:
    """The :class:`~.base.Broker` of a RabbitMQ server (``AGENTFORGE_RABBITMQ_URL``)."""

    unavailable: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)

    def __init__(self, kind: BrokerKind, settings: AgentForgeSettings) -> None:
        self.kind = kind
        self.settings = settings

    @contextmanager
    def intake(self) -> Iterator[_QueueIntake]:
        with rabbitmq_channel(self.settings, "agentforge-intake") as (channel, params):
            declare_intake(channel, self.settings)
            yield _QueueIntake(channel, params, self.settings)

    @contextmanager
    def events(self) -> Iterator[_ExchangePublisher]:
        with rabbitmq_channel(self.settings, "agentforge-events") as (channel, _params):
            channel.confirm_delivery()
            exchange = self.settings.brokers.rabbitmq_events_exchange
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            yield _ExchangePublisher(channel, exchange)

    def figures(self) -> dict[str, Any]:
        """Depth of the intake queue and of its dead letters (passive declares: nothing created)."""
        settings = self.settings
        with rabbitmq_channel(settings, "agentforge-status") as (channel, _params):
            intake = channel.queue_declare(settings.brokers.rabbitmq_queue, passive=True).method
        with rabbitmq_channel(settings, "agentforge-status") as (channel, _params):
            try:
                rejected = channel.queue_declare(rejected_queue_name(settings), passive=True).method
                rejected_depth: int | None = rejected.message_count
            except pika.exceptions.ChannelClosedByBroker:
                rejected_depth = None  # not declared yet: the intake declares it on its first tick
        return {
            "queue": settings.brokers.rabbitmq_queue,
            "ready": intake.message_count,
            "consumers": intake.consumer_count,
            # AMQP does not report unacknowledged messages; the intake holds none between ticks
            # (each is acknowledged in its tick, or returned when the connection closes).
            "dead_lettered": rejected_depth,
        }


def _text(value: object) -> str | None:
    """A header's value as text (pika hands bytes or str); None if it is neither."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None
