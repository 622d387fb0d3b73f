"""Broker intake and the events outbox against the machine's real RabbitMQ and Redis.

Each test has its own RabbitMQ vhost or Redis database (tests/brokers.py); the tests that lose a
broker close its connections (RabbitMQ) or kill a redis-server of their own (Redis).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pika
import pytest
import redis
from click.testing import CliRunner
from dagster import DagsterInstance, build_sensor_context
from sqlalchemy import func, select

from agentforge_dagster.cli import main
from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.events import event_json_schema
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.broker import (
    BROKER_ERRORS,
    CRASH_EXIT_CODE,
    NO_ORDER_ID,
    publish_rabbitmq,
    publish_redis,
    take_rabbitmq,
    take_redis,
)
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.schema import audit_log, rejected_orders
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.brokers import (
    OwnRedis,
    own_redis,
    publish,
    queue_counts,
    rabbit_url,
    rabbitmqctl,
    redis_url,
    vhost_of,
)

__all__ = ["own_redis", "rabbit_url", "redis_url"]  # fixtures

SCHEMA = Path(__file__).parents[2] / "docs" / "events" / "order-event.v1.schema.json"
QUEUE = "agentforge.orders"
STREAM = "agentforge:orders"


def configured(settings: AgentForgeSettings, updates: dict[str, Any]) -> AgentForgeSettings:
    """The settings with ``updates`` to the brokers' group, validated as if read from the
    environment."""
    brokers = {**settings.brokers.model_dump(), **updates}
    return AgentForgeSettings.model_validate({**settings.model_dump(), "brokers": brokers})


def order_body(index: int, **fields: Any) -> bytes:
    return json.dumps(
        {
            "customer": f"shop-customer-{index}",
            "service": "blog_post",
            "brief": f"Write about reliable pipelines for small shops, part {index}",
            "price": "120.00",
            **fields,
        }
    ).encode()


def submitted_count(store: BusinessStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(audit_log.c.event == "order_submitted")
            ).scalar_one()
        )


def refusals(store: BusinessStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(rejected_orders).order_by(rejected_orders.c.rejection_id))
        return [dict(row) for row in rows.mappings()]


def declare_intake_queue(settings: AgentForgeSettings, store: BusinessStore) -> None:
    """The intake declares its queue (with the dead-letter exchange) on its first tick."""
    with DagsterInstance.ephemeral() as scratch:
        take_rabbitmq(store, scratch, settings)


# -- RabbitMQ --------------------------------------------------------------------------------------
def test_rabbitmq_orders_are_queued_once_and_bad_messages_dead_lettered(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url, "batch": 15})
    declare_intake_queue(settings, store)
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
        counts = take_rabbitmq(store, instance, settings).as_dict()
        assert sum(counts.values()) <= 15
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
    assert totals == {"queued": 30, "already_queued": 2, "refused": 5}

    assert len(store.order_ids(OrderStatus.QUEUED)) == 30
    assert submitted_count(store) == 30  # no order twice
    assert "msg-20" in store.order_ids() and "body-3" in store.order_ids()
    assert set(instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME)) == set(store.order_ids())
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


CRASHING_INTAKE = """
from dagster import DagsterInstance
from agentforge_dagster.orchestration.broker import take_rabbitmq
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

settings = AgentForgeSettings()
store = BusinessStore.opened(settings.storage.resolved_database_url())
with DagsterInstance.get() as instance:
    take_rabbitmq(store, instance, settings)
"""


def test_rabbitmq_crash_between_commit_and_ack_redelivers_and_changes_nothing(
    settings: AgentForgeSettings,
    store: BusinessStore,
    rabbit_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url})
    declare_intake_queue(settings, store)
    publish(rabbit_url, QUEUE, [(order_body(i), f"crash-{i}") for i in range(8)])
    publish(rabbit_url, QUEUE, [(b"not json", None)])
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {
        "DAGSTER_HOME": str(home),
        "AGENTFORGE_HOME": str(settings.storage.home),
        "AGENTFORGE_RABBITMQ_URL": rabbit_url,
        "AGENTFORGE_FAULT_BROKER_CRASH_AFTER": "4",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_INTAKE],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert len(store.order_ids()) == 4  # four committed; the fourth never acknowledged
    assert queue_counts(rabbit_url)[QUEUE] == (6, 0)  # the fourth is back with the five untaken

    with DagsterInstance.get() as instance:
        counts = take_rabbitmq(store, instance, settings).as_dict()
        assert counts == {"queued": 4, "already_queued": 1, "refused": 1}
        assert set(instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME)) == {
            f"crash-{i}" for i in range(8)
        }
    assert submitted_count(store) == 8
    assert queue_counts(rabbit_url) == {QUEUE: (0, 0), f"{QUEUE}.rejected": (1, 0)}


def test_rabbitmq_lost_mid_stream_or_down_loses_nothing_and_the_sensor_skips(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    settings = configured(settings, {"rabbitmq_url": rabbit_url})
    declare_intake_queue(settings, store)
    publish(rabbit_url, QUEUE, [(order_body(i), f"lost-{i}") for i in range(12)])

    def lose_the_broker(commits: int) -> None:
        if commits == 5:  # after the fifth commit, before its ack: the broker drops us
            rabbitmqctl("close_all_connections", "-p", vhost_of(rabbit_url), "test: broker lost")

    with pytest.raises(BROKER_ERRORS):
        take_rabbitmq(store, instance, settings, after_commit=lose_the_broker)
    assert len(store.order_ids()) == 5

    # The daemon's way: the sensor, first against a broker that is not there, then the real one.
    down = configured(
        settings,
        {"rabbitmq_url": "amqp://guest:guest@127.0.0.1:1/nowhere", "timeout_seconds": 2},
    )
    sensor = build_definitions(down).resolve_sensor_def("rabbitmq_intake")
    with build_sensor_context(instance=instance, resources=_store_resource(down)) as context:
        skipped = sensor(context)
    assert "unavailable" in skipped.skip_reason.skip_message
    assert "guest:guest" not in skipped.skip_reason.skip_message
    assert store.broker_health()["rabbitmq-intake"].last_error is not None

    sensor = build_definitions(settings).resolve_sensor_def("rabbitmq_intake")
    with build_sensor_context(instance=instance, resources=_store_resource(settings)) as context:
        result = sensor(context)
    assert "'queued': 7, 'already_queued': 1" in result.skip_reason.skip_message
    (observation,) = result.asset_events
    assert observation.metadata["ready"].value == 0
    assert store.broker_health()["rabbitmq-intake"].last_ok_at is not None
    assert submitted_count(store) == 12
    assert queue_counts(rabbit_url)[QUEUE] == (0, 0)


def _store_resource(settings: AgentForgeSettings) -> dict[str, Any]:
    from agentforge_dagster.persistence.resources import BusinessStoreResource

    return {"store": BusinessStoreResource(database_url=settings.storage.resolved_database_url())}


def cli_env(settings: AgentForgeSettings) -> dict[str, str | None]:
    """The environment ``agentforge`` reads these settings from."""
    return {
        "AGENTFORGE_HOME": str(settings.storage.home),
        "AGENTFORGE_DATABASE_URL": None,
        "AGENTFORGE_RABBITMQ_URL": settings.brokers.resolved_rabbitmq_url(),
        "AGENTFORGE_REDIS_URL": settings.brokers.resolved_redis_url(),
    }


def test_a_queue_declared_without_dead_lettering_is_refused_with_the_migration(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, rabbit_url: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    connection.channel().queue_declare(QUEUE, durable=True)  # an older queue, no arguments
    connection.close()
    publish(rabbit_url, QUEUE, [(b"not json", "x-1")])
    settings = configured(settings, {"rabbitmq_url": rabbit_url})
    from agentforge_dagster.orchestration.broker import BrokerMisconfigured

    with pytest.raises(BrokerMisconfigured, match="set_policy"):
        take_rabbitmq(store, instance, settings)
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
    assert take_rabbitmq(store, instance, by_policy).refused == 1
    assert queue_counts(rabbit_url) == {QUEUE: (0, 0), f"{QUEUE}.rejected": (1, 0)}


# -- Redis Streams ---------------------------------------------------------------------------------
def test_redis_entries_are_queued_once_dead_consumers_claimed_bad_entries_dead_lettered(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance, redis_url: str
) -> None:
    settings = configured(
        settings, {"redis_url": redis_url, "batch": 20, "redis_claim_idle_seconds": 0.2}
    )
    client = redis.Redis.from_url(redis_url)
    client.xgroup_create(STREAM, settings.brokers.redis_group, id="0", mkstream=True)
    ids = [client.xadd(STREAM, {"order": order_body(i)}).decode() for i in range(20)]
    ids += [
        client.xadd(STREAM, {"order": order_body(i, order_id=f"own-{i}")}).decode()
        for i in range(5)
    ]
    bad = [
        client.xadd(STREAM, {"order": b"{nope"}),
        client.xadd(STREAM, {"body": order_body(99)}),  # the order not where the contract says
        client.xadd(STREAM, {"order": order_body(98, price="-5")}),
    ]
    # Another consumer read eight entries and died without acknowledging them.
    client.xreadgroup(settings.brokers.redis_group, "dead-consumer", {STREAM: ">"}, count=8)
    import time

    time.sleep(0.3)

    totals = {"queued": 0, "already_queued": 0, "refused": 0}
    for _ in range(3):
        for key, value in take_redis(store, instance, settings).as_dict().items():
            totals[key] += value
    assert totals == {"queued": 25, "already_queued": 0, "refused": 3}
    assert submitted_count(store) == 25
    assert set(store.order_ids()) == {*ids[:20], *(f"own-{i}" for i in range(5))}
    assert client.xpending(STREAM, settings.brokers.redis_group)["pending"] == 0
    dead = client.xrange(f"{STREAM}:rejected")
    assert [fields[b"entry_id"].decode() for _id, fields in dead] == [b.decode() for b in bad]
    assert "no 'order' field" in json.loads(dead[1][1][b"errors"])[0]
    assert {r["message_key"] for r in refusals(store)} == {
        f"redis:{STREAM}:{b.decode()}" for b in bad
    }

    # Entries published again under a new id are new orders: ids are the publisher's, not hashes.
    client.xadd(STREAM, {"order": order_body(0, order_id="own-0")})  # the same order id again
    assert take_redis(store, instance, settings).already_queued == 1


def test_redis_killed_mid_stream_restarts_from_its_log_and_nothing_is_lost(
    settings: AgentForgeSettings,
    store: BusinessStore,
    instance: DagsterInstance,
    own_redis: OwnRedis,
) -> None:
    settings = configured(settings, {"redis_url": own_redis.url, "batch": 50})
    client = redis.Redis.from_url(own_redis.url)
    for i in range(15):
        client.xadd(STREAM, {"order": order_body(i, order_id=f"r-{i}")})
    client.close()

    def kill_redis(commits: int) -> None:
        if commits == 6:  # the sixth order committed, its XACK never sent
            own_redis.kill()

    with pytest.raises(BROKER_ERRORS):
        take_redis(store, instance, settings, after_commit=kill_redis)
    with pytest.raises(BROKER_ERRORS):  # down: the next tick fails too, taking nothing
        take_redis(store, instance, settings)
    assert len(store.order_ids()) == 6

    own_redis.start()  # from its append-only file: the group, its pending entries, the stream
    counts = take_redis(store, instance, settings)
    assert counts.as_dict() == {"queued": 9, "already_queued": 1, "refused": 0}
    assert submitted_count(store) == 15
    client = redis.Redis.from_url(own_redis.url)
    assert client.xpending(STREAM, settings.brokers.redis_group)["pending"] == 0


# -- events out --------------------------------------------------------------------------------------
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
        store.submit(make_order(index, order_id=f"ev-{index}"))
        assert run_order(defs, instance, store, f"ev-{index}").success
    for index in range(3):
        states = [e.state for e in store.order_events_of(f"ev-{index}")]
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
    with build_sensor_context(instance=instance, resources=_store_resource(settings)) as context:
        result = sensor(context)
    assert result.skip_reason.skip_message.count("then unavailable") == 2
    assert store.outbox_backlog("rabbitmq")[0] == 6
    assert store.outbox_backlog("redis")[0] == 6
    with pytest.raises(BROKER_ERRORS):
        publish_redis(store, settings)

    # Back: everything goes out, marked sent only once confirmed.
    own_redis.start()
    assert publish_rabbitmq(store, settings) == 6
    assert publish_redis(store, settings) == 6
    assert store.outbox_backlog("rabbitmq")[0] == 0 and store.outbox_backlog("redis")[0] == 0
    assert publish_rabbitmq(store, settings) == 0  # nothing twice once confirmed

    schema = json.loads(SCHEMA.read_text())
    events = {e.event_id: e.event for o in range(3) for e in store.order_events_of(f"ev-{o}")}
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


def test_brokers_are_off_until_configured(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance
) -> None:
    defs = build_definitions(settings)
    for name in ("rabbitmq_intake", "redis_intake", "order_events_outbox"):
        with build_sensor_context(
            instance=instance, resources=_store_resource(settings)
        ) as context:
            result = defs.resolve_sensor_def(name)(context)
        assert (
            "not set" in result.skip_reason.skip_message
            or "no broker" in result.skip_reason.skip_message
        )
    store.submit(__import__("tests.conftest", fromlist=["make_order"]).make_order(1))
    assert store.outbox_backlog("rabbitmq")[0] == 1  # kept for when a broker is configured
    result = CliRunner().invoke(main, ["broker", "status"], env=cli_env(settings))
    assert result.exit_code == 0 and "no broker configured" in result.output
