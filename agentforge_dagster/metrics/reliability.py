"""Reliability figures of the order pipeline, computed from the audit trail alone.

Per step: how many orders tried it, how many attempts that took, how often the first try succeeded,
how often the step succeeded in the end (after retries). End to end: the share of finished orders
that completed, next to what the same fault rate would give with no retries, (1 - f)^6.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from agentforge_dagster.execution.steps import STEP_NAMES

ATTEMPT_EVENTS = ("step_succeeded", "step_failed")


def attempts_frame(audit_rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per finished step attempt: order, step, attempt, outcome, error class, fault rate."""
    records = [
        {
            "order_id": row["order_id"],
            "step": row["step"],
            "attempt": row["attempt"],
            "run_id": row["run_id"],
            "succeeded": row["event"] == "step_succeeded",
            "error_class": row["detail"].get("error_class"),
            "fault_rate": row["detail"].get("fault_rate"),
        }
        for row in audit_rows
        if row["event"] in ATTEMPT_EVENTS
    ]
    columns = ["order_id", "step", "attempt", "run_id", "succeeded", "error_class", "fault_rate"]
    return pd.DataFrame.from_records(records, columns=columns)


def step_table(attempts: pd.DataFrame) -> pd.DataFrame:
    """Per step, in pipeline order: orders, attempts, failed attempts, first-try and final success."""
    rows = []
    for step in STEP_NAMES:
        frame = attempts[attempts["step"] == step]
        orders = frame["order_id"].nunique()
        first = frame[frame["attempt"] == 1]
        rows.append(
            {
                "step": step,
                "orders": orders,
                "attempts": len(frame),
                "failed_attempts": int((~frame["succeeded"]).sum()),
                "first_try_success": first["succeeded"].mean() if len(first) else float("nan"),
                "success_after_retries": (
                    frame.groupby("order_id")["succeeded"].any().mean() if orders else float("nan")
                ),
            }
        )
    return pd.DataFrame(rows).set_index("step")


@dataclass(frozen=True)
class ReliabilityReport:
    steps: pd.DataFrame
    orders_run: int
    completed: int
    failed: int
    unfinished: int
    fault_rate: float | None

    @property
    def end_to_end_success(self) -> float:
        finished = self.completed + self.failed
        return self.completed / finished if finished else float("nan")

    @property
    def predicted_without_retries(self) -> float | None:
        """(1 - f)^6: the chance all six steps succeed first time at injected fault rate f."""
        if self.fault_rate is None:
            return None
        return float((1 - self.fault_rate) ** len(STEP_NAMES))

    @property
    def measured_first_try_chain(self) -> float:
        """The product of the measured first-try success rates: the no-retry figure as measured."""
        return float(self.steps["first_try_success"].fillna(1.0).prod())


def build_report(
    audit_rows: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]
) -> ReliabilityReport:
    """``statuses`` maps every order id to its current status in the business store."""
    attempts = attempts_frame(audit_rows)
    run_orders = set(attempts["order_id"])
    run_statuses = [statuses.get(order_id, "unknown") for order_id in run_orders]
    rates = attempts["fault_rate"].dropna()
    return ReliabilityReport(
        steps=step_table(attempts),
        orders_run=len(run_orders),
        completed=run_statuses.count("completed"),
        failed=sum(status in ("failed", "dead_lettered") for status in run_statuses),
        unfinished=sum(status in ("processing", "queued", "replayed") for status in run_statuses),
        fault_rate=float(rates.mode().iloc[0]) if len(rates) else None,
    )


def format_report(report: ReliabilityReport) -> str:
    table = report.steps.copy()
    for column in ("first_try_success", "success_after_retries"):
        table[column] = table[column].map(lambda v: "-" if pd.isna(v) else f"{v:6.1%}")
    lines = [
        "Reliability report",
        "==================",
        table.to_string(),
        "",
        f"orders run:            {report.orders_run}"
        f"  (completed {report.completed}, failed {report.failed}, unfinished {report.unfinished})",
        f"end-to-end success:    {report.end_to_end_success:.1%}  (measured, with retries)",
    ]
    if report.predicted_without_retries is not None:
        lines.append(
            f"without retries:       {report.predicted_without_retries:.1%}  predicted, (1 - f)^6 "
            f"at injected fault rate f = {report.fault_rate:.2f}"
        )
    lines.append(
        f"                       {report.measured_first_try_chain:.1%}  measured, product of "
        "first-try success rates"
    )
    return "\n".join(lines)
