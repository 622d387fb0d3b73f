"""What order partitions cost at scale (``make bench-partitions``): 10k and 100k beside a baseline.

Every order is a dynamic partition (``orders``) of the order pipeline. This measures what a large
partition set costs the parts that touch it, on a Dagster instance backed by PostgreSQL: a
throwaway database on the shared server (``AGENTFORGE_TEST_PG_URL``, default
``postgres@127.0.0.1:5432``), and a second one for the business store; both are dropped at the end.

The instance is grown to each size in turn, smallest first — partitions added in batches with
``add_dynamic_partitions``, each with a materialization of ``order_intake`` as a past order has —
and at each size it measures, median of ``--repeats``:

- one tick of the real ``order_queue`` sensor, with 5 orders queued in the business store: it
  claims them and registers their partitions, as under the daemon (the daemon's own launching of
  the runs is not part of it);
- adding one partition with ``instance.add_dynamic_partitions``, registering one order the way
  intake does (``register_orders``, for every order the queue sensor launches or a runner
  runs), and deleting one partition as the retention job does;
- the asset's Partitions tab in a real ``dagster-webserver`` on 127.0.0.1: the UI's own
  ``PartitionHealthQuery`` over HTTP (``bench/partitions.graphql``), with Dagster's partition
  status cache warm, and right after one new order (a new partition changes the partitions
  definition's id, and the cache is rebuilt);
- the partition counts the asset graph shows on the node (``partitionStats``).

    .venv/bin/python bench/partitions.py --write bench/PARTITIONS.md     # make bench-partitions
    .venv/bin/python bench/partitions.py --sizes 100,2000 --repeats 3  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    EventLogEntry,
    build_sensor_context,
)

# Bulk set-up only: Dagster has no public way to write many runless materializations at once
# (report_runless_asset_event writes one, ~3 ms each on PostgreSQL).
from dagster._core.events import StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the helpers are the tests' own

from agentforge_dagster.definitions import build_definitions  # noqa: E402
from agentforge_dagster.domain.runs import ORDERS_PARTITIONS_NAME  # noqa: E402
from agentforge_dagster.domain.state import OrderStatus  # noqa: E402
from agentforge_dagster.orchestration.intake import register_orders  # noqa: E402
from agentforge_dagster.persistence.resources import BusinessStoreResource  # noqa: E402
from agentforge_dagster.persistence.store import BusinessStore  # noqa: E402
from agentforge_dagster.settings import AgentForgeSettings  # noqa: E402
from tests.conftest import PG_ADMIN_URL, make_order  # noqa: E402
from tests.pgcluster import free_port  # noqa: E402

BIN = Path(sys.executable).parent
QUERIES = (Path(__file__).parent / "partitions.graphql").read_text()
MEASURED_ASSET = "order_intake"
QUEUED_PER_TICK = 5
SETUP_BATCH = 5_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the stack: two throwaway databases, an instance on one, a webserver over it ----------------
@contextlib.contextmanager
def throwaway_databases(admin_url: str, count: int) -> Iterator[list[str]]:
    """``count`` new, empty PostgreSQL databases on the server of ``admin_url``; dropped after."""
    admin: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    made: list[str] = []
    try:
        try:
            with admin.connect() as conn:
                for _ in range(count):
                    name = f"agentforge_bench_{uuid.uuid4().hex[:12]}"
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    made.append(name)
        except OperationalError as exc:
            raise SystemExit(
                f"PostgreSQL is not reachable at {admin_url} (make services): {exc}"
            ) from exc
        url = make_url(admin_url)
        yield [url.set(database=name).render_as_string(hide_password=False) for name in made]
    finally:
        if made:
            with admin.connect() as conn:
                for name in made:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_version(admin_url: str) -> str:
    engine = create_engine(admin_url)
    with engine.connect() as conn:
        version = str(conn.execute(text("show server_version")).scalar_one())
    engine.dispose()
    return version


def write_instance_config(home: Path, dagster_url: str) -> None:
    """The storage of the repository's dagster.yaml (dagster-postgres with the project's fix and
    kept connection); nothing else of it is needed here."""
    home.mkdir(parents=True, exist_ok=True)
    storage = {
        "custom": {
            "module": "agentforge_dagster.instance.storage",
            "class": "AgentForgePostgresStorage",
            "config": {"postgres_url": dagster_url},
        }
    }
    config = {"storage": storage, "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@dataclass
class Webserver:
    """A ``dagster-webserver`` process of this tree's workspace.yaml on a loopback port."""

    url: str
    process: subprocess.Popen[bytes]

    def query(self, operation: str, variables: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        """Seconds, response bytes and data of one operation of bench/partitions.graphql."""
        body = json.dumps(
            {"query": QUERIES, "operationName": operation, "variables": variables}
        ).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as answer:
            raw = answer.read()
        elapsed = time.perf_counter() - started
        document = json.loads(raw)
        if document.get("errors"):
            raise RuntimeError(f"{operation}: {document['errors']}")
        return elapsed, len(raw), document["data"]

    def rss_bytes(self) -> int:
        """Resident memory of the webserver process (not of the code server it started)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def health(server: Webserver) -> dict[str, Any]:
    return server.query("PartitionHealthQuery", {"assetKey": {"path": [MEASURED_ASSET]}})[2]


@contextlib.contextmanager
def webserver(env: dict[str, str], log_path: Path) -> Iterator[Webserver]:
    """Start the webserver (it starts the code location's server) and wait until it has the asset."""
    port = free_port()
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [BIN / "dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server is in its group: stopped with it
        )
    server = Webserver(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if health(server)["assetNodeOrError"].get("id"):
                    break
            except (OSError, RuntimeError, KeyError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dagster-webserver did not serve the asset; see {log_path}")
            time.sleep(1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- set-up ---------------------------------------------------------------------------------------
def past_order_id(index: int) -> str:
    return f"past-{index:07d}"


def materialized(partition: str) -> EventLogEntry:
    """The runless materialization of the measured asset for one partition."""
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(
            AssetMaterialization(AssetKey(MEASURED_ASSET), partition=partition)
        ),
    )
    return EventLogEntry(
        error_info=None,
        level="debug",
        user_message="",
        run_id=RUNLESS_RUN_ID,
        timestamp=time.time(),
        dagster_event=event,
    )


def grow(instance: DagsterInstance, dagster_url: str, start: int, stop: int) -> float:
    """Past orders ``start``..``stop``: partitions and materializations in batches; seconds."""
    started = time.perf_counter()
    for first in range(start, stop, SETUP_BATCH):
        keys = [past_order_id(i) for i in range(first, min(stop, first + SETUP_BATCH))]
        instance.add_dynamic_partitions(ORDERS_PARTITIONS_NAME, keys)
        instance.event_log_storage.store_event_batch([materialized(key) for key in keys])
    engine = create_engine(dagster_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:  # what autovacuum does on its own after a large insert
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


# -- the measurements -----------------------------------------------------------------------------
@dataclass
class Bench:
    instance: DagsterInstance
    store: BusinessStore
    business_url: str
    server: Webserver
    defs: dagster.Definitions
    repeats: int
    made: int = 0
    fresh_ids: list[str] = field(default_factory=list)

    def fresh(self, kind: str) -> str:
        """A new order id, never used before in this run."""
        self.made += 1
        return f"{kind}-{self.made:06d}"

    def sensor_tick(self) -> float:
        """One evaluation of order_queue over 5 freshly queued orders; they move on afterwards."""
        ids = [
            self.store.orders.submit(make_order(i, order_id=self.fresh("tick"))).order_id
            for i in range(QUEUED_PER_TICK)
        ]
        sensor = self.defs.resolve_sensor_def("order_queue")
        started = time.perf_counter()
        with build_sensor_context(
            instance=self.instance,
            resources={"store": BusinessStoreResource(database_url=self.business_url)},
            definitions=self.defs,
        ) as context:
            requests = sensor(context)
        elapsed = time.perf_counter() - started
        requested = sorted(request.partition_key for request in requests)
        if requested != sorted(ids) or not self.instance.has_dynamic_partition(
            ORDERS_PARTITIONS_NAME, ids[0]
        ):
            raise RuntimeError(f"the tick requested {requested}, not the queued {ids}")
        for order_id in ids:  # as their runs would: the next tick sees only its own orders
            self.store.orders.transition(order_id, OrderStatus.PROCESSING, step="bench")
        return elapsed

    def add_partition(self) -> float:
        key = self.fresh("added")
        started = time.perf_counter()
        self.instance.add_dynamic_partitions(ORDERS_PARTITIONS_NAME, [key])
        return time.perf_counter() - started

    def delete_partition(self) -> float:
        key = self.fresh("deleted")
        self.instance.add_dynamic_partitions(ORDERS_PARTITIONS_NAME, [key])
        started = time.perf_counter()
        self.instance.delete_dynamic_partition(ORDERS_PARTITIONS_NAME, key)
        return time.perf_counter() - started

    def register_order(self) -> float:
        key = self.fresh("registered")
        started = time.perf_counter()
        added = register_orders(self.instance, [key])
        elapsed = time.perf_counter() - started
        if added != [key]:
            raise RuntimeError(f"register_orders added {added}, not {key}")
        return elapsed

    def page(self) -> tuple[float, int]:
        seconds, size, data = self.server.query(
            "PartitionHealthQuery", {"assetKey": {"path": [MEASURED_ASSET]}}
        )
        [dimension] = data["assetNodeOrError"]["partitionKeysByDimension"]
        expected = len(self.instance.get_dynamic_partitions(ORDERS_PARTITIONS_NAME))
        if len(dimension["partitionKeys"]) != expected:
            raise RuntimeError(f"the page lists {len(dimension['partitionKeys'])} of {expected}")
        return seconds, size

    def page_after_new_order(self) -> float:
        self.instance.add_dynamic_partitions(ORDERS_PARTITIONS_NAME, [self.fresh("new")])
        return self.page()[0]

    def counts(self, materialized_partitions: int) -> float:
        seconds, _, data = self.server.query(
            "PartitionStatsQuery", {"assetKeys": [{"path": [MEASURED_ASSET]}]}
        )
        [node] = data["assetNodes"]
        stats = node["partitionStats"]
        if stats["numMaterialized"] != materialized_partitions:
            raise RuntimeError(f"partitionStats {stats}, {materialized_partitions} materialized")
        return seconds

    def repeat(self, measure: Callable[[], float]) -> float:
        return statistics.median(measure() for _ in range(self.repeats))


ROWS = [
    ("setup", "set-up: bulk add from the size before (partitions + materializations)"),
    ("tick", f"`order_queue` sensor tick, {QUEUED_PER_TICK} queued orders"),
    ("add", "add one partition (`add_dynamic_partitions`)"),
    ("register", "register one order (`register_orders`, every order launched)"),
    ("delete", "delete one partition (`delete_dynamic_partition`, as retention does)"),
    ("page", "Partitions tab (`PartitionHealthQuery`), status cache warm"),
    ("page_new", "Partitions tab right after a new order (cache rebuilt)"),
    ("counts", "partition counts on the asset node (`partitionStats`)"),
    ("bytes", "Partitions tab response"),
    ("rss", "webserver resident memory after these loads"),
]


def measure_size(bench: Bench, materialized_partitions: int) -> dict[str, float]:
    row: dict[str, float] = {}
    row["tick"] = bench.repeat(bench.sensor_tick)
    row["add"] = bench.repeat(bench.add_partition)
    row["register"] = bench.repeat(bench.register_order)
    row["delete"] = bench.repeat(bench.delete_partition)
    bench.page()  # the first load after growing builds Dagster's status cache; not counted
    pages = [bench.page() for _ in range(bench.repeats)]
    row["page"] = statistics.median(seconds for seconds, _ in pages)
    row["bytes"] = pages[-1][1]
    row["counts"] = bench.repeat(lambda: bench.counts(materialized_partitions))
    row["page_new"] = bench.repeat(bench.page_after_new_order)
    row["rss"] = bench.server.rss_bytes()
    return row


# -- the report -----------------------------------------------------------------------------------
def seconds_text(value: float) -> str:
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def bytes_text(value: float) -> str:
    return f"{value / 1e6:.1f} MB" if value >= 1e6 else f"{value / 1e3:.0f} kB"


def cell(key: str, value: float) -> str:
    return bytes_text(value) if key in ("bytes", "rss") else seconds_text(value)


def table(sizes: list[int], rows: dict[int, dict[str, float]]) -> str:
    small, large = sizes[0], sizes[-1]
    lines = [
        "| measurement | " + " | ".join(f"{size:,} partitions" for size in sizes) + " | "
        f"{large:,} ÷ {small:,} |",
        "| --- |" + " --- |" * (len(sizes) + 1),
    ]
    for key, label in ROWS:
        values = [rows[size][key] for size in sizes]
        ratio = f"{values[-1] / values[0]:.1f}×" if key != "setup" and values[0] > 0 else "–"
        lines.append(f"| {label} | " + " | ".join(cell(key, v) for v in values) + f" | {ratio} |")
    return "\n".join(lines)


def meaning(sizes: list[int], rows: dict[int, dict[str, float]], interval: int) -> str:
    small, large = sizes[0], sizes[-1]
    low, high = rows[small], rows[large]
    first_prune = high["delete"] * large
    slowest = max(high[key] for key in ("tick", "register", "add", "delete"))
    per_order = "under 100 ms" if slowest < 0.1 else f"under {seconds_text(slowest)}"
    prune_text = f"{first_prune / 60:.0f} minutes" if first_prune >= 120 else f"{first_prune:.0f} s"
    text = f"""\
## What this means

Nothing here stops working at {large:,} partitions; what grows is what lists every partition, and
that is Dagster's UI. The Partitions tab gets every key and the keys in each status, so its answer
grows with the partitions ({bytes_text(low["bytes"])} at {small:,}, {bytes_text(high["bytes"])} at
{large:,}), and so does its time: {seconds_text(low["page"])} against {seconds_text(high["page"])}
with Dagster's status cache warm. Every new order changes the dynamic partitions definition's id
(a hash of all its keys), so the first load after one rebuilds the cache:
{seconds_text(high["page_new"])} at {large:,}. With orders arriving all day that is the wait a
person sees, before the browser draws {large:,} partitions. The partition counts on the asset's
node in the graph and the catalog take {seconds_text(high["counts"])} at {large:,}.

What AgentForge does per order asks Dagster only about that order's partition (`register_orders`
asks about the ids it registers), so it stays {per_order} at every size: the `order_queue` tick
takes {seconds_text(low["tick"])} at {small:,} and {seconds_text(high["tick"])} at {large:,}
(against a {interval} s interval), registering an order {seconds_text(low["register"])} and
{seconds_text(high["register"])}. Deleting is one partition at a time
({seconds_text(high["delete"])} each at {large:,}), so the first `prune_order_partitions` over a
backlog of {large:,} would take about {prune_text}; a daily run deletes one day's orders.

It starts to matter past a few tens of thousands of partitions, and to people using the UI.
`AGENTFORGE_PARTITION_RETENTION_DAYS` keeps the set at about the orders of that many days plus the
orders still open (queued, running, held, dead-lettered, waiting for the budget — never pruned):
at 30 days, 333 orders a day stay near 10,000 partitions and 3,300 a day near 100,000, the most
Dagster advises per asset. Without it the set grows by every order ever taken.
"""
    return "\n\n".join(" ".join(part.split("\n")) for part in text.strip().split("\n\n")) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda value: sorted({int(size) for size in value.split(",")}),
        default=[100, 10_000, 100_000],
        help="partition counts, comma-separated (default 100,10000,100000)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="repetitions per measurement")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="an admin URL of the PG server")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    args = parser.parse_args()
    sizes: list[int] = args.sizes
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: dict[int, dict[str, float]] = {}
    with (
        throwaway_databases(args.pg_url, 2) as (dagster_url, business_url),
        tempfile.TemporaryDirectory(prefix="agentforge-bench-") as tmp,
    ):
        work = Path(tmp)
        home = work / "dagster_home"
        write_instance_config(home, dagster_url)
        settings = AgentForgeSettings(
            storage={
                "home": work / "agentforge",
                "dagster_home": home,
                "database_url": business_url,
            }
        )
        store = BusinessStore.from_url(business_url)
        store.upgrade()
        env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTFORGE_")}
        env.update(
            DAGSTER_HOME=str(home),
            AGENTFORGE_HOME=str(work / "agentforge"),
            AGENTFORGE_DATABASE_URL=business_url,
            PYTHONPATH=str(ROOT),
        )
        with (
            DagsterInstance.from_config(str(home)) as instance,
            webserver(env, work / "webserver.log") as server,
        ):
            log(f"webserver up at {server.url}")
            bench = Bench(
                instance, store, business_url, server, build_definitions(settings), args.repeats
            )
            grown = 0
            for size in sizes:
                setup = grow(instance, dagster_url, grown, size)
                grown = size
                log(f"{size:,} partitions: set up in {setup:.1f} s; measuring")
                rows[size] = {"setup": setup, **measure_size(bench, size)}
                log(", ".join(f"{k} {cell(k, v)}" for k, v in rows[size].items()))
        store.engine.dispose()
        server_version = postgres_version(args.pg_url)
    total = time.perf_counter() - began
    load_after = os.getloadavg()[0]

    command = "bench/partitions.py" + "".join(f" {a}" for a in sys.argv[1:] if a)
    body = table(sizes, rows)
    print(body)
    if args.write:
        args.write.write_text(
            "\n".join(
                [
                    "# What order partitions cost: 10k and 100k beside a baseline",
                    "",
                    f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
                    f"{os.cpu_count()} cores (shared with other work; load average {load_before:.2f} at "
                    f"the start, {load_after:.2f} at the end), "
                    f"Python {platform.python_version()}, Dagster {dagster.__version__}, "
                    f"PostgreSQL {server_version} on 127.0.0.1 holding the instance's storage "
                    "(the repository's: dagster-postgres with the project's fix and kept "
                    "connection) and the business store. Median of "
                    f"{args.repeats} repetitions; the whole run took {total / 60:.1f} min.",
                    "",
                    f"Command: `.venv/bin/python {command}`",
                    "",
                    "Each size is the same instance grown further: every partition has one "
                    f"materialization of `{MEASURED_ASSET}` (a past order), the measured asset. "
                    "The business store holds only the orders the ticks queue. The webserver is "
                    "`dagster-webserver` over this tree's workspace.yaml; the page's query is the "
                    "UI's own (`bench/partitions.graphql`), sent over HTTP. The measurements add "
                    "a few dozen partitions at each size.",
                    "",
                    body,
                    "",
                    meaning(sizes, rows, AgentForgeSettings().sensors.interval_seconds),
                ]
            )
        )
    log(f"done in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
