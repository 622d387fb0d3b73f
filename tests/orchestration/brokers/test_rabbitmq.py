"""The RabbitMQ intake against the machine's RabbitMQ (a vhost of its own per test).

What every broker does alike (a crash between commit and ack, a broker that is not there) is in
test_contract.py; here what is RabbitMQ's own: message ids and keys, the dead-letter exchange, a
broker that drops the connection mid-batch, a queue declared before dead-lettering.
"""

from __future__ import annotations

import json

import pika
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, build_sensor_context

from agentforge_dagster.cli import main
from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.brokers.base import BrokerMisconfigured
from agentforge_dagster.orchestration.brokers.intake import NO_ORDER_ID
from agentforge_dagster.orchestration.brokers.rabbitmq import RabbitMQ
from agentforge_dagster.orchestration.brokers.registry import RABBITMQ
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.brokers import publish, queue_counts, rabbitmqctl, vhost_of
from tests.orchestration.brokers.helpers import (
    QUEUE,
    cli_env,
    configured,
    declare_intake_queue,
    order_body,
    refusals,
    store_resource,
    submitted_count,
    take,
)


def test_rabbitmq_orders_are_queued_once_and_bad_messages_dead_lettered(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url, "batch": 15})
    declare_intake_queue(settings)
    good = [(order_body(i, order_id=f"body-{i}"), None) for i in range(15)]
    good += [(order_body(i), f"msg-{i}") for i in range(15, 30)]
    bad = [
        (b'{"customer": "x", "service": ', "bad-json"),  # not JSON
        (order_body(90, brief="x" * 30_000), "oversized"),  # a brief over the limit
        (order_body(91, service="'; DROP TABLE orders; --"), "hostile"),
        (order_body(92), None),  # neither an order_id field nor a message_id
        (order_body(93), "msg-15"),  # msg-15's id, another order
    ]
    publish(rabbit_url, QUEUE, [*good, *bad, good[0], good[20]])  # and two published again

    totals: dict[str, int] = {}
    for _ in range(5):  # batches of 15: a tick never takes more than its batch
        counts = take(RABBITMQ, store, instance, settings).as_dict()
        assert sum(counts.values()) <= 15
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
    assert totals == {"queued": 30, "already_queued": 2, "refused": 5}

    assert len(store.orders.order_ids(OrderStatus.QUEUED)) == 30
    assert submitted_count(store) == 30  # no order twice
    assert "msg-20" in store.orders.order_ids() and "body-3" in store.orders.order_ids()
    assert set(instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME)) == set(
        store.orders.order_ids()
    )
    refused = refusals(store)
    assert len(refused) == 5
    assert all(r["source"] == f"rabbitmq:{QUEUE}" for r in refused)
    reasons = {r["message_key"]: json.loads(r["errors"]) for r in refused}
    assert any(
        "not valid JSON" in e for e in reasons[f"rabbitmq:{vhost_of(rabbit_url)}/{QUEUE}:bad-json"]
    )
    assert NO_ORDER_ID in reasons[None]
    assert any(
        "already used" in e for e in reasons[f"rabbitmq:{vhost_of(rabbit_url)}/{QUEUE}:msg-15"]
    )
    # On the broker: nothing left, nothing unacknowledged, the five refused in the dead letters.
    assert queue_counts(rabbit_url) == {QUEUE: (0, 0), f"{QUEUE}.rejected": (5, 0)}

    result = CliRunner().invoke(main, ["broker", "status", "--json"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["intake"]["rabbitmq"]["ready"] == 0
    assert status["intake"]["rabbitmq"]["dead_lettered"] == 5
    assert status["outbox"]["rabbitmq"]["pending_events"] == 30  # one queued event each
    assert "guest:guest" not in result.output


def test_rabbitmq_lost_mid_stream_loses_nothing_and_the_sensor_catches_up(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url})
    declare_intake_queue(settings)
    publish(rabbit_url, QUEUE, [(order_body(i), f"lost-{i}") for i in range(12)])

    def lose_the_broker(commits: int) -> None:
        if commits == 5:  # after the fifth commit, before its ack: the broker drops us
            rabbitmqctl("close_all_connections", "-p", vhost_of(rabbit_url), "test: broker lost")

    with pytest.raises(RabbitMQ.unavailable):
        take(RABBITMQ, store, instance, settings, after_commit=lose_the_broker)
    assert len(store.orders.order_ids()) == 5

    # The daemon's way: the sensor (against a broker that is not there: test_contract.py).
    sensor = build_definitions(settings).resolve_sensor_def("rabbitmq_intake")
    with build_sensor_context(instance=instance, resources=store_resource(settings)) as context:
        result = sensor(context)
    assert "'queued': 7, 'already_queued': 1" in result.skip_reason.skip_message
    (observation,) = result.asset_events
    assert observation.metadata["ready"].value == 0
    assert store.outbox.broker_health()["rabbitmq-intake"].last_ok_at is not None
    assert submitted_count(store) == 12
    assert queue_counts(rabbit_url)[QUEUE] == (0, 0)


def test_a_queue_declared_without_dead_lettering_is_refused_with_the_migration(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().queue_declare(QUEUE, durable=True)  # an older queue, no arguments
    connection.close()
    publish(rabbit_url, QUEUE, [(b"not json", "x-1")])
    settings = configured(settings, {"rabbitmq_url": rabbit_url})

    with pytest.raises(BrokerMisconfigured, match="set_policy"):
        take(RABBITMQ, store, instance, settings)
    assert queue_counts(rabbit_url)[QUEUE] == (1, 0)  # not taken: it would have been dropped

    rabbitmqctl(
        "set_policy",
        "-p",
        vhost_of(rabbit_url),
        "agentforge-dlx",
        f"^{QUEUE}$",
        json.dumps({"dead-letter-exchange": settings.brokers.rabbitmq_dead_letter_exchange}),
        "--apply-to",
        "queues",
    )
    by_policy = configured(settings, {"rabbitmq_dlx_by_policy": True})
    assert take(RABBITMQ, store, instance, by_policy).refused == 1
    assert queue_counts(rabbit_url) == {QUEUE: (0, 0), f"{QUEUE}.rejected": (1, 0)}
