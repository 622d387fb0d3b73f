"""The ``agentforge`` command: a thin front over the layers (submit, run, demo, status, report)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from agentforge_dagster.domain.errors import AgentForgeError, AlreadySubmitted, InvalidOrder
from agentforge_dagster.domain.models import ServiceKind, parse_order, utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.domain.steps import STEP_NAMES
from agentforge_dagster.persistence.anchors import write_anchor
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.progress import counted, working
from agentforge_dagster.settings import AgentForgeSettings, load_settings

if TYPE_CHECKING:  # Dagster is imported by the commands that use it: the others start fast
    from dagster import DagsterInstance

    from agentforge_dagster.orchestration.runner import OrderRunResult
    from agentforge_dagster.persistence.backup import BackupLocation
    from agentforge_dagster.persistence.resources import BackupTargetResource

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REJECTED = 2
EXIT_FAILED = 1
QUIET_LOGGING = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _store(settings: AgentForgeSettings) -> BusinessStore:
    return BusinessStore.opened(settings.resolved_database_url())


def _instance(settings: AgentForgeSettings) -> DagsterInstance:
    """The Dagster instance in ``$DAGSTER_HOME`` — the one ``dagster`` and the UI use.

    Without ``DAGSTER_HOME`` it is ``./.dagster_home`` (SQLite), and the command says so: export
    the variable to make ``dagster job launch`` or ``dagster dev`` see the same runs and orders.
    """
    from dagster import DagsterInstance

    home = settings.dagster_home.resolve()
    if "DAGSTER_HOME" not in os.environ:
        click.echo(
            f"DAGSTER_HOME is not set: using the Dagster instance in {home} "
            f"(export DAGSTER_HOME={home} so dagster commands and the UI use it too)",
            err=True,
        )
        os.environ["DAGSTER_HOME"] = str(home)  # say it once per command
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Two commands opening a new home at once would both create its SQLite storage, and Dagster
    # would then find two schema heads: the first to open it does, the other waits.
    with (home / ".opening.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not config.exists():  # the embedded default: SQLite storage in this folder
            config.write_text("telemetry:\n  enabled: false\n")
        return DagsterInstance.from_config(str(home))


def _user_errors(fn: F) -> F:
    """Our own errors end the command with their message, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AgentForgeError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


_DISK_FULL = (
    "; the disk is full: free some space and run the command again (orders in flight are taken "
    "up by the next `agentforge run`)"
)


class _Commands(click.Group):
    """The command group: a database that cannot be used ends any command with one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            cause = getattr(exc, "orig", None) or exc
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
            settings = ctx.obj if isinstance(ctx.obj, AgentForgeSettings) else load_settings()
            raise click.ClickException(
                f"the database cannot be used ({reason}); nothing could be recorded there "
                f"(business database: {_safe_url(settings.resolved_database_url())})"
                + (_DISK_FULL if "full" in reason else "")
            ) from exc
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise click.ClickException(
                f"{exc.strerror} ({exc.filename or 'a write'})" + _DISK_FULL
            ) from exc


@click.group(cls=_Commands)
@click.pass_context
def main(ctx: click.Context) -> None:
    """AgentForge: an AI business's order pipeline on Dagster."""
    ctx.obj = load_settings()


@main.group("db")
def db() -> None:
    """The business database."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: AgentForgeSettings) -> None:
    """Create or bring the business tables up to date; register every order's partition."""
    from agentforge_dagster.orchestration.intake import register_existing_orders

    store = _store(settings)
    with _instance(settings) as instance:
        added = register_existing_orders(store, instance)
    click.echo(f"business database ready: {_safe_url(settings.resolved_database_url())}")
    click.echo(f"order partitions registered in Dagster: {len(added)} new")


def _backup_target(settings: AgentForgeSettings) -> BackupTargetResource:
    """Where backups and audit anchors go: the S3 bucket when one is set, else a local folder."""
    from agentforge_dagster.definitions import backup_target

    return backup_target(settings)


def _backup_location(settings: AgentForgeSettings) -> BackupLocation:
    return _backup_target(settings).location()


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON file holding one order ('-' for standard input).",
)
@click.option(
    "--order-id", help="Your own order id (letters, digits, - and _); generated if absent."
)
@click.option("--customer")
@click.option(  # not a click.Choice: an unknown service is refused and recorded like any field
    "--service", help="One of: " + ", ".join(s.value for s in ServiceKind) + "."
)
@click.option("--brief")
@click.option("--price", help="Price in the ledger currency, e.g. 120.00")
@click.option(
    "--require-approval",
    is_flag=True,
    help="Hold the reviewed deliverable until a person approves it (agentforge review).",
)
@click.pass_obj
@_user_errors
def submit(
    settings: AgentForgeSettings,
    file_: Path | None,
    require_approval: bool,
    **fields: str | None,
) -> None:
    """Queue one order, from flags or a JSON file. Invalid orders are refused and recorded."""
    store = _store(settings)
    raw: bytes | dict[str, Any]
    if file_ is not None:
        if any(value is not None for value in fields.values()):
            raise click.UsageError("give either --file or the order's fields, not both")
        source = "stdin" if str(file_) == "-" else f"file:{file_}"
        try:
            raw = sys.stdin.buffer.read() if str(file_) == "-" else file_.read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {file_}: {exc.strerror}") from exc
    else:
        source = "cli-flags"
        raw = {key: value for key, value in fields.items() if value is not None}
    from agentforge_dagster.orchestration.intake import submit_order

    try:
        order = parse_order(raw)
        if require_approval and not order.require_approval:
            order = order.model_copy(update={"require_approval": True})
        with _instance(settings) as instance:
            submit_order(store, instance, order, source=source)
    except AlreadySubmitted as exc:  # the same order again: done already
        click.echo(f"already queued {exc.order_id} (now {exc.status}); nothing to do")
        return
    except InvalidOrder as exc:  # a bad order, or an id that holds a different order
        payload = raw if isinstance(raw, bytes) else json.dumps(raw)
        rejection = store.reject(payload, exc.errors, source=source)
        click.echo(f"order rejected (recorded as rejection {rejection}):", err=True)
        for error in exc.errors[:20]:
            click.echo(f"  - {error[:500]}", err=True)
        if len(exc.errors) > 20:
            click.echo(f"  ... and {len(exc.errors) - 20} more", err=True)
        sys.exit(EXIT_REJECTED)
    click.echo(f"queued {order.order_id}")


def _order_line(total: int) -> Callable[[int, str], str]:
    """One line per order off a terminal: [done/total], the order, its state, its run, the time."""
    started = time.monotonic()

    def line(done: int, label: str) -> str:
        return f"[{done:>{len(str(total))}}/{total}] {label}  {time.monotonic() - started:6.1f} s"

    return line


def _run(
    settings: AgentForgeSettings,
    store: BusinessStore,
    order_ids: list[str],
    fault_rate: float | None,
    seed: int,
) -> list[OrderRunResult]:
    """Run the orders, then the replays requested, here: what the daemon's sensors would launch.

    Orders left by a runner that is gone are taken back first; SIGINT or SIGTERM stops the
    process within seconds, leaving the order in flight to the next ``agentforge run``.
    """
    from agentforge_dagster.definitions import build_definitions
    from agentforge_dagster.orchestration.runner import (
        fault_run_config,
        leave_current_run,
        run_interruptibly,
        run_orders,
        run_replays,
    )

    run_config: dict[str, Any] = dict(QUIET_LOGGING)
    if fault_rate is not None:
        run_config.update(fault_run_config(fault_rate, seed))
    defs = build_definitions(settings, drills=True if fault_rate is not None else None)
    lease = settings.lease_seconds
    with (
        _instance(settings) as instance,
        counted(len(order_ids), "orders", _order_line(len(order_ids))) as advance,
    ):

        def work() -> list[OrderRunResult]:
            results = run_orders(
                defs,
                instance,
                store,
                order_ids,
                run_config=run_config,
                progress=lambda r: advance(_result_line(r)),
                lease_seconds=lease,
            )
            replays = run_replays(
                defs, instance, store, run_config=dict(QUIET_LOGGING), lease_seconds=lease
            )
            return results + replays

        everything = run_interruptibly(
            work, lambda signum: leave_current_run(store, instance, signum)
        )
    for result in everything[len(order_ids) :]:
        click.echo(f"replay {_result_line(result)}")
    return everything


def _result_line(result: OrderRunResult) -> str:
    if result.skipped is not None:
        return f"{result.order_id} skipped: {result.skipped}"
    return f"{result.order_id} {result.state:<10} run {result.run_id[:8]}"


def _take_back(settings: AgentForgeSettings, store: BusinessStore) -> None:
    """Orders whose runner is gone (killed, out of disk) go back to work before anything else."""
    from agentforge_dagster.orchestration.leases import take_back_expired

    with _instance(settings) as instance:
        for taken in take_back_expired(store, instance, replay=True):
            click.echo(taken.describe())


@main.command()
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Inject transient faults into each step attempt with this probability (a drill).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
@_user_errors
def run(settings: AgentForgeSettings, fault_rate: float | None, seed: int) -> None:
    """Run every queued order and every requested replay here, one Dagster run each.

    For set-ups without a daemon; where the daemon runs, its sensors do this. A run that fails
    for good puts its order in the dead-letter queue (agentforge dlq list), as under the daemon.
    """
    from agentforge_dagster.orchestration.dead_letters import resume_waiting_for_budget

    store = _store(settings)
    _take_back(settings, store)
    queued = store.order_ids(OrderStatus.QUEUED)
    resume_waiting_for_budget(store, settings.monthly_budget_usd)
    if not queued and not store.replays_to_launch():
        click.echo("no queued orders and no replays requested")
        return
    results = _run(settings, store, queued, fault_rate, seed)
    if not all(result.settled for result in results):
        sys.exit(EXIT_FAILED)


DEMO_BRIEFS = (
    "Explain how retries with exponential backoff keep small online shops running",
    "Describe our handmade ceramic mugs for a spring catalogue launch",
    "Announce the opening of a community bakery offering sourdough classes",
    "Invite existing customers to try the new monthly coffee subscription",
    "Write about why observability matters for teams running data pipelines",
)


@main.command()
@click.option("--orders", "count", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option(
    "--fault-rate", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--retry-delay",
    type=click.FloatRange(0, min_open=True),
    default=0.05,
    show_default=True,
    help="Seconds before a step's first retry (production waits longer: AGENTFORGE_RETRY_*).",
)
@click.pass_obj
@_user_errors
def demo(
    settings: AgentForgeSettings, count: int, fault_rate: float, seed: int, retry_delay: float
) -> None:
    """Submit N generated orders, run them with injected faults, print the reliability report."""
    settings = settings.model_copy(update={"retry_delay_seconds": retry_delay})
    store = _store(settings)
    rng = random.Random(seed)
    services = list(ServiceKind)
    orders = []
    for _ in range(count):
        order = parse_order(
            {
                "customer": f"demo-customer-{rng.randrange(1, 6)}",
                "service": rng.choice(services).value,
                "brief": rng.choice(DEMO_BRIEFS),
                "price": f"{rng.randrange(50, 500)}.00",
            }
        )
        orders.append(order)
    from agentforge_dagster.orchestration.intake import submit_order

    with _instance(settings) as instance:
        for order in orders:
            submit_order(store, instance, order, source="demo")
    click.echo(f"running {count} orders at {fault_rate:.0%} injected fault rate (seed {seed})")
    _run(settings, store, [order.order_id for order in orders], fault_rate, seed)
    click.echo()
    click.echo(_report_text(settings, store))


@main.command()
@click.pass_obj
def status(settings: AgentForgeSettings) -> None:
    """Orders by state, and the dead letters that wait for a human."""
    store = _store(settings)
    counts = store.counts_by_status()
    width = max(len(state.value) for state in OrderStatus) + 1
    for state in OrderStatus:
        click.echo(f"{state.value:<{width}} {counts.get(state.value, 0)}")
    waiting = store.holds(waiting=True)
    if waiting:
        overdue = sum(1 for hold in waiting if hold.escalated_at is not None)
        click.echo(
            f"waiting for a person: {len(waiting)} ({overdue} escalated: waited over "
            f"{settings.review_escalate_after_hours:g} h); see agentforge review list"
        )
    failed_checks = store.event_count("check_failed")
    if failed_checks:
        click.echo(
            f"checks failed: {failed_checks} (a delivery or an invoice that does not match its "
            "record: see the check_failed events in the audit trail and the assets' Checks tab)"
        )
    letters = store.dead_letters()
    if letters:
        not_launched = sum(1 for letter in letters if letter["error_type"] == "NotLaunchable")
        click.echo(
            f"dead letters: {len(letters)} ({not_launched} could not be launched); "
            "see agentforge dlq list"
        )


def _report_text(settings: AgentForgeSettings, store: BusinessStore) -> str:
    """Attempts from the Dagster instance's event log; order statuses from the business store."""
    from agentforge_dagster.metrics.reliability import build_report, format_report
    from agentforge_dagster.metrics.review_gate import format_review_gate, review_gate_figures

    with _instance(settings) as instance:
        report = build_report(instance, store.statuses(), refused=store.refused_count())
        reliability = format_report(report)
    return reliability + "\n\n" + format_review_gate(review_gate_figures(store))


@main.command()
@click.pass_obj
def report(settings: AgentForgeSettings) -> None:
    """Per-step attempts and first-try success, end-to-end success, the no-retry prediction."""
    click.echo(_report_text(settings, _store(settings)))


@main.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.pass_obj
@_user_errors
def audit_verify(settings: AgentForgeSettings) -> None:
    """Check the database's integrity, the hash chain, and its tail against the newest anchors."""
    from agentforge_dagster.persistence.anchors import verify_against_anchors
    from agentforge_dagster.persistence.sql import integrity_problem

    url = settings.resolved_database_url()
    store = BusinessStore.from_url(url)
    damaged = integrity_problem(store.engine)
    if damaged:
        click.echo(
            f"database DAMAGED ({_safe_url(url)}): {damaged}; the audit chain was not checked "
            "— restore the newest backup into an empty database (agentforge restore)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    click.echo("database integrity: ok")
    store.upgrade()
    chain = store.verify_audit()
    if chain.ok:
        click.echo(f"audit chain intact: {chain.rows} rows")
    else:
        click.echo(f"audit chain BROKEN at row {chain.first_broken_seq}: {chain.reason}", err=True)
    location = _backup_location(settings)
    anchors = verify_against_anchors(store, location, settings.resolved_audit_anchor_key())
    for problem in anchors.problems:
        click.echo(f"audit tail: {problem}", err=True)
    if anchors.newest is None:
        click.echo(
            f"no trusted audit anchor in {location.describe()}: the chain's tail has no outside "
            "witness yet (agentforge audit anchor, or a backup, writes one)"
        )
    elif anchors.ok:
        newest = anchors.newest
        click.echo(
            f"audit tail matches {anchors.checked} anchor(s), the newest at row {newest.seq} "
            f"({newest.written_at:%Y-%m-%d %H:%M:%S} UTC); rows after it have no outside witness"
        )
    if not chain.ok or not anchors.ok:
        sys.exit(EXIT_FAILED)


@audit.command("anchor")
@click.pass_obj
@_user_errors
def audit_anchor(settings: AgentForgeSettings) -> None:
    """Write the audit chain's head beside the backups now (signed when a key is configured)."""
    key = settings.resolved_audit_anchor_key()
    location = _backup_location(settings)
    anchor, name = write_anchor(_store(settings), location, key, source="agentforge audit anchor")
    click.echo(
        f"audit anchor {name}: row {anchor.seq}, {anchor.rows} rows, "
        f"{'signed' if key else 'unsigned'}, in {location.describe()}"
    )


@main.command()
@click.option(
    "--keep",
    type=click.IntRange(1),
    default=None,
    help="How many newest backups to keep (default AGENTFORGE_BACKUP_KEEP).",
)
@click.pass_obj
@_user_errors
def backup(settings: AgentForgeSettings, keep: int | None) -> None:
    """Back up the business database now (the nightly schedule does the same)."""
    from agentforge_dagster.persistence.backup import create_backup

    target = _backup_target(settings)
    location = target.location()
    with working(f"backing up to {location.describe()}"):
        manifest = create_backup(
            _store(settings),
            location,
            keep=keep or target.keep,
            anchor_key=settings.resolved_audit_anchor_key(),
        )
    click.echo(
        f"backup {manifest.backup_id}: {manifest.size_bytes} bytes, sha256 "
        f"{manifest.sha256[:16]}…, in {location.describe()}"
    )


@main.command("backups")
@click.pass_obj
@_user_errors
def backups_list(settings: AgentForgeSettings) -> None:
    """List the backups kept, newest last."""
    from agentforge_dagster.persistence.backup import read_manifest

    location = _backup_location(settings)
    ids = location.backup_ids()
    if not ids:
        click.echo(f"no backups in {location.describe()}")
    for backup_id in ids:
        manifest = read_manifest(location, backup_id)
        click.echo(
            f"{backup_id}  {manifest.dialect:<10} {manifest.size_bytes:>10} bytes  "
            f"orders {manifest.row_counts.get('orders', 0)}"
        )


@main.command()
@click.argument("backup_id")
@click.option("--target-url", help="Empty database to restore into (default: the configured one).")
@click.pass_obj
@_user_errors
def restore(settings: AgentForgeSettings, backup_id: str, target_url: str | None) -> None:
    """Restore a backup into an empty database; verify its checksum, rows and audit chain."""
    from agentforge_dagster.persistence.backup import restore_backup

    target = target_url or settings.resolved_database_url()
    with working(f"restoring {backup_id} and verifying it"):
        report = restore_backup(_backup_location(settings), backup_id, target)
    click.echo(
        f"restored {backup_id} into {_safe_url(target)}: "
        + ", ".join(f"{table} {count}" for table, count in report.row_counts.items())
        + f"; audit chain verified ({report.audit_rows} rows)"
    )


@main.group()
def budget() -> None:
    """The monthly model budget: orders pause in waiting_budget rather than overspend."""


@budget.command("show")
@click.pass_obj
def budget_show(settings: AgentForgeSettings) -> None:
    """This month's cap, spend and orders waiting for the budget."""
    store = _store(settings)
    month = utcnow().strftime("%Y-%m")
    cap = store.budget_cap(month)
    if cap is None and settings.monthly_budget_usd is not None:
        cap = Decimal(str(settings.monthly_budget_usd))
    click.echo(
        f"month {month}: cap {cap if cap is not None else 'none'} USD, "
        f"spent {store.month_spend(month)} USD, "
        f"{len(store.order_ids(OrderStatus.WAITING_BUDGET))} orders waiting"
    )


@budget.command("set")
@click.argument("cap_usd", type=click.FloatRange(min=0))
@click.option("--month", default="default", help="YYYY-MM, or 'default' for every month.")
@click.pass_obj
def budget_set(settings: AgentForgeSettings, cap_usd: float, month: str) -> None:
    """Set the cap; paused orders resume (budget_resume sensor, or agentforge run)."""
    _store(settings).set_budget(Decimal(str(cap_usd)).quantize(Decimal("0.01")), month)
    click.echo(f"budget {month}: {cap_usd:.2f} USD")


@main.command()
@click.pass_obj
@_user_errors
def providers(settings: AgentForgeSettings) -> None:
    """The model chain and each provider's shared circuit breaker."""
    store = _store(settings)
    known = {breaker.provider: breaker for breaker in store.breakers()}
    click.echo(f"chain: {settings.models}")
    click.echo(
        f"breaker: opens after {settings.model_breaker_failures} transient failures within "
        f"{settings.model_breaker_window_seconds:g} s, for {settings.model_breaker_cooldown_seconds:g} s"
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


@main.command()
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

    click.echo(model_costs(_store(settings), group).to_string())


@main.group()
def dlq() -> None:
    """The dead-letter queue: failed orders waiting for a replay or a human."""


@dlq.command("list")
@click.option("--error-class", type=click.Choice(["transient", "permanent", "infrastructure"]))
@click.pass_obj
def dlq_list(settings: AgentForgeSettings, error_class: str | None) -> None:
    """Dead letters, oldest first: order, failed step, error class, attempts, replays, message."""
    letters = _store(settings).dead_letters(error_class)
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
@_user_errors
def dlq_show(settings: AgentForgeSettings, order_id: str) -> None:
    """ORDER's dead letter in full: why it failed and, if its run's container died, its last lines."""
    letter = _store(settings).dead_letter_of(order_id)
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
@_user_errors
def dlq_replay(
    settings: AgentForgeSettings,
    order_id: str | None,
    replay_all: bool,
    error_class: str | None,
    from_step: str | None,
) -> None:
    """Replay dead letters from their failed step (earlier steps are not redone)."""
    from agentforge_dagster.orchestration.dead_letters import request_replay

    store = _store(settings)
    if replay_all == (order_id is not None):
        raise click.UsageError("name one ORDER_ID or use --all")
    if order_id is not None:
        targets = [order_id]
    else:
        targets = [letter["order_id"] for letter in store.dead_letters(error_class)]
    for target in targets:
        run_key = request_replay(store, target, actor="cli", from_step=from_step)
        click.echo(f"replay requested: {target} ({run_key})")
    if targets:
        click.echo("the dead_letter_replays sensor launches them; without a daemon: agentforge run")
    else:
        click.echo("nothing to replay")


from agentforge_dagster.cli_broker import broker  # noqa: E402  (registered last: no cycle)
from agentforge_dagster.cli_delivery import delivery  # noqa: E402
from agentforge_dagster.cli_deploy import (  # noqa: E402
    deploy_command,
    deploys_command,
    rollback_command,
)
from agentforge_dagster.cli_review import review  # noqa: E402

main.add_command(review)
main.add_command(broker)
main.add_command(delivery)
main.add_command(deploy_command)
main.add_command(rollback_command)
main.add_command(deploys_command)
