"""``agentforge review``: what waits for a person, and their decision on it.

    agentforge review list                 # held orders: why, since when, escalated or not
    agentforge review show ORDER           # the findings and the held draft
    agentforge review approve ORDER        # deliver and invoice the held draft as it is
    agentforge review edit ORDER --file F  # deliver a person's text instead (the draft is kept)
    agentforge review redrive ORDER [--model SPEC] [--note "..."]   # draft and review again
    agentforge review reject ORDER --reason "..."                   # close it, nothing billed

Every decision names its actor (``--actor``, default the OS user) in the audit trail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agentforge_dagster.cli.common import default_actor, open_store
from agentforge_dagster.domain.limits import MAX_EDITED_CHARS

if TYPE_CHECKING:
    from agentforge_dagster.persistence.review_holds import Hold
    from agentforge_dagster.settings import AgentForgeSettings


def _age(since: datetime) -> str:
    seconds = (datetime.now(UTC) - since).total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _line(hold: Hold) -> str:
    flag = "  ESCALATED" if hold.escalated_at is not None else ""
    # What no revision could fix comes first: it is why the order is held.
    ranked = sorted(hold.findings, key=lambda finding: finding["action"] != "quarantine")
    reason = ranked[0]["reason"] if ranked else "approval required"
    more = f" (+{len(hold.reasons) - 1} more)" if len(hold.reasons) > 1 else ""
    return (
        f"{hold.order_id}  {hold.kind}  waiting {_age(hold.held_at)}  step={hold.step}  "
        f"model={hold.model or '-'}{flag}  {reason[:100]}{more}"
    )


@click.group()
@click.option("--actor", default=default_actor, show_default="the OS user", help="Who decides.")
@click.pass_context
def review(ctx: click.Context, actor: str) -> None:
    """Orders held for a person (quarantined, awaiting approval) and decisions on them."""
    ctx.meta["actor"] = actor


@review.command("list")
@click.pass_obj
def review_list(settings: AgentForgeSettings) -> None:
    """Held orders waiting for a decision, oldest first."""
    waiting = open_store(settings).review.holds(waiting=True)
    if not waiting:
        click.echo("nothing waits for a decision")
    for hold in waiting:
        click.echo(_line(hold))


@review.command("show")
@click.argument("order_id")
@click.pass_obj
def review_show(settings: AgentForgeSettings, order_id: str) -> None:
    """Why an order is held, what was decided, and the held draft."""
    hold = open_store(settings).review.latest_hold(order_id)
    if hold is None:
        raise click.ClickException(f"order {order_id!r} was never held for review")
    click.echo(_line(hold))
    for finding in hold.findings:
        click.echo(f"  - [{finding['rule']}] {finding['reason']}")
    if hold.decision is not None:
        click.echo(
            f"decided: {hold.decision} by {hold.decided_by} at {hold.decided_at:%Y-%m-%d %H:%M} UTC"
            + (f" — {hold.note}" if hold.note else "")
        )
    click.echo("")
    click.echo(hold.draft if hold.draft is not None else "(no draft: the model refused)")


def _decide(ctx: click.Context, order_id: str, decision: str, **details: str | None) -> None:
    from agentforge_dagster.domain.errors import AgentForgeError
    from agentforge_dagster.orchestration.review_gate import decide, what_happens_next

    settings: AgentForgeSettings = ctx.obj
    actor = ctx.parent.meta["actor"] if ctx.parent is not None else default_actor()
    try:
        hold = decide(open_store(settings), order_id, decision, actor=actor, **details)
    except AgentForgeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(what_happens_next(hold))


@review.command("approve")
@click.argument("order_id")
@click.option("--note", help="Why, for the audit trail.")
@click.pass_context
def review_approve(ctx: click.Context, order_id: str, note: str | None) -> None:
    """Deliver and invoice the held draft as it is."""
    _decide(ctx, order_id, "approve", note=note)


@review.command("edit")
@click.argument("order_id")
@click.option(
    "--file",
    "file_",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The text to deliver (Markdown).",
)
@click.option("--note", help="Why, for the audit trail.")
@click.pass_context
def review_edit(ctx: click.Context, order_id: str, file_: Path, note: str | None) -> None:
    """Deliver a person's edited text; the model's draft is kept beside it."""
    if file_.stat().st_size > 4 * MAX_EDITED_CHARS:
        raise click.ClickException(f"{file_} is over {MAX_EDITED_CHARS:,} characters")
    try:
        text = file_.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file_} is not UTF-8 text") from exc
    _decide(ctx, order_id, "edit", note=note, edited_text=text)


@review.command("redrive")
@click.argument("order_id")
@click.option("--model", help="Another model chain, e.g. anthropic:claude-sonnet-4-5 or offline.")
@click.option("--note", help="An instruction added to the draft's prompt.")
@click.pass_context
def review_redrive(ctx: click.Context, order_id: str, model: str | None, note: str | None) -> None:
    """Draft and review again, with another model or an added instruction (earlier steps kept)."""
    _decide(ctx, order_id, "redrive", note=note, model=model)


@review.command("reject")
@click.argument("order_id")
@click.option("--reason", required=True, help="Why, for the audit trail.")
@click.pass_context
def review_reject(ctx: click.Context, order_id: str, reason: str) -> None:
    """Close the order without delivery or invoice."""
    _decide(ctx, order_id, "reject", note=reason)
