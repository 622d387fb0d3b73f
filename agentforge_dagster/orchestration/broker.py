"""Orders from message brokers, order events back out: RabbitMQ and Redis Streams.

Intake (the ``rabbitmq_intake`` and ``redis_intake`` sensors, next to ``order_queue``): a bounded
batch a tick, each message parsed and validated exactly as ``agentforge submit --file`` does, and
**acknowledged only after** its order or its refusal is committed to the business store. A crash
between the commit and the acknowledgement leaves the message unacknowledged: the broker delivers
it again, and the redelivery changes nothing (the order is there already; a refusal is recorded
once per message, by its key).

The contract with publishers: a message carries an ``order_id`` field in its JSON body or a broker
message id (RabbitMQ's ``message_id`` property; a Redis stream entry's id is always there), and the
order id is that. A RabbitMQ message with neither is refused and dead-lettered with that reason:
two genuine orders are never merged by hashing their bodies. A message that is not an order —
bad JSON, a missing field, a hostile value — is recorded in ``rejected_orders`` with its reasons
and moved to the broker's dead-letter place (RabbitMQ: the queue's dead-letter exchange, bound to
``<queue>.rejected``; Redis: the ``<stream>:rejected`` stream), so it never blocks the queue.

Events (the ``order_events_outbox`` sensor): the outbox rows that the order state machine writes in
the transaction of each change (:mod:`~agentforge_dagster.persistence.outbox`) are published to
the events exchange (topic, routing key ``order.<state>``) and/or the events stream, and marked
sent to a broker only after it confirmed them (publisher confirms on RabbitMQ, the ``XADD`` reply
on Redis). A broker that is down leaves the events pending; they go out when it is back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pika
import pika.exceptions
import redis
import redis.exceptions
from dagster import DagsterInstance
from sqlalchemy.exc import SQLAlchemyError

from agentforge_dagster.domain.errors import AlreadySubmitted, InvalidOrder
from agentforge_dagster.domain.events import SCHEMA_VERSION
from agentforge_dagster.domain.models import load_order_json, parse_order
from agentforge_dagster.orchestration.intake import submit_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

RABBITMQ_INTAKE = "rabbitmq-intake"
REDIS_INTAKE = "redis-intake"
RABBITMQ_EVENTS = "rabbitmq-events"
REDIS_EVENTS = "redis-events"
CRASH_EXIT_CODE = 70  # the intake drill's exit status (AGENTFORGE_FAULT_BROKER_CRASH_AFTER)
NO_ORDER_ID = (
    "message: no order id: the JSON body has no order_id field and the message has no "
    "message_id property (publish with one or the other)"
)
REDIS_ORDER_FIELD = "order"

# What a broker that is down or went away raises: the tick skips with the reason, nothing acked.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


class BrokerMisconfigured(RuntimeError):
    """The broker refuses what the intake needs (a queue declared without a dead-letter exchange)."""


STATUS_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, BrokerMisconfigured)


class Taken(StrEnum):
    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    REFUSED = "refused"


@dataclass(frozen=True)
class BrokerMessage:
    body: bytes
    publisher_id: str | None  # RabbitMQ message_id, Redis entry id: the order id by default
    key: str | None  # what names this message for good: rabbitmq:<vhost>/<queue>:<id> ...
    source: str
    redelivered: bool = False


@dataclass
class IntakeCounts:
    queued: int = 0
    already_queued: int = 0
    refused: int = 0

    def add(self, taken: Taken) -> None:
        setattr(self, taken.value, getattr(self, taken.value) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def describe_error(exc: BaseException) -> str:
    """A broker error as one line, whatever the client library put in it (never the URL)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


def take_message(
    store: BusinessStore, instance: DagsterInstance, message: BrokerMessage
) -> tuple[Taken, list[str]]:
    """Queue the order a message carries, or record why it is refused: committed either way.

    The same validation as ``agentforge submit --file`` (same errors, same ``rejected_orders``
    record). Raises only when the business store itself fails (then nothing is acknowledged).
    """
    try:
        raw = load_order_json(message.body)
        if message.publisher_id is None and not (isinstance(raw, dict) and "order_id" in raw):
            raise InvalidOrder([NO_ORDER_ID])
        order = parse_order(raw, default_order_id=message.publisher_id)
        submit_order(store, instance, order, source=message.source)
        return Taken.QUEUED, []
    except AlreadySubmitted:
        return Taken.ALREADY_QUEUED, []
    except InvalidOrder as exc:
        errors = exc.errors
    except SQLAlchemyError:
        raise  # the store is down: leave the message on the broker for the next tick
    except Exception as exc:  # one odd message must not stop the queue: refuse it, say why
        errors = [f"message: could not be taken ({describe_error(exc)})"]
    if message.key is None and message.redelivered:
        earlier = store.orders.rejection_of(message.source, message.body)
        if earlier is not None:  # recorded before a crash, delivered again
            return Taken.REFUSED, errors
    store.orders.reject(message.body, errors, source=message.source, message_key=message.key)
    return Taken.REFUSED, errors


class _Commits:
    """Counts commits; the drill dies after the Nth, before its acknowledgement."""

    def __init__(self, crash_after: int | None, after_commit: Callable[[int], None] | None):
        self.count = 0
        self.crash_after = crash_after
        self.after_commit = after_commit

    def __call__(self) -> None:
        self.count += 1
        if self.after_commit is not None:
            self.after_commit(self.count)
        if self.crash_after is not None and self.count >= self.crash_after:
            os._exit(CRASH_EXIT_CODE)  # a crash: no cleanup, no acknowledgement, no goodbye


# -- RabbitMQ --------------------------------------------------------------------------------------
def rabbitmq_parameters(url: str, settings: AgentForgeSettings, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = settings.broker_timeout_seconds
    params.blocked_connection_timeout = settings.broker_timeout_seconds
    params.client_properties = {"connection_name": name}
    return params


@contextmanager
def rabbitmq_channel(
    settings: AgentForgeSettings, name: str
) -> Iterator[tuple[Any, pika.URLParameters]]:
    url = settings.resolved_rabbitmq_url()
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
    return f"{settings.rabbitmq_queue}.rejected"


def declare_intake(channel: Any, settings: AgentForgeSettings) -> None:
    """The intake queue (durable, dead-lettering to the DLX) and the DLX's ``.rejected`` queue."""
    dlx = settings.rabbitmq_dead_letter_exchange
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(rejected_queue_name(settings), durable=True)
    channel.queue_bind(rejected_queue_name(settings), dlx)
    if settings.rabbitmq_dlx_by_policy:
        channel.queue_declare(settings.rabbitmq_queue, passive=True)
        return
    try:
        channel.queue_declare(
            settings.rabbitmq_queue, durable=True, arguments={"x-dead-letter-exchange": dlx}
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        raise BrokerMisconfigured(
            f"queue {settings.rabbitmq_queue!r} exists with other arguments than "
            f"x-dead-letter-exchange={dlx!r} ({exc.reply_text}); a queue's arguments cannot "
            "change. Either set the dead-letter exchange by policy — rabbitmqctl set_policy "
            f"agentforge-dlx '^{settings.rabbitmq_queue}$' '{{\"dead-letter-exchange\":\"{dlx}\"}}' "
            "--apply-to queues — and set AGENTFORGE_RABBITMQ_DLX_BY_POLICY=true, or drain and "
            "delete the queue so the intake declares it anew"
        ) from exc


def take_rabbitmq(
    store: BusinessStore,
    instance: DagsterInstance,
    settings: AgentForgeSettings,
    *,
    after_commit: Callable[[int], None] | None = None,
) -> IntakeCounts:
    """Take up to ``broker_batch`` messages from the intake queue; see the module's contract."""
    counts = IntakeCounts()
    commits = _Commits(settings.fault_broker_crash_after, after_commit)
    with rabbitmq_channel(settings, "agentforge-intake") as (channel, params):
        declare_intake(channel, settings)
        source = f"rabbitmq:{settings.rabbitmq_queue}"
        for _ in range(settings.broker_batch):
            method, properties, body = channel.basic_get(settings.rabbitmq_queue, auto_ack=False)
            if method is None:
                break
            message_id = properties.message_id or None
            message = BrokerMessage(
                body=body,
                publisher_id=message_id,
                key=(
                    f"rabbitmq:{params.virtual_host}/{settings.rabbitmq_queue}:{message_id}"
                    if message_id is not None
                    else None
                ),
                source=source,
                redelivered=bool(method.redelivered),
            )
            taken, _errors = take_message(store, instance, message)
            commits()
            if taken is Taken.REFUSED:  # to the dead-letter exchange, with x-death saying why
                channel.basic_nack(method.delivery_tag, requeue=False)
            else:
                channel.basic_ack(method.delivery_tag)
            counts.add(taken)
    return counts


def publish_rabbitmq(store: BusinessStore, settings: AgentForgeSettings) -> int:
    """Publish pending events to the events exchange; each marked sent once the broker confirmed."""
    pending = store.outbox.pending_events("rabbitmq", settings.broker_batch)
    if not pending:
        return 0
    sent: list[str] = []
    try:
        with rabbitmq_channel(settings, "agentforge-events") as (channel, _params):
            channel.confirm_delivery()
            channel.exchange_declare(
                settings.rabbitmq_events_exchange, exchange_type="topic", durable=True
            )
            for event in pending:
                channel.basic_publish(  # returns once confirmed; raises on a nack
                    settings.rabbitmq_events_exchange,
                    routing_key=f"order.{event.state}",
                    body=event.payload.encode(),
                    properties=pika.BasicProperties(
                        content_type="application/json",
                        delivery_mode=pika.DeliveryMode.Persistent,
                        message_id=event.event_id,
                        type=f"order.{event.state}",
                        headers={"schema_version": SCHEMA_VERSION},
                    ),
                )
                sent.append(event.event_id)
    finally:
        store.outbox.mark_events_sent("rabbitmq", sent)
    return len(sent)


def rabbitmq_figures(settings: AgentForgeSettings) -> dict[str, Any]:
    """Depth of the intake queue and of its dead letters (passive declares: nothing created)."""
    with rabbitmq_channel(settings, "agentforge-status") as (channel, _params):
        intake = channel.queue_declare(settings.rabbitmq_queue, passive=True).method
    with rabbitmq_channel(settings, "agentforge-status") as (channel, _params):
        try:
            rejected = channel.queue_declare(rejected_queue_name(settings), passive=True).method
            rejected_depth: int | None = rejected.message_count
        except pika.exceptions.ChannelClosedByBroker:
            rejected_depth = None  # not declared yet: the intake declares it on its first tick
    return {
        "queue": settings.rabbitmq_queue,
        "ready": intake.message_count,
        "consumers": intake.consumer_count,
        # AMQP does not report unacknowledged messages; the intake holds none between ticks
        # (each is acknowledged in its tick, or returned when the connection closes).
        "dead_lettered": rejected_depth,
    }


# -- Redis Streams ---------------------------------------------------------------------------------
def redis_client(settings: AgentForgeSettings) -> redis.Redis:
    url = settings.resolved_redis_url()
    if url is None:
        raise BrokerMisconfigured("Redis is not configured (AGENTFORGE_REDIS_URL)")
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.broker_timeout_seconds,
        socket_connect_timeout=settings.broker_timeout_seconds,
    )


def rejected_stream_name(settings: AgentForgeSettings) -> str:
    return f"{settings.redis_stream}:rejected"


def ensure_group(client: redis.Redis, settings: AgentForgeSettings) -> None:
    try:
        client.xgroup_create(settings.redis_stream, settings.redis_group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries_to_take(client: redis.Redis, settings: AgentForgeSettings) -> list[tuple[str, Any]]:
    """This consumer's own pending entries (a crash before XACK), then entries another consumer
    left pending longer than ``redis_claim_idle_seconds`` (XAUTOCLAIM), then new ones."""
    stream, group, consumer = settings.redis_stream, settings.redis_group, settings.redis_consumer
    batch = settings.broker_batch
    found: dict[str, Any] = {}
    own: Any = client.xreadgroup(group, consumer, {stream: "0"}, count=batch)
    for _name, entries in own or []:
        for entry_id, fields in entries:
            found.setdefault(entry_id.decode(), fields)
    if len(found) < batch:
        claimed: Any = client.xautoclaim(
            stream,
            group,
            consumer,
            min_idle_time=int(settings.redis_claim_idle_seconds * 1000),
            start_id="0-0",
            count=batch - len(found),
        )
        for entry_id, fields in claimed[1]:
            found.setdefault(entry_id.decode(), fields)
        for entry_id in claimed[2] if len(claimed) > 2 else []:  # deleted while pending
            client.xack(stream, group, entry_id)
    if len(found) < batch:
        fresh: Any = client.xreadgroup(group, consumer, {stream: ">"}, count=batch - len(found))
        for _name, entries in fresh or []:
            for entry_id, fields in entries:
                found.setdefault(entry_id.decode(), fields)
    return list(found.items())


def _entry_body(fields: dict[bytes, bytes]) -> tuple[bytes, list[str]]:
    """The order JSON of a stream entry, or what to keep of it and why it is refused."""
    body = fields.get(REDIS_ORDER_FIELD.encode())
    if body is not None:
        return body, []
    shown = {
        k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace")
        for k, v in fields.items()
    }
    return json.dumps(shown).encode(), [
        f"entry: no {REDIS_ORDER_FIELD!r} field holding the order's JSON (fields: "
        + ", ".join(sorted(shown))[:200]
        + ")"
    ]


def take_redis(
    store: BusinessStore,
    instance: DagsterInstance,
    settings: AgentForgeSettings,
    *,
    after_commit: Callable[[int], None] | None = None,
) -> IntakeCounts:
    """Take up to ``broker_batch`` entries of the intake stream; see the module's contract."""
    counts = IntakeCounts()
    commits = _Commits(settings.fault_broker_crash_after, after_commit)
    stream, group = settings.redis_stream, settings.redis_group
    client = redis_client(settings)
    try:
        ensure_group(client, settings)
        for entry_id, fields in _entries_to_take(client, settings):
            if not fields:  # deleted from the stream while pending: nothing left to take
                client.xack(stream, group, entry_id)
                continue
            body, errors = _entry_body(fields)
            message = BrokerMessage(
                body=body,
                publisher_id=entry_id,
                key=f"redis:{stream}:{entry_id}",
                source=f"redis:{stream}",
            )
            if errors:
                store.orders.reject(body, errors, source=message.source, message_key=message.key)
                taken = Taken.REFUSED
            else:
                taken, errors = take_message(store, instance, message)
            commits()
            if taken is Taken.REFUSED:  # to <stream>:rejected with the reasons, and acked, at once
                pipe = client.pipeline(transaction=True)
                pipe.xadd(
                    rejected_stream_name(settings),
                    {
                        "entry_id": entry_id,
                        "errors": json.dumps(errors[:20]),
                        REDIS_ORDER_FIELD: body,
                    },
                )
                pipe.xack(stream, group, entry_id)
                pipe.execute()
            else:
                client.xack(stream, group, entry_id)
            counts.add(taken)
    finally:
        client.close()
    return counts


def publish_redis(store: BusinessStore, settings: AgentForgeSettings) -> int:
    """Append pending events to the events stream; each marked sent once XADD answered."""
    pending = store.outbox.pending_events("redis", settings.broker_batch)
    if not pending:
        return 0
    sent: list[str] = []
    client = redis_client(settings)
    try:
        for event in pending:
            client.xadd(
                settings.redis_events_stream,
                {
                    "event_id": event.event_id,
                    "type": f"order.{event.state}",
                    "order_id": event.order_id,
                    "schema_version": str(SCHEMA_VERSION),
                    "event": event.payload,
                },
                maxlen=settings.redis_events_maxlen,
                approximate=True,
            )
            sent.append(event.event_id)
    finally:
        store.outbox.mark_events_sent("redis", sent)
        client.close()
    return len(sent)


def redis_figures(settings: AgentForgeSettings) -> dict[str, Any]:
    """Length of the intake stream, the group's pending entries and lag, dead letters."""
    client = redis_client(settings)
    try:
        length = client.xlen(settings.redis_stream)
        pending = lag = None
        try:
            for info in client.xinfo_groups(settings.redis_stream):
                if info["name"].decode() == settings.redis_group:
                    pending, lag = info["pending"], info.get("lag")
        except redis.exceptions.ResponseError:
            pass  # no stream yet: the intake makes it with its group on its first tick
        return {
            "stream": settings.redis_stream,
            "length": length,
            "pending": pending,
            "lag": lag,
            "dead_lettered": client.xlen(rejected_stream_name(settings)),
        }
    finally:
        client.close()


# -- both ------------------------------------------------------------------------------------------
@dataclass
class BrokerStatus:
    """What ``agentforge broker status`` shows, and the sensors put on their observations."""

    configured: dict[str, bool]
    intake: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)


def configured_brokers(settings: AgentForgeSettings) -> dict[str, bool]:
    return {
        "rabbitmq": settings.resolved_rabbitmq_url() is not None,
        "redis": settings.resolved_redis_url() is not None,
    }


def outbox_figures(store: BusinessStore, destination: str) -> dict[str, Any]:
    backlog, oldest = store.outbox.outbox_backlog(destination)
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
    return {"pending_events": backlog, "oldest_pending_age_s": round(age, 1) if age else None}


def broker_status(store: BusinessStore, settings: AgentForgeSettings) -> BrokerStatus:
    configured = configured_brokers(settings)
    status = BrokerStatus(configured=configured)
    figures = {"rabbitmq": rabbitmq_figures, "redis": redis_figures}
    for broker, on in configured.items():
        if not on:
            continue
        try:
            status.intake[broker] = figures[broker](settings)
        except STATUS_ERRORS as exc:
            status.intake[broker] = {"error": describe_error(exc)}
        status.outbox[broker] = outbox_figures(store, broker)
    for channel, health in store.outbox.broker_health().items():
        status.health[channel] = {
            "last_ok_at": health.last_ok_at,
            "last_error": health.last_error,
            "last_error_at": health.last_error_at,
        }
    return status
