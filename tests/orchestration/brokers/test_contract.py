"""What every broker does alike, run against RabbitMQ and Redis Streams in turn (the ``broker``
fixture): the intake's contract, whichever broker carries the orders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME
from agentforge_dagster.orchestration.brokers.intake import CRASH_EXIT_CODE
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.orchestration.brokers.helpers import (
    BrokerUnderTest,
    configured,
    order_body,
    store_resource,
    submitted_count,
    take,
)

CRASHING_INTAKE = """
from dagster import DagsterInstance
from agentforge_dagster.orchestration.brokers.intake import take_batch
from agentforge_dagster.orchestration.brokers.registry import {kind}
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings

settings = AgentForgeSettings()
store = BusinessStore.opened(settings.storage.resolved_database_url())
with DagsterInstance.get() as instance:
    take_batch({kind}.open(settings), store, instance, settings)
"""


def test_a_crash_between_commit_and_ack_redelivers_and_changes_nothing(
    broker: BrokerUnderTest,
    settings: AgentForgeSettings,
    store: BusinessStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = broker.configure(settings)
    broker.publish(settings, [(order_body(i), f"crash-{i}") for i in range(8)])
    broker.publish(settings, [(b"not json", None)])
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {
        "DAGSTER_HOME": str(home),
        "AGENTFORGE_HOME": str(settings.storage.home),
        broker.kind.url_variable: broker.url,
        "AGENTFORGE_FAULT_BROKER_CRASH_AFTER": "4",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_INTAKE.format(kind=broker.kind.name.upper())],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert len(store.orders.order_ids()) == 4  # four committed; the fourth never acknowledged
    assert broker.held() == 6  # the fourth is still the broker's, with the five untaken

    with DagsterInstance.get() as instance:
        counts = take(broker.kind, store, instance, settings).as_dict()
        assert counts == {"queued": 4, "already_queued": 1, "refused": 1}
        assert set(instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME)) == {
            f"crash-{i}" for i in range(8)
        }
    assert submitted_count(store) == 8
    assert broker.held() == 0
    assert broker.dead_lettered() == 1


def test_an_unreachable_broker_skips_the_intake_tick_and_records_why(
    broker: BrokerUnderTest,
    settings: AgentForgeSettings,
    store: BusinessStore,
    instance: DagsterInstance,
) -> None:
    down = configured(settings, {broker.setting: broker.unreachable_url, "timeout_seconds": 2})
    sensor = build_definitions(down).resolve_sensor_def(broker.kind.intake_sensor)
    with build_sensor_context(instance=instance, resources=store_resource(down)) as context:
        skipped = sensor(context)
    assert "unavailable" in skipped.skip_reason.skip_message
    assert broker.password not in skipped.skip_reason.skip_message
    (observation,) = skipped.asset_events
    assert broker.password not in observation.metadata["last_error"].value
    assert store.outbox.broker_health()[broker.kind.intake_channel].last_error is not None
