"""The benchmark suite (``make bench``, ``make bench-quick``): ours against the plain script, side by side.

Every system meets the same fake provider (``tests/fakes/llm_server.py``: a real HTTP server on
loopback with a concurrency limit and a latency, answering as the offline model would) and the same
injected step faults (``execution/faults.py``: a pure function of seed, order, step and attempt),
in one run of this script:

(a) ``plain`` — ``bench/plain_script.py``: asyncio + the OpenAI SDK + tenacity, the thing a user
    would write instead (per-step retries, no durability, a semaphore set to the provider's limit);
(b) ``inprocess`` — this project in-process, as ``agentforge run`` runs it (SQLite business store
    and Dagster instance, one run per order), requested automatic replays run the same way;
(c) ``daemon`` — this project under ``dagster-daemon`` with the repository's ``dagster.yaml``
    (PostgreSQL storage on a cluster of its own, S3 compute logs and artifacts on a moto server);
    the concurrency section is set per case (runs, the model pool) and said in the results;
(d) the Docker run launcher is not part of the suite yet: ``tests/deploy`` runs real orders in run
    containers, but no figures are measured there.

For each case it measures orders delivered (automatic replays counted, no manual step), lost,
delivered twice and dead-lettered; model spend per delivered order (the tokens the fake billed, at
the bench prices) relative to the same system's fault-free case; the orchestration's CPU-seconds
per order (the system's processes only: not the fake, not PostgreSQL or S3); p50/p95 latency from
submit to delivered (all orders submitted at once); and the model calls in flight as a fraction of
the provider's limit. Results go to ``bench/RESULTS.md`` (``--write``) with figures
(``bench/figures/*.png``).

    .venv/bin/python bench/suite.py --profile quick            # make bench-quick, < 5 minutes
    .venv/bin/python bench/suite.py --profile full --write bench/RESULTS.md   # make bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaos import booked_or_delivered_twice, percentile  # noqa: E402 (the campaign's figures)

from tests.fakes.brain import offline_brain  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer, ProviderLimits  # noqa: E402

MODEL = "bench-model"
PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per million tokens, the bench prices
STEPS = 6
ORDER_INDEX = re.compile(r"Benchmark order (\d+) ")  # every prompt carries the brief


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Case:
    system: str  # plain | inprocess | daemon | docker
    orders: int
    fault_rate: float
    limit: int  # the provider's concurrent calls
    latency_s: float
    seed: int = 1
    purpose: str = "reliability"  # reliability | throughput


@dataclass
class Result:
    case: Case
    delivered: int = 0
    dead_lettered: int = 0
    lost: int = 0
    twice: int = 0
    replays: int = 0
    paid_calls: int = 0
    spend_usd: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    in_flight: float = 0.0  # mean model calls in flight over the central window
    rate_limited: int = 0
    spend_by_order: dict[int, float] = field(default_factory=dict)  # by the order's index
    machine_busy: float | None = None  # the machine's CPU busy over the case (all cores), 0..1
    notes: str = ""

    @property
    def spend_per_delivered(self) -> float:
        return self.spend_usd / self.delivered if self.delivered else float("nan")

    @property
    def utilisation(self) -> float:
        return self.in_flight / self.case.limit


# -- the fake provider and what it saw --------------------------------------------------------------


@contextmanager
def provider(case: Case) -> Iterator[FakeLLMServer]:
    limits = ProviderLimits(concurrency=case.limit, latency_s=case.latency_s)
    with FakeLLMServer(answer=offline_brain, limits=limits) as fake:
        yield fake


def bill(fake: FakeLLMServer, result: Result) -> None:
    """What the provider billed, and how busy it was between 10% and 90% of its answers."""
    paid = [r for r in fake.requests if r.usage is not None]
    result.paid_calls = len(paid)
    for request in paid:
        assert request.usage is not None
        cost = (request.usage[0] * PRICE_IN + request.usage[1] * PRICE_OUT) / 1e6
        result.spend_usd += cost
        found = ORDER_INDEX.search(request.raw_body.decode(errors="replace"))
        if found:
            index = int(found.group(1))
            result.spend_by_order[index] = result.spend_by_order.get(index, 0.0) + cost
    result.rate_limited = fake.rate_limited
    answered = sorted(
        (r.arrived_at, r.finished_at) for r in fake.requests if r.finished_at is not None
    )
    if len(answered) < 5:
        return
    ends = sorted(end for _, end in answered)
    lo, hi = ends[len(ends) // 10], ends[(len(ends) * 9) // 10]
    busy = sum(max(0.0, min(end, hi) - max(start, lo)) for start, end in answered)
    result.in_flight = busy / (hi - lo) if hi > lo else 0.0


def run_children(
    commands: list[list[str]], envs: list[dict[str, str] | None]
) -> tuple[list[dict[str, Any]], float]:
    """Run Python children side by side to completion: their JSON answers and the CPU-seconds
    they and their children used."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = [
        subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for args, env in zip(commands, envs, strict=True)
    ]
    outputs = [child.communicate() for child in children]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for args, child, (_, stderr) in zip(commands, children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({child.returncode}):\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs], cpu


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
    answers, cpu = run_children([args], [env])
    return answers[0], cpu


# -- (a) the plain script -----------------------------------------------------------------------------


def run_plain(case: Case) -> Result:
    result = Result(case)
    with provider(case) as fake:
        answer, result.cpu_s = run_child(
            [
                "bench/plain_script.py",
                f"--base-url={fake.openai_base_url}",
                f"--model={MODEL}",
                f"--orders={case.orders}",
                f"--fault-rate={case.fault_rate}",
                f"--seed={case.seed}",
                f"--concurrency={case.limit}",
            ]
        )
        bill(fake, result)
    result.delivered = answer["delivered"]
    result.dead_lettered = answer["failed"]  # failed for good: the script has no replay
    result.lost, result.twice = answer["lost"], answer["twice"]
    result.latencies, result.wall_s = answer["latencies"], answer["wall_s"]
    return result


# -- (b) in-process -----------------------------------------------------------------------------------


def project_env(fake: FakeLLMServer, case: Case) -> dict[str, str]:
    """The settings every project case runs with: the fake as the one provider, bench prices."""
    return {
        "AGENTFORGE_MODELS": f"openai:{MODEL}@{fake.openai_base_url}",
        "OPENAI_API_KEY": "sk-bench",
        "AGENTFORGE_MODEL_PRICES_JSON": json.dumps({MODEL: [PRICE_IN, PRICE_OUT]}),
        "AGENTFORGE_MODEL_RATE_LIMITS_JSON": json.dumps(
            {f"openai:{MODEL}": {"concurrency": case.limit}}
        ),
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.05",
        "AGENTFORGE_MODEL_BREAKER_FAILURES": "0",  # step faults are not the provider's
    }


def run_inprocess(case: Case) -> Result:
    """``agentforge run`` on its own home; a large case on two homes side by side (two shells,
    one core each), each running every other order."""
    result = Result(case)
    shards = 2 if case.orders >= 200 else 1
    if shards > 1:
        result.notes = f"{shards} processes side by side, each on its own home"
    with provider(case) as fake, tempfile.TemporaryDirectory(prefix="bench-b-") as tmp:
        envs: list[dict[str, str] | None] = [
            {
                **{k: v for k, v in os.environ.items() if not k.startswith("AGENTFORGE_")},
                **project_env(fake, case),
                "AGENTFORGE_HOME": f"{tmp}/{shard}/agentforge",
                "DAGSTER_HOME": f"{tmp}/{shard}/dagster_home",
                "PYTHONPATH": str(ROOT),
            }
            for shard in range(shards)
        ]
        commands = [
            ["bench/suite.py", "--inprocess-worker", json.dumps([asdict(case), shard, shards])]
            for shard in range(shards)
        ]
        started = time.monotonic()
        answers, result.cpu_s = run_children(commands, envs)
        result.wall_s = time.monotonic() - started
        bill(fake, result)
    for key in ("delivered", "dead_lettered", "lost", "twice", "replays"):
        setattr(result, key, sum(answer[key] for answer in answers))
    result.latencies = [x for answer in answers for x in answer["latencies"]]
    return result


def inprocess_worker(case: Case, shard: int = 0, shards: int = 1) -> dict[str, Any]:
    """Child of (b): submit the orders, run them here, then the automatic replays, and count."""
    from dagster import DagsterInstance

    from agentforge_dagster.definitions import build_definitions
    from agentforge_dagster.domain.models import parse_order
    from agentforge_dagster.orchestration.dead_letters import request_due_replays
    from agentforge_dagster.orchestration.runner import fault_run_config, run_orders, run_replays
    from agentforge_dagster.persistence.store import BusinessStore
    from agentforge_dagster.settings import AgentForgeSettings

    settings = AgentForgeSettings()
    Path(settings.storage.dagster_home).mkdir(parents=True, exist_ok=True)
    (Path(settings.storage.dagster_home) / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
    )
    store = BusinessStore.from_url(settings.storage.resolved_database_url())
    store.upgrade()
    ids = [
        store.orders.submit(parse_order(order(case, i))).order_id
        for i in range(shard, case.orders, shards)
    ]
    submitted = {order_id: time.time() for order_id in ids}
    run_config = {
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        **fault_run_config(case.fault_rate, case.seed),
    }
    defs = build_definitions(settings, drills=True)
    with DagsterInstance.from_config(str(settings.storage.dagster_home)) as instance:
        run_orders(defs, instance, store, ids, run_config=run_config)
        while request_due_replays(store, 0, settings.sensors.dlq_max_replays):
            run_replays(defs, instance, store, run_config=run_config)
    return store_figures(store, ids, submitted)


def order(case: Case, index: int) -> dict[str, Any]:
    return {
        "order_id": f"{case.system}-{case.purpose[0]}{case.limit}-f{int(case.fault_rate * 100)}-{index:05d}",
        "customer": f"c{index % 5}",
        "service": "blog_post",
        "brief": f"Benchmark order {index} about reliable pipelines",
        "price": "100.00",
    }


def store_figures(store: Any, ids: list[str], submitted: dict[str, float]) -> dict[str, Any]:
    """Delivered, dead-lettered, lost, twice, replays and latencies, from the business store."""
    from collections import Counter
    from datetime import UTC

    from sqlalchemy import select

    from agentforge_dagster.persistence.schema import orders as orders_table

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(orders_table.c.order_id, orders_table.c.status, orders_table.c.updated_at).where(
                orders_table.c.order_id.in_(ids)
            )
        ).all()
    status = {order_id: state for order_id, state, _ in rows}
    done_at = {o: at for o, state, at in rows if state == "completed"}
    replays = sum(
        1
        for order_id in ids
        for row in store.audit.audit_rows(order_id)
        if row["event"] == "transition" and row["detail"]["to"] == "replayed"
    )
    return {
        "delivered": len(done_at),
        "dead_lettered": sum(1 for s in status.values() if s == "dead_lettered"),
        "lost": sum(1 for o in ids if o not in status),
        "twice": len(booked_or_delivered_twice(store, ids)),
        "replays": replays,
        "latencies": [
            (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() - submitted[o]
            for o, at in done_at.items()
        ],
        "states": dict(Counter(status.values())),
    }


# -- (c) under the daemon -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    own: float  # CPU-seconds of the process itself
    reaped: float  # of the children it reaped
    rss: int  # bytes
    kind: str  # daemon | code server | run worker | other


def kind_of(cmdline: str) -> str:
    if "dagster-daemon" in cmdline:
        return "daemon"
    if "dagster api grpc" in cmdline:
        return "code server"
    if "spawn_main" in cmdline or "forkserver" in cmdline or "execute_run" in cmdline:
        return "run worker"  # the forkserver and its forks, or Dagster's spawned workers
    return "other"


def session_processes(session: int) -> dict[int, Usage]:
    """Processes of a session (zombies included), by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            if int(fields[3]) != session:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        found[int(entry.name)] = Usage(
            own=(int(fields[11]) + int(fields[12])) / tick,
            reaped=(int(fields[13]) + int(fields[14])) / tick,
            rss=int(fields[21]) * page,
            kind=kind_of(cmdline),
        )
    return found


def machine_cpu() -> tuple[int, int]:
    """The machine's CPU time so far (busy, all), in clock ticks, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


class CpuMeter:
    """The CPU-seconds of a process and everything it starts, orphans included: a cgroup (v2).

    The daemon's code servers are replaced every minute, and a replaced code server's forkserver
    outlives it: its run workers' CPU would be lost to a count of a process tree.
    """

    ROOT = Path("/sys/fs/cgroup/unified")

    def __init__(self, name: str) -> None:
        self.path = self.ROOT / name
        self.path.mkdir(exist_ok=True)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise RuntimeError(f"no usage_usec in {self.path}/cpu.stat")

    def remove(self) -> None:
        """Gone once its last process has exited; a straggler keeps it (harmless, and said)."""
        for _ in range(30):
            try:
                self.path.rmdir()
                return
            except OSError as exc:
                error = exc
                time.sleep(1)
        log(f"cgroup {self.path} kept: {error}")


def concurrency_yaml(text: str, runs: int, pool: int) -> str:
    """The repository's dagster.yaml with the case's run and pool limits."""
    import yaml

    config = yaml.safe_load(text)
    config["concurrency"] = {
        "runs": {"max_concurrent_runs": runs},
        "pools": {"default_limit": pool},
    }
    return yaml.safe_dump(config, sort_keys=False)


class DaemonBench:
    """One production stack (bench/chaos.py's) for every daemon case; the daemon started per case."""

    def __init__(self, work: Path, tree: Path = ROOT) -> None:
        self.work, self.tree = work, tree
        self.meter = CpuMeter(f"agentforge-bench-{os.getpid()}")
        self.stack: Any = None
        self._context: Any = None

    def __enter__(self) -> DaemonBench:
        import chaos

        chaos.ROOT = self.tree  # the daemon's workspace, dagster.yaml and code: the tree's
        self._context = chaos.production_stack(
            self.work,
            {
                "AGENTFORGE_DRILLS": "true",
                "AGENTFORGE_SENSOR_INTERVAL_SECONDS": "2",
                "AGENTFORGE_DLQ_COOLDOWN_SECONDS": "5",
                # A folder with a sitecustomize.py first on the path (e.g. a profiler of the run
                # workers): AGENTFORGE_BENCH_PYTHONPATH.
                "PYTHONPATH": os.pathsep.join(
                    p for p in (os.environ.get("AGENTFORGE_BENCH_PYTHONPATH"), str(self.tree)) if p
                ),
            },
        )
        self.stack = self._context.__enter__()
        self.yaml = (self.tree / "dagster.yaml").read_text()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)
        self.meter.remove()

    def run(self, case: Case, runs: int, pool: int) -> Result:
        from chaos import code_servers, wait_for

        result = Result(case, notes=f"runs {runs}, pool {pool}")
        stack = self.stack
        home = Path(stack.daemon.env["DAGSTER_HOME"])
        (home / "dagster.yaml").write_text(concurrency_yaml(self.yaml, runs, pool))
        with provider(case) as fake:
            stack.daemon.stop(everything=True)
            stack.daemon.env.update(project_env(fake, case))
            stack.daemon.env["AGENTFORGE_FAULT_RATE"] = str(case.fault_rate)
            stack.daemon.env["AGENTFORGE_FAULT_SEED"] = str(case.seed)
            stack.daemon.start()
            assert stack.daemon.process is not None
            self.meter.add(stack.daemon.process.pid)  # before it starts anything: all it starts
            wait_for(code_servers, "code server")
            time.sleep(5)  # the code server loads the definitions: not an order's cost
            assert stack.daemon.process is not None
            self.meter.add(stack.daemon.process.pid)
            cpu_before, machine_before = self.meter.seconds(), machine_cpu()
            ids = [order(case, i)["order_id"] for i in range(case.orders)]
            submitted = {}
            started = time.monotonic()
            for i, order_id in enumerate(ids):
                submitted[order_id] = time.time()
                submit_order(stack, order(case, i))
            self._wait(ids, timeout=max(600.0, case.orders * 20.0))
            result.wall_s = time.monotonic() - started
            result.cpu_s = self.meter.seconds() - cpu_before
            busy, total = (a - b for a, b in zip(machine_cpu(), machine_before, strict=True))
            result.machine_busy = busy / total if total else None
            bill(fake, result)
        figures = store_figures(stack.store, ids, submitted)
        for key in ("delivered", "dead_lettered", "lost", "twice", "replays", "latencies"):
            setattr(result, key, figures[key])
        return result

    def _wait(self, ids: list[str], timeout: float) -> None:
        from chaos import census

        from agentforge_dagster.settings import AgentForgeSettings

        max_replays = AgentForgeSettings().sensors.dlq_max_replays
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = census(self.stack, max_replays)
            if now is not None and all(now.settled(o) for o in ids):
                return
            time.sleep(2)
        log(f"not every order settled in {timeout:.0f} s")

    def idle_memory(self) -> dict[str, float]:
        """RSS (MiB) of the idle stack: the daemon's session (daemon, code server), the webserver's."""
        from tests.pgcluster import free_port

        daemon = session_processes(self.stack.daemon.process.pid)
        port = free_port()
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=ROOT,
            env=self.stack.daemon.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            import urllib.request

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/server_info", timeout=2
                    ).close()
                    break
                except OSError:
                    time.sleep(1)
            time.sleep(10)  # the webserver's code server is up and idle
            webserver = session_processes(web.pid)
        finally:
            os.killpg(web.pid, 15)
            web.wait(timeout=30)
        mib = 1024 * 1024
        return {
            "daemon (with its code server)": sum(u.rss for u in daemon.values()) / mib,
            "webserver (with its code server)": sum(u.rss for u in webserver.values()) / mib,
        }


def submit_order(stack: Any, raw: dict[str, Any]) -> None:
    from agentforge_dagster.domain.models import parse_order
    from agentforge_dagster.orchestration.intake import submit_order as submit

    submit(stack.store, stack.instance, parse_order(raw), source="bench")


# -- the profiles -------------------------------------------------------------------------------------


def profile_cases(profile: str) -> dict[str, list[Case]]:
    """The cases of a profile, by system. Reliability at a short latency, throughput at 5 s."""
    if profile == "cpu":  # one daemon case: the CPU of an order, for a before/after with --tree
        return {"plain": [], "inprocess": [], "daemon": [Case("daemon", 12, 0.0, 4, 1.0, seed=2)]}
    if profile == "throughput":  # the daemon at the provider's limit only
        return {
            "plain": [],
            "inprocess": [],
            "daemon": [
                Case("daemon", 6 * limit, 0.0, limit, 5.0, purpose="throughput") for limit in (4, 8)
            ],
        }
    if profile == "quick":
        return {
            "plain": [Case("plain", n, f, 8, 0.05) for f, n in ((0.0, 200), (0.3, 200))]
            + [Case("plain", 16, 0.0, 4, 2.0, purpose="throughput")],
            "inprocess": [Case("inprocess", n, f, 8, 0.05) for f, n in ((0.0, 8), (0.3, 12))],
            "daemon": [
                Case("daemon", 12, 0.0, 4, 2.0, purpose="throughput"),
                Case("daemon", 12, 0.3, 8, 0.05),
            ],
        }
    rates = ((0.0, 100), (0.1, 100), (0.3, 1000), (0.5, 100))
    return {
        "plain": [Case("plain", n, f, 8, 0.05) for f, n in rates]
        + [
            Case("plain", 6 * limit, 0.0, limit, 5.0, purpose="throughput")
            for limit in (2, 4, 8, 16)
        ],
        "inprocess": [
            Case("inprocess", n, f, 8, 0.05)
            for f, n in ((0.0, 60), (0.1, 60), (0.3, 1000), (0.5, 60))
        ]
        + [Case("inprocess", 4, 0.0, 4, 5.0, purpose="throughput")],
        "daemon": [
            Case("daemon", n, f, 8, 0.05) for f, n in ((0.0, 30), (0.1, 30), (0.3, 100), (0.5, 30))
        ]
        + [
            Case("daemon", 6 * limit, 0.0, limit, 5.0, purpose="throughput")
            for limit in (2, 4, 8, 12, 16)
        ],
    }


def daemon_limits(case: Case, runs: int | None) -> tuple[int, int]:
    """Run and pool limits of a daemon case: runs enough to keep the provider busy, or --runs."""
    return (runs or max(4, 2 * case.limit), 2 * case.limit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile", choices=("quick", "full", "cpu", "throughput"), default="quick"
    )
    parser.add_argument("--systems", default="plain,inprocess,daemon")
    parser.add_argument("--runs", type=int, help="max_concurrent_runs for every daemon case")
    parser.add_argument(
        "--purpose",
        choices=("reliability", "throughput"),
        help="only the cases of this purpose (with --resume, the others are kept)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="the checkout the daemon runs (its code, dagster.yaml, workspace.yaml): a before/after",
    )
    parser.add_argument("--write", type=Path, help="write the results as Markdown here")
    parser.add_argument("--json", type=Path, help="also keep the raw results here")
    parser.add_argument(
        "--resume",
        type=Path,
        help="the raw results of an earlier run (--json): keep those of the systems not run now",
    )
    parser.add_argument("--inprocess-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inprocess_worker:
        case, shard, shards = json.loads(args.inprocess_worker)
        print(json.dumps(inprocess_worker(Case(**case), shard, shards)))
        return 0
    cases = {
        system: [c for c in listed if args.purpose in (None, c.purpose)]
        for system, listed in profile_cases(args.profile).items()
    }
    chosen = args.systems.split(",")
    results: list[Result] = []
    memory: dict[str, float] = {}
    started = time.monotonic()
    for system in ("plain", "inprocess"):
        for case in cases[system] if system in chosen else []:
            log(
                f"{system}: {case.orders} orders, f = {case.fault_rate}, limit {case.limit}, "
                f"latency {case.latency_s} s"
            )
            results.append((run_plain if system == "plain" else run_inprocess)(case))
            log(summary(results[-1]))
    if "daemon" in chosen:
        work = Path(tempfile.mkdtemp(prefix="agentforge-bench-"))
        try:
            with DaemonBench(work, args.tree.resolve()) as bench:
                for case in cases["daemon"]:
                    runs, pool = daemon_limits(case, args.runs)
                    log(
                        f"daemon: {case.orders} orders, f = {case.fault_rate}, limit {case.limit}, "
                        f"latency {case.latency_s} s, runs {runs}, pool {pool}"
                    )
                    results.append(bench.run(case, runs, pool))
                    log(summary(results[-1]))
                memory = bench.idle_memory()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - started
    if args.resume:
        kept, kept_memory, kept_wall = load_results(args.resume)
        results = [
            r
            for r in kept
            if r.case.system not in chosen or args.purpose not in (None, r.case.purpose)
        ] + results
        memory = memory or kept_memory
        wall += kept_wall
        order_of = {system: n for n, system in enumerate(NAMES)}
        results.sort(key=lambda r: order_of[r.case.system])  # stable: cases keep their order
    report = render(results, memory, args, wall)
    print(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": [{**asdict(r), "case": asdict(r.case)} for r in results],
                    "memory": memory,
                    "wall_s": wall,
                }
            )
        )
    if args.write:
        figures(results, args.write.parent / "figures")
        args.write.write_text(report)
    return (
        0 if all(r.lost == 0 and r.twice == 0 for r in results if r.case.system != "plain") else 1
    )


def load_results(path: Path) -> tuple[list[Result], dict[str, float], float]:
    """Results kept with --json (a list of results, or the results with memory and wall time)."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        data = {"results": data, "memory": {}, "wall_s": 0.0}
    results = []
    for raw in data["results"]:
        raw = dict(raw)
        case = Case(**raw.pop("case"))
        raw["spend_by_order"] = {int(k): v for k, v in raw.get("spend_by_order", {}).items()}
        raw.pop("cpu_by_kind", None)  # kept by earlier versions
        results.append(Result(case, **raw))
    return results, data.get("memory", {}), data.get("wall_s", 0.0)


def summary(r: Result) -> str:
    return (
        f"  delivered {r.delivered}/{r.case.orders}, dead-lettered {r.dead_lettered}, lost {r.lost}, "
        f"twice {r.twice}, replays {r.replays}, paid calls {r.paid_calls}, CPU {r.cpu_s:.1f} s, "
        f"wall {r.wall_s:.1f} s, in flight {r.in_flight:.2f}/{r.case.limit}, 429s {r.rate_limited}"
    )


# -- the report ---------------------------------------------------------------------------------------

NAMES = {
    "plain": "(a) plain script",
    "inprocess": "(b) in-process",
    "daemon": "(c) daemon",
    "docker": "(d) Docker launcher",
}


def fmt_s(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.1f} s"


def spend_ratio(result: Result, results: list[Result]) -> str:
    base = [
        r
        for r in results
        if r.case.system == result.case.system
        and r.case.purpose == "reliability"
        and r.case.fault_rate == 0
    ]
    if not base or not base[0].delivered or not result.delivered:
        return "–"
    # Over the orders both cases ran (the same briefs): spend per delivered order.
    common = range(min(result.case.orders, base[0].case.orders))

    def per_delivered(r: Result) -> float:
        spent = sum(r.spend_by_order.get(i, 0.0) for i in common)
        return spent / (len(common) * r.delivered / r.case.orders)

    return f"{per_delivered(result) / per_delivered(base[0]):.2f}×"


def render(results: list[Result], memory: dict[str, float], args: Any, wall: float) -> str:
    lines = [
        "# Benchmark results: the order pipeline against the script a user would write",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
        f"profile `{args.profile}`, {wall / 60:.0f} minutes in all.",
        "",
        f"Command: `.venv/bin/python bench/suite.py --profile {args.profile}"
        + (f" --systems {args.systems}" if args.systems != "plain,inprocess,daemon" else "")
        + (f" --runs {args.runs}" if args.runs else "")
        + (f" --write {args.write}" if args.write else "")
        + "` (`make bench` is the full profile, `make bench-quick` the quick one).",
        "",
        "Every system meets the same fake provider (a real HTTP server on loopback with a limit of "
        "concurrent calls and a latency; a call over the limit gets 429) and the same injected step "
        "faults (before and after each step's work, an attempt fails with probability f). Spend is "
        f"what the provider billed (its token counts at ${PRICE_IN}/${PRICE_OUT} per million input/"
        "output tokens) per delivered order, against the same system without faults. CPU is the "
        "system's own processes (not the provider, not PostgreSQL or S3): a child process's "
        "rusage for (a) and (b), a cgroup holding the daemon and all it starts for (c). Latency is from submit "
        "to delivered, every order submitted at once.",
        "",
        "## Delivered, lost, twice, spend and CPU by fault rate",
        "",
        "| system | f | orders | delivered | no retries (1−f)^6 | dead-lettered | lost | twice "
        "| automatic replays | spend / delivered vs f = 0 | CPU s / order | p50 | p95 | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in results if r.case.purpose == "reliability"):
        c = r.case
        lines.append(
            f"| {NAMES[c.system]} | {c.fault_rate:.1f} | {c.orders} | {r.delivered} "
            f"({r.delivered / c.orders:.1%}) | {(1 - c.fault_rate) ** STEPS:.1%} | "
            f"{r.dead_lettered} | {r.lost} | {r.twice} | {r.replays} | {spend_ratio(r, results)} | "
            f"{r.cpu_s / c.orders:.2f} | {fmt_s(percentile(r.latencies, 50))} | "
            f"{fmt_s(percentile(r.latencies, 95))} | {r.notes} |"
        )
    lines += [
        "",
        "## Throughput at the provider's limit",
        "",
        "Calls in flight: the mean number of the provider's calls under way between the 10th and the "
        "90th percentile of its answers (ramp-up and tail left out), against its limit.",
        "",
        "| system | limit (calls at once) | latency | orders | calls in flight | of the limit "
        "| orders / min | CPU s / order | machine CPU busy | p50 | p95 | 429s | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in results if r.case.purpose == "throughput"):
        c = r.case
        lines.append(
            f"| {NAMES[c.system]} | {c.limit} | {c.latency_s:.0f} s | {c.orders} | "
            f"{r.in_flight:.2f} | {r.utilisation:.0%} | {60 * r.delivered / r.wall_s:.1f} | "
            f"{r.cpu_s / c.orders:.2f} | "
            f"{'–' if r.machine_busy is None else f'{r.machine_busy:.0%}'} | "
            f"{fmt_s(percentile(r.latencies, 50))} | "
            f"{fmt_s(percentile(r.latencies, 95))} | {r.rate_limited} | {r.notes} |"
        )
    lines += side_by_side(results)
    if memory:
        lines += [
            "",
            "## Idle memory of the stack (RSS)",
            "",
            "| processes | MiB |",
            "| --- | --- |",
        ]
        lines += [f"| {name} | {mib:.0f} |" for name, mib in memory.items()]
    if args.write:
        lines += [
            "",
            "## Figures",
            "",
            "![Delivered against the fault rate](figures/delivered-vs-fault-rate.png)",
            "",
            "![Throughput against the provider's limit](figures/throughput-vs-limit.png)",
        ]
    return "\n".join(lines) + "\n"


def side_by_side(results: list[Result]) -> list[str]:
    """Ours against the plain script at the highest common fault rate, as ratios."""
    rel = [r for r in results if r.case.purpose == "reliability"]
    plain = {r.case.fault_rate: r for r in rel if r.case.system == "plain"}
    ours = [r for r in rel if r.case.system != "plain" and r.case.fault_rate in plain]
    if not ours:
        return []
    rates = {r.case.fault_rate for r in ours}
    f = 0.3 if 0.3 in rates else max(rates)  # the targets' fault rate
    a = plain[f]
    lines = [
        "",
        f"## Side by side with the plain script at f = {f}",
        "",
        "| figure | "
        + " | ".join(
            NAMES[r.case.system] for r in [a, *[o for o in ours if o.case.fault_rate == f]]
        )
        + " |",
        "| --- " * (2 + sum(1 for o in ours if o.case.fault_rate == f)) + "|",
    ]
    row = [a, *[o for o in ours if o.case.fault_rate == f]]

    def cells(value: Any) -> str:
        return " | ".join(value(r) for r in row)

    def ratio(value: Any) -> str:
        return " | ".join(
            value(r)
            + (
                ""
                if r is a or not value_of(value, a)
                else f" ({value_of(value, r) / value_of(value, a):.2f}×)"
            )
            for r in row
        )

    def value_of(value: Any, r: Result) -> float:
        return float(value(r).split()[0].rstrip("%×"))

    lines += [
        f"| delivered | {cells(lambda r: f'{r.delivered / r.case.orders:.1%}')} |",
        f"| delivered twice | {cells(lambda r: str(r.twice))} |",
        f"| failed for good (dead-lettered) | {cells(lambda r: str(r.dead_lettered))} |",
        f"| spend / delivered vs fault-free | {cells(lambda r: spend_ratio(r, results))} |",
        f"| CPU s / order | {ratio(lambda r: f'{r.cpu_s / r.case.orders:.3f}')} |",
    ]
    return lines


def figures(results: list[Result], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [i / 100 for i in range(0, 61)]
    ax.plot(rates, [(1 - f) ** STEPS for f in rates], "k--", label="no retries, (1−f)^6")
    for system, marker in (("plain", "s"), ("inprocess", "o"), ("daemon", "^"), ("docker", "D")):
        points = sorted(
            (r.case.fault_rate, r.delivered / r.case.orders)
            for r in results
            if r.case.system == system and r.case.purpose == "reliability"
        )
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=NAMES[system])
    ax.set_xlabel("injected fault rate f (every step, every attempt)")
    ax.set_ylabel("orders delivered")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "delivered-vs-fault-rate.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, marker in (("plain", "s"), ("inprocess", "o"), ("daemon", "^")):
        points = sorted(
            (r.case.limit, r.utilisation)
            for r in results
            if r.case.system == system and r.case.purpose == "throughput"
        )
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=NAMES[system])
    ax.axhline(0.8, color="grey", linestyle=":", label="80 % target")
    ax.set_xlabel("provider limit (concurrent calls), 5 s a call")
    ax.set_ylabel("calls in flight / limit")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.1)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "throughput-vs-limit.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
