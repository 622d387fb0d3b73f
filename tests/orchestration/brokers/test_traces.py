"""Trace context across brokers: an order taken with a sender's ``traceparent`` keeps its own
trace and links to the sender's span; the events published carry the order's."""

from __future__ import annotations

import json

import pika
import redis
from dagster import DagsterInstance

from agentforge_dagster.orchestration.brokers.registry import RABBITMQ, REDIS
from agentforge_dagster.orchestration.brokers.relay import publish_pending
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from agentforge_dagster.tracing.ids import traceparent
from tests.orchestration.brokers.helpers import (
    QUEUE,
    STREAM,
    configured,
    declare_intake_queue,
    order_body,
    take,
)
from tests.spans import Caught

SENDER = traceparent(0xABC0000000000000000000000000DEF1, 0x1234000000005678)


def _intake_link(spans: Caught, store: BusinessStore, order_id: str) -> None:
    intake = spans.one("intake")
    trace = store.order_trace(order_id)
    assert intake.context.trace_id == trace.trace_id, "the order keeps its own trace"
    [link] = intake.links
    assert (link.context.trace_id, link.context.span_id) == (
        0xABC0000000000000000000000000DEF1,
        0x1234000000005678,
    )


def test_a_rabbitmq_message_with_a_traceparent_is_linked_from_its_intake(
    settings: AgentForgeSettings,
    store: BusinessStore,
    instance: DagsterInstance,
    rabbit_url: str,
    spans: Caught,
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url})
    declare_intake_queue(settings)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            QUEUE,
            order_body(1),
            pika.BasicProperties(
                delivery_mode=2, message_id="traced-1", headers={"traceparent": SENDER}
            ),
        )
    finally:
        connection.close()
    assert take(RABBITMQ, store, instance, settings).as_dict()["queued"] == 1
    _intake_link(spans, store, "traced-1")


def test_a_redis_entry_with_a_traceparent_and_the_events_carry_the_orders(
    settings: AgentForgeSettings,
    store: BusinessStore,
    instance: DagsterInstance,
    redis_url: str,
    spans: Caught,
) -> None:
    settings = configured(settings, {"redis_url": redis_url})
    client = redis.Redis.from_url(redis_url)
    client.xadd(STREAM, {"order": order_body(2, order_id="traced-2"), "traceparent": SENDER})
    assert take(REDIS, store, instance, settings).as_dict()["queued"] == 1
    _intake_link(spans, store, "traced-2")

    assert publish_pending(REDIS.open(settings), store, settings) >= 1
    [(_, fields)] = client.xrange(settings.brokers.redis_events_stream, count=1)
    expected = store.order_trace("traced-2").traceparent()
    assert fields[b"traceparent"].decode() == expected
    assert json.loads(fields[b"event"])["traceparent"] == expected
