"""The broker sensors as the daemon runs them: off until a broker's URL is set (the events kept
for when one is), and ``agentforge broker status`` saying so."""

from __future__ import annotations

from click.testing import CliRunner
from dagster import DagsterInstance, build_sensor_context

from agentforge_dagster.cli import main
from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order
from tests.orchestration.brokers.helpers import cli_env, store_resource


def test_brokers_are_off_until_configured(
    settings: AgentForgeSettings, store: BusinessStore, instance: DagsterInstance
) -> None:
    defs = build_definitions(settings)
    for name in ("rabbitmq_intake", "redis_intake", "order_events_outbox"):
        with build_sensor_context(instance=instance, resources=store_resource(settings)) as context:
            result = defs.resolve_sensor_def(name)(context)
        assert (
            "not set" in result.skip_reason.skip_message
            or "no broker" in result.skip_reason.skip_message
        )
    store.orders.submit(make_order(1))
    assert store.outbox.outbox_backlog("rabbitmq")[0] == 1  # kept for when a broker is configured
    result = CliRunner().invoke(main, ["broker", "status"], env=cli_env(settings))
    assert result.exit_code == 0 and "no broker configured" in result.output
