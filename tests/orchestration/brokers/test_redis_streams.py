"""The Redis Streams intake against the machine's Redis (a database of its own per test), and a
``redis-server`` of the test's own, append-only, for the test that kills it mid-stream.

What every broker does alike is in test_contract.py; here what is Redis's own: entry ids as order
ids, entries a dead consumer left pending (XAUTOCLAIM), the ``<stream>:rejected`` stream, a
server killed and restarted from its log.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
from dagster import DagsterInstance

from agentforge_dagster.orchestration.brokers.redis_streams import RedisStreams
from agentforge_dagster.orchestration.brokers.registry import REDIS
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.brokers import OwnRedis
from tests.orchestration.brokers.helpers import (
    STREAM,
    configured,
    order_body,
    refusals,
    submitted_count,
    take,
)


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
    time.sleep(0.3)

    totals = {"queued": 0, "already_queued": 0, "refused": 0}
    for _ in range(3):
        for key, value in take(REDIS, store, instance, settings).as_dict().items():
            totals[key] += value
    assert totals == {"queued": 25, "already_queued": 0, "refused": 3}
    assert submitted_count(store) == 25
    assert set(store.orders.order_ids()) == {*ids[:20], *(f"own-{i}" for i in range(5))}
    assert client.xpending(STREAM, settings.brokers.redis_group)["pending"] == 0
    dead = client.xrange(f"{STREAM}:rejected")
    assert [fields[b"entry_id"].decode() for _id, fields in dead] == [b.decode() for b in bad]
    assert "no 'order' field" in json.loads(dead[1][1][b"errors"])[0]
    assert {r["message_key"] for r in refusals(store)} == {
        f"redis:{STREAM}:{b.decode()}" for b in bad
    }

    # Entries published again under a new id are new orders: ids are the publisher's, not hashes.
    client.xadd(STREAM, {"order": order_body(0, order_id="own-0")})  # the same order id again
    assert take(REDIS, store, instance, settings).already_queued == 1


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

    with pytest.raises(RedisStreams.unavailable):
        take(REDIS, store, instance, settings, after_commit=kill_redis)
    with pytest.raises(RedisStreams.unavailable):  # down: the next tick fails too, taking nothing
        take(REDIS, store, instance, settings)
    assert len(store.orders.order_ids()) == 6

    own_redis.start()  # from its append-only file: the group, its pending entries, the stream
    counts = take(REDIS, store, instance, settings)
    assert counts.as_dict() == {"queued": 9, "already_queued": 1, "refused": 0}
    assert submitted_count(store) == 15
    client = redis.Redis.from_url(own_redis.url)
    assert client.xpending(STREAM, settings.brokers.redis_group)["pending"] == 0
