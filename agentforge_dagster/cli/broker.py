"""``agentforge broker status``: the brokers' side of intake and events, and their last errors.

agentforge broker status          # intake depth, pending entries, dead letters, outbox backlog
agentforge broker status --json   # the same, for a monitor
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agentforge_dagster.cli.common import open_store

if TYPE_CHECKING:
    from agentforge_dagster.settings import AgentForgeSettings


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


@click.group()
def broker() -> None:
    """Message brokers: orders in (RabbitMQ, Redis Streams), order events out."""


@broker.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def broker_status_command(settings: AgentForgeSettings, as_json: bool) -> None:
    """Intake depth, pending and dead-lettered messages, outbox backlog, last errors."""
    from agentforge_dagster.orchestration.brokers.status import broker_status

    store = open_store(settings)
    status = broker_status(store, settings)
    if as_json:
        click.echo(json.dumps(status.__dict__, default=_shown, indent=2, sort_keys=True))
        return
    if not any(status.configured.values()):
        click.echo(
            "no broker configured (AGENTFORGE_RABBITMQ_URL, AGENTFORGE_REDIS_URL): orders come "
            "in by agentforge submit and the drop folder; events wait in the outbox"
        )
    for name, on in status.configured.items():
        if not on:
            continue
        click.echo(f"{name}:")
        for key, value in status.intake.get(name, {}).items():
            click.echo(f"  intake {key:<16} {_shown(value)}")
        for key, value in status.outbox.get(name, {}).items():
            click.echo(f"  outbox {key:<20} {_shown(value)}")
    for channel, health in status.health.items():
        click.echo(
            f"{channel}: last ok {_shown(health['last_ok_at'])}, last error "
            f"{_shown(health['last_error_at'])}"
            + (f" ({health['last_error']})" if health["last_error"] else "")
        )
