"""What the broker tests share: orders as messages, what the store recorded, and each broker's
side of the contract tests (how its publisher names an order, what it still holds)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from dagster import DagsterInstance
from sqlalchemy import func, select

from agentforge_dagster.orchestration.brokers.base import BrokerKind
from agentforge_dagster.orchestration.brokers.intake import IntakeCounts, take_batch
from agentforge_dagster.orchestration.brokers.registry import RABBITMQ, REDIS
from agentforge_dagster.persistence.schema import audit_log, rejected_orders
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.brokers import publish, queue_counts

QUEUE = "agentforge.orders"
STREAM = "agentforge:orders"
GROUP = "agentforge"  # the settings' default consumer group


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


def take(
    kind: BrokerKind,
    store: BusinessStore,
    instance: DagsterInstance,
    settings: AgentForgeSettings,
    *,
    after_commit: Callable[[int], None] | None = None,
) -> IntakeCounts:
    """One intake batch from ``kind``, as its sensor takes it (the counts)."""
    return take_batch(kind.open(settings), store, instance, settings, after_commit=after_commit)


def declare_intake_queue(settings: AgentForgeSettings) -> None:
    """The queue as the intake declares it on its first tick (with the dead-letter exchange)."""
    from agentforge_dagster.orchestration.brokers.rabbitmq import declare_intake, rabbitmq_channel

    with rabbitmq_channel(settings, "agentforge-test") as (channel, _params):
        declare_intake(channel, settings)


def store_resource(settings: AgentForgeSettings) -> dict[str, Any]:
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


@dataclass
class BrokerUnderTest:
    """One broker's side of a contract test: how to reach it and what it holds."""

    kind: BrokerKind
    url: str
    setting: str  # the settings field of its URL
    unreachable_url: str  # nothing listens there; its password must never be shown
    password: str
    # Publish orders (body, order id): by message_id on RabbitMQ, an order_id field on Redis.
    publish: Callable[[AgentForgeSettings, list[tuple[bytes, str | None]]], None]
    held: Callable[[], int]  # messages of the intake not acknowledged yet (ready or pending)
    dead_lettered: Callable[[], int]

    def configure(self, settings: AgentForgeSettings, **updates: Any) -> AgentForgeSettings:
        return configured(settings, {self.setting: self.url, **updates})


def rabbitmq_under_test(url: str) -> BrokerUnderTest:
    def publish_orders(
        settings: AgentForgeSettings, orders: list[tuple[bytes, str | None]]
    ) -> None:
        declare_intake_queue(settings)
        publish(url, QUEUE, [(body, order_id) for body, order_id in orders])

    def held() -> int:
        ready, unacknowledged = queue_counts(url)[QUEUE]
        return ready + unacknowledged

    return BrokerUnderTest(
        kind=RABBITMQ,
        url=url,
        setting="rabbitmq_url",
        unreachable_url="amqp://guest:guest@127.0.0.1:1/nowhere",
        password="guest:guest",
        publish=publish_orders,
        held=held,
        dead_lettered=lambda: queue_counts(url)[f"{QUEUE}.rejected"][0],
    )


def redis_under_test(url: str) -> BrokerUnderTest:
    client = redis.Redis.from_url(url)

    def publish_orders(
        settings: AgentForgeSettings, orders: list[tuple[bytes, str | None]]
    ) -> None:
        for body, order_id in orders:
            if order_id:
                body = json.dumps({**json.loads(body), "order_id": order_id}).encode()
            client.xadd(STREAM, {"order": body})

    def held() -> int:
        (group,) = [g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP.encode()]
        return int(group["pending"]) + int(group["lag"] or 0)

    return BrokerUnderTest(
        kind=REDIS,
        url=url,
        setting="redis_url",
        unreachable_url="redis://:hunter2-secret@127.0.0.1:1/0",
        password="hunter2-secret",
        publish=publish_orders,
        held=held,
        dead_lettered=lambda: int(client.xlen(f"{STREAM}:rejected")),
    )
