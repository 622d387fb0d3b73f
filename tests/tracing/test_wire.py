"""The demo, traced over the wire: a plain OTLP/HTTP receiver and only the standard variables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.otlp_receiver import OtlpReceiver

AGENTFORGE = str(Path(sys.executable).with_name("agentforge"))


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    made = OtlpReceiver()
    yield made
    made.close()


def _demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTFORGE_"))}
    clean.pop("DAGSTER_HOME", None)  # the embedded default: .dagster_home in the working folder
    return subprocess.run(
        [AGENTFORGE, "demo", "--orders", "2", "--fault-rate", "0", "--seed", "3"],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def test_a_demo_order_exports_its_trace_with_genai_spans_and_no_brief(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    _demo(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)

    with sqlite3.connect(tmp_path / ".agentforge" / "agentforge.db") as db:
        orders = dict(db.execute("SELECT order_id, brief FROM orders").fetchall())
    assert len(orders) == 2
    roots = receiver.named("order")
    assert sorted(r.attributes["agentforge.order_id"] for r in roots) == sorted(orders)
    assert all(r.attributes["agentforge.status"] == "completed" for r in roots)
    assert all(r.parent_span_id == "" for r in roots)
    for root in roots:
        order_id = root.attributes["agentforge.order_id"]
        spans = [s for s in receiver.spans if s.trace_id == root.trace_id]
        names = sorted({s.name for s in spans})
        assert {"intake", "queued", "run", "order"} <= set(names), names
        steps = [s for s in spans if s.name.startswith("step ")]
        assert len(steps) == 6, names
        run = next(s for s in spans if s.name == "run")
        assert all(s.parent_span_id == run.span_id for s in steps)
        calls = [s for s in spans if s.name.startswith("chat ")]
        assert calls, names
        for call in calls:
            assert call.kind == 3  # SPAN_KIND_CLIENT
            assert call.attributes["gen_ai.operation.name"] == "chat"
            assert call.attributes["gen_ai.request.model"]
            assert call.attributes["gen_ai.usage.input_tokens"] > 0
            assert any(s.span_id == call.parent_span_id for s in steps)
        assert all(s.attributes["agentforge.order_id"] == order_id for s in spans)
        # Every span starts inside the order's (the last step ends just after the order
        # completes, inside that step).
        assert all(root.start_ns <= s.start_ns <= root.end_ns for s in spans)
        assert all(s.start_ns <= s.end_ns for s in spans)
    assert {r.resource["service.name"] for r in receiver.spans} == {"agentforge"}
    wire = b"".join(receiver.raw)
    for brief in orders.values():
        assert brief.encode() not in wire


def test_the_trace_is_one_click_away_from_dagster_and_the_cli(
    tmp_path: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = "http://127.0.0.1:6006/projects/agentforge/traces/{trace_id}"
    _demo(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, AGENTFORGE_TRACE_URL=viewer)
    [root, _] = receiver.named("order")
    order_id = root.attributes["agentforge.order_id"]

    from dagster import AssetKey, DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster_home"))
    with DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(AssetKey("order_invoice"))
        assert event is not None and event.asset_materialization is not None
        metadata = event.asset_materialization.metadata
        [run] = [r for r in instance.get_runs() if r.tags.get("agentforge/order_id") == order_id]
    expected = {
        s.trace_id
        for s in receiver.spans
        if s.attributes.get("agentforge.order_id") == event.asset_materialization.partition
    }
    assert metadata["trace_id"].value in expected
    assert metadata["trace"].value == viewer.replace("{trace_id}", metadata["trace_id"].value)
    assert run.tags["agentforge/trace_id"] == root.trace_id

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTFORGE_"))}
    shown = subprocess.run(
        [AGENTFORGE, "status", order_id],
        env={**clean, "AGENTFORGE_TRACE_URL": viewer},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"order {order_id}: completed" in shown
    assert f"trace: {root.trace_id} (tracing is off)" in shown
    assert f"trace link: {viewer.replace('{trace_id}', root.trace_id)}" in shown
