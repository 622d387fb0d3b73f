"""Benchmark (d) of bench/suite.py: orders under the daemon with the Docker run launcher.

``make bench-docker`` runs it (``-m bench``; ``make test`` leaves it out): the deployment of
``tests/deploy/conftest.py`` — the project image, the code server container, the daemon through
the socket proxy, one hardened container a run — with injected faults on every step
(``AGENTFORGE_BENCH_DOCKER_FAULT_RATE``, 0.3) and automatic replays as in production, the offline
model. It counts what the suite counts from the business store and writes ``bench/DOCKER.md``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pytest

from agentforge_dagster.domain.models import parse_order
from agentforge_dagster.orchestration.dead_letters import eligible_for_auto_replay
from agentforge_dagster.orchestration.intake import submit_order
from tests.deploy.conftest import DockerDeployment

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import suite  # noqa: E402

pytestmark = [pytest.mark.bench, pytest.mark.service, pytest.mark.xdist_group("deploy")]


def test_orders_in_run_containers_at_a_fault_rate(docker_deployment: DockerDeployment) -> None:
    deployment = docker_deployment
    rate = float(os.environ.get("AGENTFORGE_BENCH_DOCKER_FAULT_RATE", "0.3"))
    orders = int(os.environ.get("AGENTFORGE_BENCH_DOCKER_ORDERS", "20"))
    case = suite.Case("docker", orders, rate, 0, 0.0)
    submitted: dict[str, float] = {}
    started = time.monotonic()
    for index in range(orders):
        raw = suite.order(case, index)
        submitted[raw["order_id"]] = time.time()
        submit_order(deployment.store, deployment.instance, parse_order(raw), source="bench")
    ids = list(submitted)
    deadline = time.monotonic() + 60 * 30
    while time.monotonic() < deadline:
        status = deployment.store.orders.statuses()
        pending = set(eligible_for_auto_replay(deployment.store, 0, 3))
        if all(
            status.get(o) == "completed" or (status.get(o) == "dead_lettered" and o not in pending)
            for o in ids
        ):
            break
        time.sleep(5)
    wall = time.monotonic() - started
    figures = suite.store_figures(deployment.store, ids, submitted)
    events = [row["event"] for o in ids for row in deployment.store.audit.audit_rows(o)]
    attempts, failed = events.count("step_started"), events.count("step_failed")
    latencies = figures["latencies"]
    p50 = statistics.median(latencies) if latencies else None
    p95 = suite.percentile(latencies, 95)
    (ROOT / "bench" / "DOCKER.md").write_text(
        "# Benchmark (d): the Docker run launcher\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores: "
        f"{orders} orders submitted at once, f = {rate} on every step, the offline model, one "
        "hardened container a run (tests/deploy/conftest.py's deployment), automatic replays as in "
        "production. Command: `make bench-docker`.\n\n"
        "| orders | delivered | no retries (1−f)^6 | step attempts (failed) | dead-lettered | lost "
        "| twice | automatic replays | p50 | p95 | wall |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {orders} | {figures['delivered']} ({figures['delivered'] / orders:.0%}) | "
        f"{(1 - rate) ** 6:.1%} | {attempts} ({failed}) | {figures['dead_lettered']} | "
        f"{figures['lost']} | "
        f"{figures['twice']} | {figures['replays']} | {suite.fmt_s(p50)} | {suite.fmt_s(p95)} | "
        f"{wall:.0f} s |\n"
    )
    assert failed > 0 if rate > 0 else failed == 0, "the faults reached the run containers"
    assert figures["lost"] == 0 and figures["twice"] == 0, figures
    assert figures["delivered"] + figures["dead_lettered"] == orders, figures
