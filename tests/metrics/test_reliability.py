"""The reliability figures, on an audit trail whose answer is worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from agentforge_dagster.metrics.reliability import build_report, format_report


def attempt(order: str, step: str, n: int, ok: bool, rate: float = 0.3) -> dict[str, Any]:
    return {
        "order_id": order,
        "step": step,
        "attempt": n,
        "run_id": f"run-{order}",
        "event": "step_succeeded" if ok else "step_failed",
        "detail": {"fault_rate": rate, **({} if ok else {"error_class": "transient"})},
    }


def test_report_counts_attempts_first_tries_and_end_to_end() -> None:
    rows = [
        {
            "order_id": "a",
            "step": None,
            "attempt": None,
            "run_id": None,
            "event": "order_submitted",
            "detail": {},
        },
        attempt("a", "intake", 1, False),
        attempt("a", "intake", 2, True),
        attempt("a", "plan", 1, True),
        attempt("b", "intake", 1, True),
        attempt("b", "plan", 1, False),
        attempt("b", "plan", 2, False),
    ]
    report = build_report(rows, {"a": "completed", "b": "failed", "c": "queued"})
    intake, plan = report.steps.loc["intake"], report.steps.loc["plan"]
    assert (intake["orders"], intake["attempts"], intake["failed_attempts"]) == (2, 3, 1)
    assert intake["first_try_success"] == pytest.approx(0.5)
    assert intake["success_after_retries"] == pytest.approx(1.0)
    assert (plan["orders"], plan["attempts"], plan["failed_attempts"]) == (2, 3, 2)
    assert plan["first_try_success"] == pytest.approx(0.5)
    assert plan["success_after_retries"] == pytest.approx(0.5)
    assert report.steps.loc["draft", "orders"] == 0
    assert (report.orders_run, report.completed, report.failed) == (2, 1, 1)
    assert report.end_to_end_success == pytest.approx(0.5)
    assert report.predicted_without_retries == pytest.approx(0.7**6)
    assert report.measured_first_try_chain == pytest.approx(0.25)
    text = format_report(report)
    assert "end-to-end success:    50.0%" in text and "11.8%" in text


def test_empty_trail_gives_an_empty_report() -> None:
    report = build_report([], {})
    assert report.orders_run == 0 and report.fault_rate is None
    assert "orders run:            0" in format_report(report)
