"""``agentforge dlq``: failed orders waiting for a replay or a human."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from agentforge_dagster.cli.common import open_store, user_errors
from agentforge_dagster.domain.steps import STEP_NAMES

if TYPE_CHECKING:
    from agentforge_dagster.settings import AgentForgeSettings


@click.group()
def dlq() -> None:
    """The dead-letter queue: failed orders waiting for a replay or a human."""


@dlq.command("list")
@click.option("--error-class", type=click.Choice(["transient", "permanent", "infrastructure"]))
@click.pass_obj
def dlq_list(settings: AgentForgeSettings, error_class: str | None) -> None:
    """Dead letters, oldest first: order, failed step, error class, attempts, replays, message."""
    letters = open_store(settings).dead_letters.dead_letters(error_class)
    if not letters:
        click.echo("the dead-letter queue is empty")
    for letter in letters:
        click.echo(
            f"{letter['order_id']}  step={letter['failed_step']}  {letter['error_class']}"
            f"/{letter['error_type']}  attempts={letter['attempts']}  replays={letter['replays']}"
            f"  run={letter['run_id'][:8]}  {' '.join(letter['message'].split())[:120]}"
        )


@dlq.command("show")
@click.argument("order_id")
@click.pass_obj
@user_errors
def dlq_show(settings: AgentForgeSettings, order_id: str) -> None:
    """ORDER's dead letter in full: why it failed and, if its run's container died, its last lines."""
    letter = open_store(settings).dead_letters.dead_letter_of(order_id)
    if letter is None:
        raise click.ClickException(f"{order_id} has no dead letter")
    for key in ("order_id", "run_id", "failed_step", "error_class", "error_type", "attempts"):
        click.echo(f"{key:<14}{letter[key]}")
    click.echo(f"{'replays':<14}{letter['replays']}")
    click.echo(f"{'lettered at':<14}{letter['dead_lettered_at']}")
    click.echo(f"{'message':<14}{letter['message']}")
    if letter.get("worker_output"):
        click.echo("the run container's last lines:")
        for line in str(letter["worker_output"]).splitlines():
            click.echo(f"  {line}")


@dlq.command("replay")
@click.argument("order_id", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every letter (of --error-class).")
@click.option("--error-class", type=click.Choice(["transient", "permanent", "infrastructure"]))
@click.option(
    "--from",
    "from_step",
    type=click.Choice(STEP_NAMES),
    help="Start at this step instead of the failed one (e.g. draft: write the deliverable anew).",
)
@click.pass_obj
@user_errors
def dlq_replay(
    settings: AgentForgeSettings,
    order_id: str | None,
    replay_all: bool,
    error_class: str | None,
    from_step: str | None,
) -> None:
    """Replay dead letters from their failed step (earlier steps are not redone)."""
    from agentforge_dagster.orchestration.dead_letters import request_replay

    store = open_store(settings)
    if replay_all == (order_id is not None):
        raise click.UsageError("name one ORDER_ID or use --all")
    if order_id is not None:
        targets = [order_id]
    else:
        targets = [letter["order_id"] for letter in store.dead_letters.dead_letters(error_class)]
    for target in targets:
        run_key = request_replay(store, target, actor="cli", from_step=from_step)
        click.echo(f"replay requested: {target} ({run_key})")
    if targets:
        click.echo("the dead_letter_replays sensor launches them; without a daemon: agentforge run")
    else:
        click.echo("nothing to replay")
