"""The reliability notebook runs top to bottom against a store with real runs in it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from dagster import DagsterInstance, Definitions

from agentforge_dagster.orchestration.runner import fault_run_config, run_orders
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "reliability.ipynb"


def test_notebook_cells_run_and_show_the_report(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [store.submit(make_order(i)).order_id for i in range(2)]
    run_orders(defs, instance, store, ids, run_config=fault_run_config(0.3, 2))
    monkeypatch.setenv("AGENTFORGE_HOME", str(settings.home))
    namespace: dict[str, object] = {}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, str(NOTEBOOK), "exec"), namespace)
    report = namespace["report"]
    assert report.orders_run == 2  # type: ignore[attr-defined]
    failed_attempts = report.steps["failed_attempts"].sum()  # type: ignore[attr-defined]
    assert namespace["failures"].sum() == failed_attempts  # type: ignore[attr-defined]
    assert namespace["spend"]["calls"].sum() == len(store.model_call_rows())  # type: ignore[index]
    assert namespace["revenue"].sum() == pytest.approx(  # type: ignore[attr-defined]
        sum(r["amount_cents"] for r in store.ledger_rows()) / 100
    )
