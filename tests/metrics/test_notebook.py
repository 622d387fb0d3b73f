"""The reliability notebook, executed by nbconvert against a store with real runs: it draws figures.

The kernel is a real Jupyter kernel (ipykernel) in a separate process, pointed at the test's
business store and Dagster instance through the environment, as a user's would be.
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from dagster import DagsterInstance, Definitions
from nbconvert.preprocessors import ExecutePreprocessor

from agentforge_dagster.orchestration.runner import fault_run_config, run_orders
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "reliability.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_notebook_executes_and_draws_its_figures_from_real_runs(
    defs: Definitions,
    store: BusinessStore,
    settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.storage.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.storage.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(settings.storage.dagster_home)) as instance:
        ids = [store.orders.submit(make_order(i)).order_id for i in range(3)]
        run_orders(defs, instance, store, ids, run_config=fault_run_config(0.3, 2))
    monkeypatch.setenv("AGENTFORGE_HOME", str(settings.storage.home))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.storage.dagster_home))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))  # the kernel runs this checkout
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    ExecutePreprocessor(timeout=300, kernel_name="python3").preprocess(
        notebook, {"metadata": {"path": str(tmp_path)}}
    )
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out["data"]["image/png"] for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) >= 5, "delivered vs fault rate, attempts, latency, spend, money"
    assert all(base64.b64decode(figure).startswith(PNG) for figure in figures)
    text = "".join(out.get("text", "") for out in outputs)
    assert "orders accepted:       3" in text, "the report over the real runs"
