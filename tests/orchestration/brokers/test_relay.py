"""The outbox relay: every state change an event, published to every configured broker at least
once, marked sent only once the broker confirmed it, kept through both brokers' outages."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pika
import pytest
import redis
from dagster import DagsterInstance, build_sensor_context

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.events import event_json_schema
from agentforge_dagster.orchestration.brokers.redis_streams import RedisStreams
from agentforge_dagster.orchestration.brokers.registry import RABBITMQ, REDIS
from agentforge_dagster.orchestration.brokers.relay import publish_pending
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.brokers import OwnRedis
from tests.orchestration.brokers.helpers import configured, store_resource

SCHEMA = Path(__file__).parents[3] / "docs" / "events" / "order-event.v1.schema.json"


def test_every_state_change_is_an_outbox_event_published_at_least_once_after_outages(
    settings: AgentForgeSettings,
    store: BusinessStore,
    instance: DagsterInstance,
    rabbit_url: str,
    own_redis: OwnRedis,
) -> None:
    from tests.conftest import make_order

    settings = configured(settings, {"rabbitmq_url": rabbit_url, "redis_url": own_redis.url})
    defs = build_definitions(settings, drills=True)
    for index in range(3):
        store.orders.submit(make_order(index, order_id=f"ev-{index}"))
        assert run_order(defs, instance, store, f"ev-{index}").success
    for index in range(3):
        states = [e.state for e in store.outbox.order_events_of(f"ev-{index}")]
        assert states == ["queued", "completed"]  # one completed event id per completed order

    # A consumer's queue on the events exchange, bound before anything is published.
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    channel = connection.channel()
    channel.exchange_declare(
        settings.brokers.rabbitmq_events_exchange, exchange_type="topic", durable=True
    )
    channel.queue_declare("shop.events", durable=True)
    channel.queue_bind(
        "shop.events", settings.brokers.rabbitmq_events_exchange, routing_key="order.#"
    )

    # Both brokers down: the events stay pending, the errors are recorded.
    own_redis.kill()
    rabbit_down = configured(
        settings, {"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/x", "timeout_seconds": 2}
    )
    sensor = build_definitions(rabbit_down).resolve_sensor_def("order_events_outbox")
    with build_sensor_context(instance=instance, resources=store_resource(settings)) as context:
        result = sensor(context)
    assert result.skip_reason.skip_message.count("then unavailable") == 2
    assert store.outbox.outbox_backlog("rabbitmq")[0] == 6
    assert store.outbox.outbox_backlog("redis")[0] == 6
    rabbitmq, redis_streams = RABBITMQ.open(settings), REDIS.open(settings)
    with pytest.raises(RedisStreams.unavailable):
        publish_pending(redis_streams, store, settings)

    # Back: everything goes out, marked sent only once confirmed.
    own_redis.start()
    assert publish_pending(rabbitmq, store, settings) == 6
    assert publish_pending(redis_streams, store, settings) == 6
    assert (
        store.outbox.outbox_backlog("rabbitmq")[0] == 0
        and store.outbox.outbox_backlog("redis")[0] == 0
    )
    assert publish_pending(rabbitmq, store, settings) == 0  # nothing twice once confirmed

    schema = json.loads(SCHEMA.read_text())
    events = {
        e.event_id: e.event for o in range(3) for e in store.outbox.order_events_of(f"ev-{o}")
    }
    received = []
    while True:
        method, properties, body = channel.basic_get("shop.events", auto_ack=True)
        if method is None:
            break
        event = json.loads(body)
        jsonschema.validate(event, schema)
        assert properties.message_id == event["event_id"]
        assert method.routing_key == f"order.{event['state']}"
        received.append(event)
    connection.close()
    assert {e["event_id"] for e in received} == set(events)
    completed = [e for e in received if e["state"] == "completed"]
    assert all(e["delivery"]["content_sha256"] and e["amount_cents"] == 15000 for e in completed)

    stream = redis.Redis.from_url(own_redis.url).xrange(settings.brokers.redis_events_stream)
    for _id, fields in stream:
        jsonschema.validate(json.loads(fields[b"event"]), schema)
    assert {fields[b"event_id"].decode() for _id, fields in stream} == set(events)


def test_the_event_schema_file_is_the_model_schema() -> None:
    assert json.loads(SCHEMA.read_text()) == event_json_schema()
