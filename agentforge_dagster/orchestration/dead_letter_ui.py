"""The dead-letter queue in the Dagster UI: an asset that shows it, a launchpad job that replays it.

Dagster counts an order partition as failed only while its latest run failed; a dead-lettered order
whose replay is pending, or whose failure was settled, does not show as failed there. So the
``dead_letter_queue`` asset is the one place in the UI: a table of the letters (order, step, error
class and type, message, attempts, replays) and numbers per error class that the UI plots,
refreshed every ten minutes (or at once: *Materialize* on the asset). The ``replay_dead_letters``
job (launchpad config: ``order_ids``, or ``error_class``, and optionally ``from_step``) asks for
replays exactly as ``agentforge dlq replay`` does; the ``dead_letter_replays`` sensor launches them.
"""
# No "from __future__ import annotations" here: Dagster reads these annotations at definition time.

from collections import Counter
from typing import Any

import dagster as dg
from pydantic import Field

from agentforge_dagster.domain.errors import AgentForgeError
from agentforge_dagster.orchestration.dead_letters import request_replay
from agentforge_dagster.orchestration.review_gate import ACTOR_TAG, UI_UNAUTHENTICATED
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore

ERROR_CLASSES = ("transient", "infrastructure", "permanent")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:160]


def letters_table(letters: list[dict[str, Any]]) -> str:
    """The letters as a Markdown table, oldest first."""
    if not letters:
        return "The dead-letter queue is empty."
    head = "| order | step | class | type | attempts | replays | message |\n" + "|---" * 7 + "|\n"
    rows = "".join(
        f"| {_cell(row['order_id'])} | {row['failed_step']} | {row['error_class']} "
        f"| {_cell(row['error_type'])} | {row['attempts']} | {row['replays']} "
        f"| {_cell(row['message'])} |\n"
        for row in letters
    )
    return head + rows


@dg.asset(
    name="dead_letter_queue",
    group_name="operations",
    kinds={"python"},
    owners=["team:agentforge"],
    description="The orders waiting in the dead-letter queue, as a table; replay them with the "
    "replay_dead_letters job.",
)
def dead_letter_queue_asset(store: BusinessStoreResource) -> dg.MaterializeResult:
    letters = store.get_store().dead_letters.dead_letters()
    by_class = Counter(letter["error_class"] for letter in letters)
    return dg.MaterializeResult(
        metadata={
            "letters": len(letters),
            **{f"letters_{name}": by_class.get(name, 0) for name in ERROR_CLASSES},
            "queue": dg.MetadataValue.md(letters_table(letters)),
        }
    )


class ReplayConfig(dg.Config):
    """Which letters to replay: ``order_ids``, or every letter of ``error_class``; ``from_step``
    starts the replays there instead of at each failed step."""

    order_ids: list[str] = Field(default_factory=list)
    error_class: str = ""
    from_step: str = ""


def replay_letters(
    store: BusinessStore, config: ReplayConfig, actor: str
) -> tuple[list[str], list[str]]:
    """Ask for the replays; returns the orders asked for and the refusals, one line each."""
    if bool(config.order_ids) == bool(config.error_class):
        raise dg.Failure(
            description="name the orders (order_ids) or an error_class, not both",
            allow_retries=False,
        )
    targets = config.order_ids or [
        letter["order_id"] for letter in store.dead_letters.dead_letters(config.error_class)
    ]
    asked, refused = [], []
    for order_id in targets:
        try:
            request_replay(store, order_id, actor=actor, from_step=config.from_step or None)
            asked.append(order_id)
        except AgentForgeError as exc:
            refused.append(f"{order_id}: {exc}")
    return asked, refused


@dg.op(description="Ask for the replay of dead letters (by order ids or by error class).")
def replay_dead_letter_orders(
    context: dg.OpExecutionContext, config: ReplayConfig, store: BusinessStoreResource
) -> dg.Output[int]:
    actor = context.run.tags.get(ACTOR_TAG) or UI_UNAUTHENTICATED
    asked, refused = replay_letters(store.get_store(), config, actor)
    for line in refused:
        context.log.warning(line)
    context.log.info(f"replays asked for: {asked}; the dead_letter_replays sensor launches them")
    return dg.Output(
        len(asked),
        metadata={"asked": len(asked), "refused": len(refused), "orders": ", ".join(asked)},
    )


@dg.job(
    name="replay_dead_letters",
    description="Replay dead letters from the UI: config order_ids, or error_class "
    "(transient, infrastructure, permanent), and optionally from_step.",
)
def replay_dead_letters_job() -> None:
    replay_dead_letter_orders()


dead_letters_job = dg.define_asset_job(
    "dead_letter_queue_job", selection=[dead_letter_queue_asset.key]
)

dead_letters_schedule = dg.ScheduleDefinition(
    name="dead_letter_queue_refresh",
    job=dead_letters_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh the dead_letter_queue asset's table every ten minutes.",
)


def dead_letters_definitions() -> dg.Definitions:
    """The dead letters' area: their asset and its schedule, and the launchpad's replay job."""
    return dg.Definitions(
        assets=[dead_letter_queue_asset],
        jobs=[replay_dead_letters_job, dead_letters_job],
        schedules=[dead_letters_schedule],
    )
