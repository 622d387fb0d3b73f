"""One failure decision: a run Dagster retries is never dead-lettered; bad items never block a tick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, build_sensor_context, instance_for_test

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.domain.runs import (
    ORDER_PIPELINE,
    ORDER_PIPELINE_TAG_VALUE,
    PARTITION_TAG,
    PIPELINE_TAG,
    WILL_RETRY_TAG,
)
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.failures import (
    Verdict,
    failure_of_run,
    settle_unlaunchable,
)
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.schema import orders
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order

RUN_RETRIES = {"run_retries": {"enabled": True, "max_retries": 2}}


def evaluate(defs: Definitions, instance: DagsterInstance, name: str, url: str, cursor=None):
    with build_sensor_context(
        instance=instance,
        resources={
            "store": BusinessStoreResource(database_url=url),
            "artifact_io_manager": defs.resources["artifact_io_manager"],
        },
        definitions=defs,
        cursor=cursor,
    ) as context:
        result = defs.resolve_sensor_def(name)(context)
        return result, context.cursor


@pytest.fixture
def two_views(tmp_path: Path) -> Iterator[tuple[DagsterInstance, DagsterInstance]]:
    """One Dagster storage seen by two instances: a run worker that does not tag failed runs
    (as in the window before ``dagster/will_retry`` is written), and the daemon's, with run
    retries on."""
    shared = {"storage": {"sqlite": {"base_dir": str(tmp_path / "dagster_storage")}}}
    (tmp_path / "worker").mkdir()
    (tmp_path / "daemon").mkdir()
    with (
        instance_for_test(temp_dir=str(tmp_path / "worker"), overrides=shared) as worker,
        instance_for_test(
            temp_dir=str(tmp_path / "daemon"), overrides={**shared, **RUN_RETRIES}
        ) as daemon,
    ):
        yield worker, daemon


def failed_run(defs: Definitions, instance: DagsterInstance, order_id: str, **tags: str) -> str:
    """A run of the order pipeline for ``order_id`` that died without a failed step."""
    run = instance.create_run_for_job(
        defs.resolve_job_def(ORDER_PIPELINE),
        tags={PIPELINE_TAG: ORDER_PIPELINE_TAG_VALUE, PARTITION_TAG: order_id, **tags},
    )
    instance.report_run_failed(run)
    return run.run_id


def test_a_run_dagster_will_retry_is_never_dead_lettered(defs, store, settings, two_views) -> None:
    worker, daemon = two_views
    url = settings.storage.resolved_database_url()
    order = store.orders.submit(make_order())
    store.orders.claim(order.order_id, run_id=None, step="intake")
    run_id = failed_run(defs, worker, order.order_id)
    assert WILL_RETRY_TAG not in daemon.get_run_by_id(run_id).tags  # the race's window

    # The old run-failure sensor read the missing tag as "no retry" and dead-lettered here.
    _, cursor = evaluate(defs, daemon, "dead_letter_queue", url)
    assert store.orders.get(order.order_id).status is OrderStatus.PROCESSING
    assert cursor is None, "an undecided run keeps the cursor before it"

    daemon.add_run_tags(run_id, {WILL_RETRY_TAG: "true"})
    _, cursor = evaluate(defs, daemon, "dead_letter_queue", url, cursor)
    assert store.orders.get(order.order_id).status is OrderStatus.PROCESSING
    assert store.dead_letters.dead_letters() == []

    # Dagster's retry run fails too, and Dagster says it is the last: now the order is lettered.
    retry_id = failed_run(defs, worker, order.order_id)
    daemon.add_run_tags(retry_id, {WILL_RETRY_TAG: "false"})
    _, cursor = evaluate(defs, daemon, "dead_letter_queue", url, cursor)
    assert store.orders.get(order.order_id).status is OrderStatus.DEAD_LETTERED
    [letter] = store.dead_letters.dead_letters()
    assert (letter["run_id"], letter["failed_step"], letter["error_class"]) == (
        retry_id,
        "launch",
        "infrastructure",
    )
    assert cursor is not None
    transitions = [r["detail"]["to"] for r in store.audit.audit_rows(order.order_id)]
    assert transitions.count("dead_lettered") == 1


def test_an_older_failed_run_does_not_speak_for_a_newer_one(defs, store, settings) -> None:
    with instance_for_test() as instance:
        order = store.orders.submit(make_order())
        stale = failed_run(defs, instance, order.order_id)
        store.orders.claim(order.order_id, run_id=None, step="intake")
        instance.create_run_for_job(
            defs.resolve_job_def(ORDER_PIPELINE),
            tags={PIPELINE_TAG: ORDER_PIPELINE_TAG_VALUE, PARTITION_TAG: order.order_id},
        )
        _, _ = evaluate(
            defs, instance, "dead_letter_queue", settings.storage.resolved_database_url()
        )
        assert store.orders.get(order.order_id).status is OrderStatus.PROCESSING, stale


def queue_unchecked(store: BusinessStore, order_id: str) -> None:
    """A queued row written around intake's checks (a hand edit, an old import)."""
    with store.begin() as conn:
        conn.execute(
            orders.insert().values(
                order_id=order_id,
                customer="x",
                service="blog_post",
                brief="a brief that is long enough",
                price_cents=100,
                status="queued",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )


def test_a_bad_replay_request_does_not_stop_the_others(defs, instance, store, settings) -> None:
    url = settings.storage.resolved_database_url()
    good = store.orders.submit(make_order(1)).order_id
    queue_unchecked(store, "bad...id")
    for order_id in (good, "bad...id"):
        store.orders.claim(order_id, run_id=None, step="intake")
        store.orders.transition(
            order_id, OrderStatus.FAILED, step="review", error_class="transient"
        )
        store.dead_letters.dead_letter(
            order_id,
            run_id="r1",
            failed_step="review",
            error_class="transient",
            error_type="InjectedFault",
            message="failed",
            attempts=7,
        )
        store.dead_letters.request_replay(order_id, actor="test")

    requests, _ = evaluate(defs, instance, "dead_letter_replays", url)
    assert [(r.partition_key, r.run_key) for r in requests] == [(good, f"replay-{good}-1")]
    # Letters written by hand: no step output is stored, so the replay starts at the first step.
    assert requests[0].asset_selection[0].to_user_string() == "order_intake"
    assert requests[0].tags["agentforge/replay_from"] == "intake"
    assert instance.has_dynamic_partition("orders", good), "a missing partition is registered"
    [letter] = store.dead_letters.dead_letters()
    assert letter["order_id"] == "bad...id" and letter["error_type"] == "NotLaunchable"
    assert "cannot be launched" in letter["message"] and letter["replays"] == 1
    assert any(
        r["detail"].get("error_type") == "NotLaunchable" for r in store.audit.audit_rows("bad...id")
    )


def test_an_unlaunchable_queued_order_is_set_aside_and_the_queue_goes_on(
    defs, instance, store, settings
) -> None:
    good = store.orders.submit(make_order(1)).order_id
    queue_unchecked(store, "tab\there")
    requests, _ = evaluate(defs, instance, "order_queue", settings.storage.resolved_database_url())
    assert [r.partition_key for r in requests] == [good]
    assert store.orders.status("tab\there") is OrderStatus.DEAD_LETTERED
    assert settle_unlaunchable(store, "tab\there", "again") is Verdict.ALREADY_SETTLED


def test_a_run_for_an_order_never_submitted_is_refused_and_changes_nothing(
    defs, instance, store: BusinessStore
) -> None:
    result = run_order(defs, instance, store, "never-submitted")
    assert not result.success and result.status is None
    assert result.verdict is Verdict.UNKNOWN_ORDER
    assert (
        store.audit.audit_rows() == []
        and store.dead_letters.dead_letters() == []
        and store.orders.order_ids() == []
    )
    failure = failure_of_run(instance, result.run_id)
    assert failure.step == "launch" and failure.error_class == "infrastructure"
    assert "'never-submitted' was never submitted" in failure.message
