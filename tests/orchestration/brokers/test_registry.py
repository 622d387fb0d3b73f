"""The registry: each broker named by its kind opens as a :class:`Broker`, under the names
Dagster and the store know it by; and naming them imports no broker client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentforge_dagster.orchestration.brokers.base import Broker, BrokerKind
from agentforge_dagster.orchestration.brokers.rabbitmq import RabbitMQ
from agentforge_dagster.orchestration.brokers.redis_streams import RedisStreams
from agentforge_dagster.orchestration.brokers.registry import BROKERS, RABBITMQ, REDIS
from agentforge_dagster.orchestration.brokers.sensors import intake_asset
from agentforge_dagster.settings import AgentForgeSettings


@pytest.mark.parametrize(("kind", "cls"), [(RABBITMQ, RabbitMQ), (REDIS, RedisStreams)])
def test_each_kind_opens_as_a_broker_of_its_own_module(
    kind: BrokerKind, cls: type, settings: AgentForgeSettings
) -> None:
    broker = kind.open(settings)
    assert type(broker) is cls and isinstance(broker, Broker)
    assert broker.kind is kind
    assert not kind.configured(settings)  # no URL in the test settings: off


def test_the_names_dagster_and_the_store_know_stay() -> None:
    assert [kind.name for kind in BROKERS] == ["rabbitmq", "redis"]  # the outbox's destinations
    assert [kind.intake_sensor for kind in BROKERS] == ["rabbitmq_intake", "redis_intake"]
    assert [intake_asset(kind).path for kind in BROKERS] == [
        ["broker", "rabbitmq_intake"],
        ["broker", "redis_intake"],
    ]
    assert [(kind.intake_channel, kind.events_channel) for kind in BROKERS] == [
        ("rabbitmq-intake", "rabbitmq-events"),
        ("redis-intake", "redis-events"),
    ]


def test_naming_the_brokers_imports_no_client_and_the_status_no_dagster() -> None:
    probe = (
        "import sys\n"
        "import agentforge_dagster.orchestration.brokers.status\n"
        "import agentforge_dagster.orchestration.brokers.registry\n"
        "print(' '.join(m for m in ('pika', 'redis', 'dagster') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == []
