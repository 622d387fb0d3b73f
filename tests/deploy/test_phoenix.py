"""Traces read back from Phoenix itself (make test-traces, in .ci/run after make test).

Phoenix runs as ``make traces`` runs it (scripts/phoenix.sh: its own venv, loopback, auth on),
and the project is pointed at it by the variables ``make traces ARGS=--env`` prints, nothing
else. Two orders go through the daemon with the Docker run launcher: one launched with a priced
model (gpt-4o-mini, answered by a fake OpenAI server on loopback), one taken by the queue
sensor on the offline model. Their traces are read back through Phoenix's REST and GraphQL
APIs: the span tree, the token counts, Phoenix's own cost for the priced order against the spend
the project recorded, and that no brief reached Phoenix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dagster import DagsterRunStatus

from agentforge_dagster import tracing
from agentforge_dagster.domain.state import OrderStatus
from tests.conftest import make_order
from tests.deploy.conftest import ROOT, DockerDeployment
from tests.fakes.brain import offline_brain
from tests.fakes.llm_server import FakeLLMServer

pytestmark = [pytest.mark.traces, pytest.mark.service, pytest.mark.xdist_group("deploy")]

PRICED = "gpt-4o-mini"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Phoenix:
    url: str
    token: str

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def graphql(self, query: str) -> Any:
        request = urllib.request.Request(
            self.url + "/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.load(answer)
        assert "errors" not in body, body
        return body["data"]

    def spans(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/projects/agentforge/spans?limit=1000")["data"])


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Phoenix as `make traces` starts it, and this process pointed at it as its --env says."""
    home = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_HOME": str(home),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
    }
    log = (home / "phoenix.log").open("w")
    server = subprocess.Popen(
        ["bash", "scripts/phoenix.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5):
                break
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None, (home / "phoenix.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Phoenix did not answer in 180 s"
            time.sleep(1)
    printed = subprocess.run(
        ["bash", "scripts/phoenix.sh", "--env"], cwd=ROOT, env=env, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    variables = dict(
        line.removeprefix("export ").split("=", 1) for line in printed.splitlines() if line
    )
    variables = {name: value.strip("'") for name, value in variables.items()}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield Phoenix(url, variables["OTEL_EXPORTER_OTLP_HEADERS"].split("Bearer ", 1)[1])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def priced_provider() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer=offline_brain) as server:
        yield server


def _spans_by_trace(phoenix: Phoenix, traces: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each order's spans once Phoenix holds its root and every step (ingestion is async)."""
    deadline = time.monotonic() + 180
    while True:
        spans = phoenix.spans()
        found = {
            order_id: [s for s in spans if s["context"]["trace_id"] == trace_id]
            for order_id, trace_id in traces.items()
        }
        if all(
            any(s["name"] == "order" for s in got)
            and sum(s["name"].startswith("step ") for s in got) >= 6
            for got in found.values()
        ):
            return found
        assert time.monotonic() < deadline, {
            o: sorted(s["name"] for s in g) for o, g in found.items()
        }
        time.sleep(2)


def test_two_orders_through_the_docker_launcher_read_back_from_phoenix(
    phoenix: Phoenix, priced_provider: FakeLLMServer, docker_deployment: DockerDeployment
) -> None:
    dep = docker_deployment
    assert tracing.enabled(), "the fixture points this process at Phoenix"
    priced = dep.store.orders.submit(
        make_order(700, brief="Priced brief about quiet harbours")
    ).order_id
    dep.store.orders.claim(priced, run_id=None, step="launch")
    dep.instance.add_dynamic_partitions("orders", [priced])
    model = {"models": f"openai:{PRICED}@{priced_provider.openai_base_url}",
             "openai_api_key": {"env": "OPENAI_API_KEY"}}  # fmt: skip
    run_id = dep.launch(priced, config={"resources": {"model": {"config": model}}})
    by_sensor = dep.store.orders.submit(
        make_order(701, brief="Sensor brief about lighthouse keepers")
    ).order_id
    assert dep.wait_run(run_id, timeout=240).status is DagsterRunStatus.SUCCESS
    deadline = time.monotonic() + 240
    while dep.store.orders.get(by_sensor).status is not OrderStatus.COMPLETED:
        assert time.monotonic() < deadline, f"{by_sensor} not completed in 240 s"
        time.sleep(2)
    tracing.flush()

    traces = {o: dep.store.order_trace(o).trace_id_hex for o in (priced, by_sensor)}
    found = _spans_by_trace(phoenix, traces)
    for order_id, spans in found.items():
        by_id = {s["context"]["span_id"]: s for s in spans}
        [root] = [s for s in spans if s["name"] == "order"]
        assert root["parent_id"] is None and root["span_kind"] == "AGENT"
        assert root["attributes"]["agentforge.status"] == "completed"
        [run] = [s for s in spans if s["name"] == "run"]
        assert by_id[run["parent_id"]] is root
        steps = [s for s in spans if s["name"].startswith("step ")]
        assert {s["name"] for s in steps} >= {
            f"step {n}" for n in ("intake", "plan", "draft", "review", "delivery", "invoice")
        }
        assert all(
            s["parent_id"] == run["context"]["span_id"] and s["span_kind"] == "CHAIN" for s in steps
        )
        assert all(s["attributes"]["agentforge.image"] == dep.images["A"] for s in steps)
        calls = [s for s in spans if s["name"].startswith("chat ")]
        assert calls and all(
            s["span_kind"] == "LLM" and by_id[s["parent_id"]]["name"].startswith("step ")
            for s in calls
        )
        assert any(s["name"] == "intake" for s in spans)

        paid = [r for r in dep.store.model_calls.model_call_rows(order_id) if not r["cache_hit"]]
        query = (
            '{ getProjectByName(name: "agentforge") { trace(traceId: "TRACE") '
            "{ costSummary { total { cost tokens } } } } }"
        )
        summary = phoenix.graphql(query.replace("TRACE", traces[order_id]))["getProjectByName"][
            "trace"
        ]["costSummary"]["total"]
        tokens = sum(r["input_tokens"] + r["output_tokens"] for r in paid)
        assert summary["tokens"] == tokens
        if order_id == priced:
            assert {r["model"] for r in paid} == {PRICED}
            spend = sum(float(r["cost_usd"]) for r in paid)
            assert spend > 0
            # Equal to the recorded precision: the ledger keeps each call's cost to 6 decimals
            # (Numeric(12, 6)), Phoenix prices the same tokens at the same rates unrounded.
            assert abs(summary["cost"] - spend) <= 5e-7 * len(paid)

    everything = json.dumps(phoenix.spans())
    for brief in ("Priced brief about quiet harbours", "Sensor brief about lighthouse keepers"):
        assert brief not in everything
    assert [s for s in found[by_sensor] if s["name"] == "queued"], "the sensor's claim is a span"
