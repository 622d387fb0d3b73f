"""The reliability figures, read from Dagster's event log, checked against what really happened.

Real orders run through the order pipeline on a temporary Dagster instance with faults injected:
scripted ones whose figures are worked out by hand, and seeded random ones whose every attempt's
outcome is known in advance (fault injection is a pure function of seed, order, step and attempt).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    DynamicPartitionsDefinition,
    Failure,
    asset,
    define_asset_job,
)

from agentforge_dagster.domain.runs import (
    ORDER_PIPELINE,
    ORDER_PIPELINE_TAG_VALUE,
    PIPELINE_TAG,
    REPLAY_OF_TAG,
)
from agentforge_dagster.domain.steps import STEP_NAMES
from agentforge_dagster.execution.faults import PHASES, injected_fault
from agentforge_dagster.metrics.reliability import (
    attempts_frame,
    build_report,
    format_report,
    order_runs,
)
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def faults(**config: Any) -> dict[str, Any]:
    return {**QUIET, "resources": {"faults": {"config": config}}}


def dagster_attempts(instance: DagsterInstance) -> Counter[str]:
    """Attempts per step as Dagster's own event log counts them: starts plus restarts."""
    counts: Counter[str] = Counter()
    for run in order_runs(instance):
        for entry in instance.all_logs(
            run.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_RESTARTED}
        ):
            counts[(entry.step_key or "").removeprefix("order_")] += 1
    return counts


def test_scripted_failures_give_exact_figures(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    first, second = (store.orders.submit(make_order(i)).order_id for i in range(2))
    run_order(defs, instance, store, first, run_config=faults(rate=0.0, fail_first={"plan": 2}))
    run_order(defs, instance, store, second, run_config=faults(rate=0.0, fail_first={"invoice": 1}))

    report = build_report(instance, store.orders.statuses())
    figures = report.steps[["orders", "attempts", "failed_attempts"]].to_dict("index")
    assert figures == {
        "intake": {"orders": 2, "attempts": 2, "failed_attempts": 0},
        "plan": {"orders": 2, "attempts": 4, "failed_attempts": 2},
        "draft": {"orders": 2, "attempts": 2, "failed_attempts": 0},
        "review": {"orders": 2, "attempts": 2, "failed_attempts": 0},
        "delivery": {"orders": 2, "attempts": 2, "failed_attempts": 0},
        "invoice": {"orders": 2, "attempts": 3, "failed_attempts": 1},
    }
    assert report.steps["attempts"].to_dict() == {
        s: dagster_attempts(instance)[s] for s in STEP_NAMES
    }
    first_try = report.steps["first_try_success"].to_dict()
    assert first_try == {**dict.fromkeys(STEP_NAMES, 1.0), "plan": 0.5, "invoice": 0.5}
    assert (report.steps["success_after_retries"] == 1.0).all()
    assert (report.orders_run, report.completed, report.failed, report.unfinished) == (2, 2, 0, 0)
    assert report.fault_rate == 0.0  # from the runs' config
    assert report.predicted_without_retries == 1.0
    assert report.measured_first_try_chain == pytest.approx(0.25)
    text = format_report(report)
    assert "end-to-end success:    100.0%" in text and "25.0%  measured" in text

    attempts = attempts_frame(instance, order_runs(instance))
    plan = attempts[(attempts["order_id"] == first) & (attempts["step"] == "plan")]
    assert plan["run_attempt"].tolist() == [1, 2, 3] == plan["attempt"].tolist()
    assert plan["succeeded"].tolist() == [False, False, True]
    assert plan["error_type"].tolist()[:2] == ["InjectedFault", "InjectedFault"]
    assert plan["error"].tolist()[:2] == [
        "injected fault: plan scripted to fail attempt 1/2",
        "injected fault: plan scripted to fail attempt 2/2",
    ]


def expected_attempts(
    order_ids: list[str], rate: float, seed: int, max_retries: int
) -> list[tuple[str, str, int, bool]]:
    """Every attempt the pipeline makes, worked out from the fault schedule alone."""
    rows = []
    for order_id in order_ids:
        for step in STEP_NAMES:
            for attempt in range(1, max_retries + 2):
                failed = any(
                    injected_fault(
                        rate=rate,
                        seed=seed,
                        order_id=order_id,
                        step=step,
                        attempt=attempt,
                        phase=phase,
                    )
                    for phase in PHASES
                )
                rows.append((order_id, step, attempt, not failed))
                if not failed:
                    break
            else:
                break  # the step ran out of retries: the order's later steps never start
    return rows


def test_seeded_random_faults_every_attempt_as_scheduled(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings: AgentForgeSettings
) -> None:
    rate, seed = 0.3, 4
    order_ids = [store.orders.submit(make_order(i)).order_id for i in range(5)]
    for order_id in order_ids:
        run_order(defs, instance, store, order_id, run_config=faults(rate=rate, seed=seed))

    expected = expected_attempts(order_ids, rate, seed, settings.retries.max_retries)
    attempts = attempts_frame(instance, order_runs(instance))
    measured = list(
        attempts[["order_id", "step", "attempt", "succeeded"]].itertuples(index=False, name=None)
    )
    assert measured == expected
    assert sum(not ok for *_, ok in expected) > 0, "seed 4 at 30% should inject some faults"

    report = build_report(instance, store.orders.statuses())
    assert report.steps["attempts"].sum() == len(expected)
    assert report.steps["failed_attempts"].sum() == sum(not ok for *_, ok in expected)
    firsts = [ok for _, step, attempt, ok in expected if step == "plan" and attempt == 1]
    assert report.steps.loc["plan", "first_try_success"] == pytest.approx(sum(firsts) / len(firsts))
    assert report.fault_rate == rate
    assert report.predicted_without_retries == pytest.approx(0.7**6)


def test_a_permanent_failure_is_one_failed_attempt_and_ends_the_order(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    order = store.orders.submit(make_order())
    broken = {"resources": {"faults": {"config": {"fail_permanently": ["review"]}}}}
    run_order(defs, instance, store, order.order_id, run_config=broken)

    report = build_report(instance, store.orders.statuses(), fault_rate=0.1)
    review = report.steps.loc["review"]
    assert (review["orders"], review["attempts"], review["failed_attempts"]) == (1, 1, 1)
    assert review["first_try_success"] == 0.0 and review["success_after_retries"] == 0.0
    assert report.steps.loc["delivery", "orders"] == 0  # skipped by Dagster, never attempted
    assert (report.orders_run, report.completed, report.failed) == (1, 0, 1)
    assert report.end_to_end_success == 0.0
    assert report.fault_rate == 0.1  # given, not read from the runs (they injected none)
    [failed] = (
        attempts_frame(instance, order_runs(instance)).query("not succeeded").to_dict("records")
    )
    assert failed["step"] == "review" and failed["error_type"] == "InjectedPermanentFault"
    assert failed["error"].startswith("injected permanent fault: review cannot succeed")


# -- across runs: a replay continues the order's attempt count ------------------------------------
ORDERS = DynamicPartitionsDefinition(name="orders")


@asset(name="order_intake", partitions_def=ORDERS)
def intake_asset() -> str:
    return "order"


@asset(name="order_plan", partitions_def=ORDERS, deps=["order_intake"])
def plan_asset(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads the bare name
    if context.run.tags.get(REPLAY_OF_TAG) is None:
        raise Failure("no model answered", allow_retries=False)


def test_a_replay_run_counts_on_from_the_orders_first_run(instance: DagsterInstance) -> None:
    """Two runs of one partition: the plan fails in the first and succeeds in the replay."""
    job = define_asset_job(ORDER_PIPELINE, tags={PIPELINE_TAG: ORDER_PIPELINE_TAG_VALUE})
    other = define_asset_job("something_else", selection=[intake_asset])
    defs = Definitions(assets=[intake_asset, plan_asset], jobs=[job, other])
    instance.add_dynamic_partitions("orders", ["o-1"])
    pipeline = defs.resolve_job_def(ORDER_PIPELINE)
    failed = pipeline.execute_in_process(
        partition_key="o-1", instance=instance, raise_on_error=False
    )
    assert not failed.success
    replay = pipeline.execute_in_process(
        partition_key="o-1",
        instance=instance,
        asset_selection=[plan_asset.key],
        tags={REPLAY_OF_TAG: failed.run_id},
    )
    assert replay.success
    defs.resolve_job_def("something_else").execute_in_process(
        partition_key="o-1", instance=instance
    )

    runs = order_runs(instance)
    assert [run.run_id for run in runs] == [failed.run_id, replay.run_id]
    attempts = attempts_frame(instance, runs)
    plan = attempts[attempts["step"] == "plan"]
    assert plan[["run_id", "attempt", "run_attempt", "succeeded"]].values.tolist() == [
        [failed.run_id, 1, 1, False],
        [replay.run_id, 2, 1, True],
    ]
    assert plan["error"].iloc[0] == "no model answered"
    report = build_report(instance, {"o-1": "completed"}, runs=runs)
    assert report.steps.loc["plan", ["orders", "attempts", "failed_attempts"]].tolist() == [1, 2, 1]
    assert report.steps.loc["plan", "first_try_success"] == 0.0
    assert report.steps.loc["plan", "success_after_retries"] == 1.0
    assert report.steps.loc["intake", "attempts"] == 1
    assert (report.orders_run, report.completed, report.fault_rate) == (1, 1, None)


def test_an_instance_without_runs_gives_an_empty_report(instance: DagsterInstance) -> None:
    report = build_report(instance, {"queued-1": "queued"})
    assert report.orders_run == 0 and report.fault_rate is None
    assert (report.steps["attempts"] == 0).all()
    text = format_report(report)
    assert "orders run:            0" in text and "without retries" not in text


def test_every_accepted_order_is_in_the_denominator_and_refusals_on_their_own_line(
    instance: DagsterInstance,
) -> None:
    statuses = {
        "done-1": "completed",
        "done-2": "completed",
        "letter": "dead_lettered",
        "waiting": "queued",
        "running": "processing",
        "held": "quarantined",
        "approve-me": "awaiting_approval",
        "closed": "rejected",
    }
    report = build_report(instance, statuses, refused=3)
    assert report.outcomes == {
        "completed": 2,
        "dead_lettered": 1,
        "quarantined": 1,
        "awaiting_approval": 1,
        "rejected": 1,
        "unfinished": 2,
    }
    assert report.accepted == 8 and report.end_to_end_success == pytest.approx(2 / 8)
    text = format_report(report)
    assert "end-to-end success:     25.0%" in text
    assert "orders accepted:       8  (completed 2, dead lettered 1, quarantined 1" in text
    assert "refused at intake:     3" in text
    labels = [line[:23] for line in text.splitlines()[-5:]]
    assert all(label.endswith(" ") for label in labels), "one column of values"
