"""Reliability figures of the order pipeline, read from Dagster's run records and event log.

Dagster already records every step attempt of every run: a ``STEP_START`` (or ``STEP_RESTARTED``
for a retry) opens an attempt, and ``STEP_SUCCESS``, ``STEP_UP_FOR_RETRY`` or ``STEP_FAILURE`` ends
it, with the error. Counting attempts from those events means the report shows what the orchestrator
did, not a second record of it; the audit trail stays a trail. Order statuses come from the business
store, which owns them.

Per step: how many orders tried it, how many attempts that took, how often the first try succeeded,
how often the step succeeded in the end (after retries). End to end: the share of every accepted
order that completed (queued, held and dead-lettered ones count against it), next to what the same
fault rate would give with no retries, (1 - f)^6.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, RunsFilter

from agentforge_dagster.domain.runs import ORDER_PIPELINE, order_of_run, root_error
from agentforge_dagster.domain.steps import STEP_NAMES, step_asset_name

if TYPE_CHECKING:
    import pandas as pd
else:
    from agentforge_dagster.metrics._pandas import pd

ATTEMPT_STARTS = frozenset({DagsterEventType.STEP_START, DagsterEventType.STEP_RESTARTED})
ATTEMPT_ENDS = {
    DagsterEventType.STEP_SUCCESS: True,
    DagsterEventType.STEP_UP_FOR_RETRY: False,
    DagsterEventType.STEP_FAILURE: False,
}
STEP_BY_KEY = {step_asset_name(step): step for step in STEP_NAMES}
ATTEMPT_COLUMNS = [
    "order_id",
    "run_id",
    "step",
    "attempt",
    "run_attempt",
    "succeeded",
    "error_type",
    "error",
]


def order_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """The order pipeline's runs, oldest first: first runs, Dagster's retries and replays alike."""
    records = instance.get_run_records(RunsFilter(job_name=ORDER_PIPELINE), ascending=True)
    return [r.dagster_run for r in records if order_of_run(r.dagster_run.tags) is not None]


def run_attempts(instance: DagsterInstance, run: DagsterRun) -> list[dict[str, Any]]:
    """The finished step attempts of one run, in the order Dagster recorded them.

    An attempt still open when its run ended (the run was killed or cancelled) counts as failed; one
    still open in a run that goes on is in flight and left out.
    """
    order_id = order_of_run(run.tags)
    if order_id is None:
        return []
    connection = instance.get_records_for_run(run.run_id, of_type={*ATTEMPT_STARTS, *ATTEMPT_ENDS})
    attempts: list[dict[str, Any]] = []
    open_attempts: dict[str, dict[str, Any]] = {}
    tries: Counter[str] = Counter()
    for record in connection.records:
        event = record.event_log_entry.dagster_event
        step = STEP_BY_KEY.get(record.event_log_entry.step_key or "")
        if event is None or step is None:
            continue
        if event.event_type in ATTEMPT_STARTS:
            tries[step] += 1
            open_attempts[step] = {
                "order_id": order_id,
                "run_id": run.run_id,
                "step": step,
                "run_attempt": tries[step],
                "succeeded": False,
                "error_type": None,
                "error": None,
            }
        elif step in open_attempts:
            attempt = open_attempts.pop(step)
            attempt["succeeded"] = ATTEMPT_ENDS[event.event_type]
            attempt["error_type"], attempt["error"] = _root_error(event.event_specific_data)
            attempts.append(attempt)
    if run.is_finished:
        for attempt in open_attempts.values():
            attempt["error"] = f"the run ended ({run.status.value}) during this attempt"
            attempts.append(attempt)
    return attempts


def _root_error(data: object) -> tuple[str | None, str | None]:
    """The exception the step raised (under Dagster's wrappers) and its message, on one line."""
    root = root_error(getattr(data, "error", None))
    return root if root is not None else (None, None)


def attempts_frame(instance: DagsterInstance, runs: Iterable[DagsterRun]) -> pd.DataFrame:
    """One row per finished step attempt of the given runs.

    ``run_attempt`` is Dagster's attempt number within the run; ``attempt`` counts the order's
    attempts at the step across all its runs (a replay goes on counting), so attempt 1 is the
    order's first try at the step.
    """
    rows = [attempt for run in runs for attempt in run_attempts(instance, run)]
    tried: Counter[tuple[str, str]] = Counter()
    for row in rows:
        tried[(row["order_id"], row["step"])] += 1
        row["attempt"] = tried[(row["order_id"], row["step"])]
    frame = pd.DataFrame.from_records(rows, columns=ATTEMPT_COLUMNS)
    return frame.astype({"attempt": int, "run_attempt": int, "succeeded": bool})


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


def injected_fault_rate(run: DagsterRun) -> float | None:
    """The fault rate a run was launched with (its ``faults`` resource config), if it says."""
    resources = run.run_config.get("resources")
    faults = resources.get("faults") if isinstance(resources, Mapping) else None
    config = faults.get("config") if isinstance(faults, Mapping) else None
    rate = config.get("rate") if isinstance(config, Mapping) else None
    return float(rate) if isinstance(rate, int | float) else None


# Where each order status counts in the report: every accepted order is in exactly one.
OUTCOMES: dict[str, tuple[str, ...]] = {
    "completed": ("completed",),
    "dead_lettered": ("dead_lettered", "failed"),
    "quarantined": ("quarantined",),
    "awaiting_approval": ("awaiting_approval",),
    "rejected": ("rejected",),
    "unfinished": ("queued", "processing", "replayed", "waiting_budget"),
}


@dataclass(frozen=True)
class ReliabilityReport:
    """Step attempts from Dagster, and where every accepted order stands.

    ``outcomes`` counts every order the business store accepted — run or not yet — by where it
    stands (:data:`OUTCOMES`); end-to-end success is completed over all of them, so an order
    still queued or held for a person counts against it until it is delivered. ``refused`` are
    submissions refused at intake: never accepted, shown on their own line.
    """

    steps: pd.DataFrame
    orders_run: int
    outcomes: dict[str, int]
    fault_rate: float | None
    refused: int = 0

    @property
    def accepted(self) -> int:
        return sum(self.outcomes.values())

    @property
    def completed(self) -> int:
        return self.outcomes["completed"]

    @property
    def failed(self) -> int:
        """Dead-lettered or failed: ended without delivery, waiting for a replay or a person."""
        return self.outcomes["dead_lettered"]

    @property
    def unfinished(self) -> int:
        return self.outcomes["unfinished"]

    @property
    def end_to_end_success(self) -> float:
        """Completed over every accepted order, finished or not."""
        return self.completed / self.accepted if self.accepted else float("nan")

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
    instance: DagsterInstance,
    statuses: Mapping[str, str],
    *,
    fault_rate: float | None = None,
    runs: Sequence[DagsterRun] | None = None,
    refused: int = 0,
) -> ReliabilityReport:
    """The report over ``runs`` (default: every order pipeline run in the instance).

    ``statuses`` maps every accepted order's id to its status in the business store: all of them
    are counted, run or not. ``fault_rate`` is the injected rate for the no-retry prediction; by
    default the one most runs were configured with. ``refused``: submissions refused at intake.
    """
    runs = order_runs(instance) if runs is None else runs
    attempts = attempts_frame(instance, runs)
    run_orders = {order for run in runs if (order := order_of_run(run.tags)) is not None}
    if fault_rate is None:
        rates = Counter(rate for run in runs if (rate := injected_fault_rate(run)) is not None)
        fault_rate = rates.most_common(1)[0][0] if rates else None
    where = {status: outcome for outcome, members in OUTCOMES.items() for status in members}
    counted = Counter(where.get(status, "unfinished") for status in statuses.values())
    return ReliabilityReport(
        steps=step_table(attempts),
        orders_run=len(run_orders),
        outcomes={outcome: counted[outcome] for outcome in OUTCOMES},
        fault_rate=fault_rate,
        refused=refused,
    )


def format_report(report: ReliabilityReport) -> str:
    table = report.steps.copy()
    for column in ("first_try_success", "success_after_retries"):
        table[column] = table[column].map(lambda v: "-" if pd.isna(v) else f"{v:6.1%}")
    outcomes = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in report.outcomes.items())

    def line(label: str, text: str) -> str:
        return f"{label:<23}{text}"

    lines = [
        "Reliability report",
        "==================",
        table.to_string(),
        "",
        line("orders accepted:", f"{report.accepted}  ({outcomes})"),
        line("orders run:", f"{report.orders_run}  (with at least one Dagster run)"),
        line("refused at intake:", f"{report.refused}  (never accepted: not in the figures)"),
        line(
            "end-to-end success:",
            f"{report.end_to_end_success:6.1%}  measured, with retries: completed over every "
            "accepted order",
        ),
    ]
    if report.predicted_without_retries is not None:
        lines.append(
            line(
                "without retries:",
                f"{report.predicted_without_retries:6.1%}  predicted, (1 - f)^6 at injected "
                f"fault rate f = {report.fault_rate:.2f}",
            )
        )
    lines.append(
        line(
            "" if report.predicted_without_retries is not None else "first-try chain:",
            f"{report.measured_first_try_chain:6.1%}  measured, product of first-try success rates",
        )
    )
    return "\n".join(lines)
