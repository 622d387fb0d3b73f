"""``agentforge status``, ``report``, ``costs``, ``providers`` and ``budget``: what the business
and its pipeline look like now."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import click

from agentforge_dagster import tracing
from agentforge_dagster.cli.common import open_instance, open_store, user_errors
from agentforge_dagster.domain.state import OrderStatus

if TYPE_CHECKING:
    from agentforge_dagster.persistence.store import BusinessStore
    from agentforge_dagster.settings import AgentForgeSettings


@click.command()
@click.argument("order_id", required=False)
@click.pass_obj
@user_errors
def status(settings: AgentForgeSettings, order_id: str | None) -> None:
    """Orders by state, and the dead letters that wait for a human; with ORDER_ID, that order:
    its state, where it failed, and its trace (the id, and a link with AGENTFORGE_TRACE_URL)."""
    store = open_store(settings)
    if order_id is not None:
        _order_status(settings, store, order_id)
        return
    counts = store.orders.counts_by_status()
    width = max(len(state.value) for state in OrderStatus) + 1
    for state in OrderStatus:
        click.echo(f"{state.value:<{width}} {counts.get(state.value, 0)}")
    waiting = store.review.holds(waiting=True)
    if waiting:
        overdue = sum(1 for hold in waiting if hold.escalated_at is not None)
        click.echo(
            f"waiting for a person: {len(waiting)} ({overdue} escalated: waited over "
            f"{settings.review.escalate_after_hours:g} h); see agentforge review list"
        )
    failed_checks = store.audit.event_count("check_failed")
    if failed_checks:
        click.echo(
            f"checks failed: {failed_checks} (a delivery or an invoice that does not match its "
            "record: see the check_failed events in the audit trail and the assets' Checks tab)"
        )
    letters = store.dead_letters.dead_letters()
    if letters:
        not_launched = sum(1 for letter in letters if letter["error_type"] == "NotLaunchable")
        click.echo(
            f"dead letters: {len(letters)} ({not_launched} could not be launched); "
            "see agentforge dlq list"
        )


def _order_status(settings: AgentForgeSettings, store: BusinessStore, order_id: str) -> None:
    record = store.orders.get(order_id)
    click.echo(f"order {order_id}: {record.status.value}")
    if record.failed_step:
        click.echo(
            f"failed at {record.failed_step} ({record.failed_error_class}): {record.last_error}"
        )
    trace = store.order_trace(order_id)
    click.echo(f"trace: {trace.trace_id_hex}" + ("" if tracing.enabled() else " (tracing is off)"))
    link = settings.traces.link(trace.trace_id_hex)
    if link:
        click.echo(f"trace link: {link}")


def report_text(settings: AgentForgeSettings, store: BusinessStore) -> str:
    """Attempts from the Dagster instance's event log; order statuses from the business store."""
    from agentforge_dagster.metrics.reliability import build_report, format_report
    from agentforge_dagster.metrics.review_gate import format_review_gate, review_gate_figures

    with open_instance(settings) as instance:
        report = build_report(
            instance, store.orders.statuses(), refused=store.orders.refused_count()
        )
        reliability = format_report(report)
    return reliability + "\n\n" + format_review_gate(review_gate_figures(store))


@click.command()
@click.pass_obj
def report(settings: AgentForgeSettings) -> None:
    """Per-step attempts and first-try success, end-to-end success, the no-retry prediction."""
    click.echo(report_text(settings, open_store(settings)))


@click.group()
def budget() -> None:
    """The monthly model budget: orders pause in waiting_budget rather than overspend."""


@budget.command("show")
@click.pass_obj
def budget_show(settings: AgentForgeSettings) -> None:
    """This month's cap, spend and orders waiting for the budget."""
    from agentforge_dagster.domain.models import utcnow

    store = open_store(settings)
    month = utcnow().strftime("%Y-%m")
    cap = store.model_calls.budget_cap(month)
    if cap is None and settings.models.monthly_budget_usd is not None:
        cap = Decimal(str(settings.models.monthly_budget_usd))
    click.echo(
        f"month {month}: cap {cap if cap is not None else 'none'} USD, "
        f"spent {store.model_calls.month_spend(month)} USD, "
        f"{len(store.orders.order_ids(OrderStatus.WAITING_BUDGET))} orders waiting"
    )


@budget.command("set")
@click.argument("cap_usd", type=click.FloatRange(min=0))
@click.option("--month", default="default", help="YYYY-MM, or 'default' for every month.")
@click.pass_obj
def budget_set(settings: AgentForgeSettings, cap_usd: float, month: str) -> None:
    """Set the cap; paused orders resume (budget_resume sensor, or agentforge run)."""
    open_store(settings).model_calls.set_budget(
        Decimal(str(cap_usd)).quantize(Decimal("0.01")), month
    )
    click.echo(f"budget {month}: {cap_usd:.2f} USD")


@click.command()
@click.pass_obj
@user_errors
def providers(settings: AgentForgeSettings) -> None:
    """The model chain and each provider's shared circuit breaker."""
    store = open_store(settings)
    known = {breaker.provider: breaker for breaker in store.breakers.breakers()}
    click.echo(f"chain: {settings.models.chain}")
    click.echo(
        f"breaker: opens after {settings.models.breaker_failures} transient failures within "
        f"{settings.models.breaker_window_seconds:g} s, for {settings.models.breaker_cooldown_seconds:g} s"
    )
    if not known:
        click.echo("no provider has failed yet: every breaker is closed")
    for name, breaker in known.items():
        until = (
            f" until {breaker.open_until.isoformat(timespec='seconds')}"
            if breaker.open_until and breaker.state == "open"
            else ""
        )
        click.echo(
            f"{name}: {breaker.state}{until}, {breaker.failures} failures in the current window"
        )


@click.command()
@click.option(
    "--by",
    "group",
    type=click.Choice(["order", "step", "customer", "model"]),
    default="customer",
    show_default=True,
)
@click.pass_obj
def costs(settings: AgentForgeSettings, group: str) -> None:
    """Model calls, tokens and cost, grouped."""
    from agentforge_dagster.metrics.business import model_costs

    click.echo(model_costs(open_store(settings), group).to_string())
