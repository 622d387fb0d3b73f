"""``agentforge submit``, ``run`` and ``demo``: orders in, and run here without a daemon."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentforge_dagster.cli.common import (
    EXIT_FAILED,
    EXIT_REJECTED,
    QUIET_LOGGING,
    open_instance,
    open_store,
    user_errors,
)
from agentforge_dagster.domain.services import ServiceKind
from agentforge_dagster.domain.state import OrderStatus

if TYPE_CHECKING:
    from agentforge_dagster.orchestration.runner import OrderRunResult
    from agentforge_dagster.persistence.store import BusinessStore
    from agentforge_dagster.settings import AgentForgeSettings


@click.command()
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
@click.option(
    "--partition",
    is_flag=True,
    help="Also register the order's Dagster partition now, for `dagster job execute` or "
    "`dagster job launch` right after (the queue sensor and agentforge run do it themselves).",
)
@click.pass_obj
@user_errors
def submit(
    settings: AgentForgeSettings,
    file_: Path | None,
    require_approval: bool,
    partition: bool,
    **fields: str | None,
) -> None:
    """Queue one order, from flags or a JSON file. Invalid orders are refused and recorded.

    Dagster is not imported: the order's partition is registered by whoever runs it (the
    order_queue sensor, agentforge run), or now with --partition.
    """
    from agentforge_dagster.domain.errors import AlreadySubmitted, InvalidOrder
    from agentforge_dagster.domain.models import parse_order

    store = open_store(settings)
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
    try:
        order = parse_order(raw)
        if require_approval and not order.require_approval:
            order = order.model_copy(update={"require_approval": True})
        store.orders.submit(order, source=source)
    except AlreadySubmitted as exc:  # the same order again: done already
        if partition:
            _register_partition(settings, exc.order_id)
        click.echo(f"already queued {exc.order_id} (now {exc.status}); nothing to do")
        return
    except InvalidOrder as exc:  # a bad order, or an id that holds a different order
        payload = raw if isinstance(raw, bytes) else json.dumps(raw)
        rejection = store.orders.reject(payload, exc.errors, source=source)
        click.echo(f"order rejected (recorded as rejection {rejection}):", err=True)
        for error in exc.errors[:20]:
            click.echo(f"  - {error[:500]}", err=True)
        if len(exc.errors) > 20:
            click.echo(f"  ... and {len(exc.errors) - 20} more", err=True)
        sys.exit(EXIT_REJECTED)
    if partition:
        _register_partition(settings, order.order_id)
    click.echo(f"queued {order.order_id}")


def _register_partition(settings: AgentForgeSettings, order_id: str) -> None:
    from agentforge_dagster.orchestration.intake import register_orders

    with open_instance(settings) as instance:
        register_orders(instance, [order_id])


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
    lease = settings.runs.lease_seconds
    from agentforge_dagster.progress import counted

    with (
        open_instance(settings) as instance,
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

    with open_instance(settings) as instance:
        for taken in take_back_expired(store, instance, replay=True):
            click.echo(taken.describe())


@click.command()
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Inject transient faults into each step attempt with this probability (a drill).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
@user_errors
def run(settings: AgentForgeSettings, fault_rate: float | None, seed: int) -> None:
    """Run every queued order and every requested replay here, one Dagster run each.

    For set-ups without a daemon; where the daemon runs, its sensors do this. A run that fails
    for good puts its order in the dead-letter queue (agentforge dlq list), as under the daemon.
    """
    from agentforge_dagster.orchestration.dead_letters import resume_waiting_for_budget

    store = open_store(settings)
    _take_back(settings, store)
    queued = store.orders.order_ids(OrderStatus.QUEUED)
    resume_waiting_for_budget(store, settings.models.monthly_budget_usd)
    if not queued and not store.dead_letters.replays_to_launch():
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


@click.command()
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
@user_errors
def demo(
    settings: AgentForgeSettings, count: int, fault_rate: float, seed: int, retry_delay: float
) -> None:
    """Submit N generated orders, run them with injected faults, print the reliability report."""
    from agentforge_dagster.cli.reports import report_text
    from agentforge_dagster.domain.models import parse_order

    retries = settings.retries.model_copy(update={"delay_seconds": retry_delay})
    settings = settings.model_copy(update={"retries": retries})
    store = open_store(settings)
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

    with open_instance(settings) as instance:
        for order in orders:
            submit_order(store, instance, order, source="demo")
    click.echo(f"running {count} orders at {fault_rate:.0%} injected fault rate (seed {seed})")
    _run(settings, store, [order.order_id for order in orders], fault_rate, seed)
    click.echo()
    click.echo(report_text(settings, store))
