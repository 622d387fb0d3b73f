"""Redis Streams (redis-py): the intake stream's consumer group, and the events stream.

The intake reads the stream as one consumer of its group (``XREADGROUP``): first its own entries
left pending by a crash, then entries another consumer left pending longer than
``AGENTFORGE_REDIS_CLAIM_IDLE_SECONDS`` (``XAUTOCLAIM``), then new ones. An entry's id is its
stream id, its key ``redis:<stream>:<id>``, its order the JSON in its ``order`` field; a refused
entry is appended to ``<stream>:rejected`` with its reasons and acknowledged in one transaction.
Events are appended to the events stream (``XADD``, capped at about ``redis_events_maxlen``).
The only module that imports redis-py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions

from agentforge_dagster.domain.events import SCHEMA_VERSION
from agentforge_dagster.orchestration.brokers.base import (
    BrokerKind,
    BrokerMessage,
    BrokerMisconfigured,
)
from agentforge_dagster.persistence.outbox import PendingEvent
from agentforge_dagster.settings import AgentForgeSettings

REDIS_ORDER_FIELD = "order"


def redis_client(settings: AgentForgeSettings) -> redis.Redis:
    url = settings.brokers.resolved_redis_url()
    if url is None:
        raise BrokerMisconfigured("Redis is not configured (AGENTFORGE_REDIS_URL)")
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.brokers.timeout_seconds,
        socket_connect_timeout=settings.brokers.timeout_seconds,
    )


@contextmanager
def _connected(settings: AgentForgeSettings) -> Iterator[redis.Redis]:
    client = redis_client(settings)
    try:
        yield client
    finally:
        client.close()


def rejected_stream_name(settings: AgentForgeSettings) -> str:
    return f"{settings.brokers.redis_stream}:rejected"


def ensure_group(client: redis.Redis, settings: AgentForgeSettings) -> None:
    try:
        client.xgroup_create(
            settings.brokers.redis_stream, settings.brokers.redis_group, id="0", mkstream=True
        )
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries_to_take(client: redis.Redis, settings: AgentForgeSettings) -> list[tuple[str, Any]]:
    """This consumer's own pending entries (a crash before XACK), then entries another consumer
    left pending longer than ``redis_claim_idle_seconds`` (XAUTOCLAIM), then new ones."""
    stream, group, consumer = (
        settings.brokers.redis_stream,
        settings.brokers.redis_group,
        settings.brokers.redis_consumer,
    )
    batch = settings.brokers.batch
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
            min_idle_time=int(settings.brokers.redis_claim_idle_seconds * 1000),
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


class _GroupIntake:
    """The intake stream as this consumer of its group: XREADGROUP/XAUTOCLAIM, XACK each."""

    def __init__(self, client: redis.Redis, settings: AgentForgeSettings):
        self.client = client
        self.settings = settings

    def messages(self) -> Iterator[BrokerMessage]:
        stream, group = self.settings.brokers.redis_stream, self.settings.brokers.redis_group
        for entry_id, fields in _entries_to_take(self.client, self.settings):
            if not fields:  # deleted from the stream while pending: nothing left to take
                self.client.xack(stream, group, entry_id)
                continue
            body, errors = _entry_body(fields)
            yield BrokerMessage(
                body=body,
                publisher_id=entry_id,
                key=f"redis:{stream}:{entry_id}",
                source=f"redis:{stream}",
                receipt=entry_id,
                refusal=tuple(errors),
                traceparent=_field_text(fields.get(b"traceparent") or fields.get("traceparent")),
            )

    def acknowledge(self, message: BrokerMessage) -> None:
        self.client.xack(
            self.settings.brokers.redis_stream, self.settings.brokers.redis_group, message.receipt
        )

    def dead_letter(self, message: BrokerMessage, errors: list[str]) -> None:
        """To ``<stream>:rejected`` with the reasons, and acknowledged, at once."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            rejected_stream_name(self.settings),
            {
                "entry_id": message.receipt,
                "errors": json.dumps(errors[:20]),
                REDIS_ORDER_FIELD: message.body,
            },
        )
        pipe.xack(
            self.settings.brokers.redis_stream, self.settings.brokers.redis_group, message.receipt
        )
        pipe.execute()


class _StreamPublisher:
    """The events stream: each event one XADD, confirmed by its reply."""

    def __init__(self, client: redis.Redis, settings: AgentForgeSettings):
        self.client = client
        self.settings = settings

    def publish(self, event: PendingEvent) -> None:
        self.client.xadd(
            self.settings.brokers.redis_events_stream,
            {
                "event_id": event.event_id,
                "type": f"order.{event.state}",
                "order_id": event.order_id,
                "schema_version": str(SCHEMA_VERSION),
                "event": event.payload,
                **({"traceparent": event.traceparent} if event.traceparent else {}),
            },
            maxlen=self.settings.brokers.redis_events_maxlen,
            approximate=True,
        )


class RedisStreams:
    """The :class:`~.base.Broker` of a Redis server's streams (``AGENTFORGE_REDIS_URL``)."""

    unavailable: tuple[type[BaseException], ...] = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OSError,
    )

    def __init__(self, kind: BrokerKind, settings: AgentForgeSettings) -> None:
        self.kind = kind
        self.settings = settings

    @contextmanager
    def intake(self) -> Iterator[_GroupIntake]:
        with _connected(self.settings) as client:
            ensure_group(client, self.settings)
            yield _GroupIntake(client, self.settings)

    @contextmanager
    def events(self) -> Iterator[_StreamPublisher]:
        with _connected(self.settings) as client:
            yield _StreamPublisher(client, self.settings)

    def figures(self) -> dict[str, Any]:
        """Length of the intake stream, the group's pending entries and lag, dead letters."""
        settings = self.settings
        with _connected(settings) as client:
            length = client.xlen(settings.brokers.redis_stream)
            pending = lag = None
            try:
                for info in client.xinfo_groups(settings.brokers.redis_stream):
                    if info["name"].decode() == settings.brokers.redis_group:
                        pending, lag = info["pending"], info.get("lag")
            except redis.exceptions.ResponseError:
                pass  # no stream yet: the intake makes it with its group on its first tick
            return {
                "stream": settings.brokers.redis_stream,
                "length": length,
                "pending": pending,
                "lag": lag,
                "dead_lettered": client.xlen(rejected_stream_name(settings)),
            }


def _field_text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None
