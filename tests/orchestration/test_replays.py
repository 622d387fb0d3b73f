"""Replays whose artifacts are gone: they start at the earliest step whose output is missing and
pay for nothing twice; inside a run, a missing artifact is a permanent failure, never retried."""

from __future__ import annotations

from dagster import DagsterEventType, DagsterInstance, Definitions, build_sensor_context

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.domain.steps import step_asset_name
from agentforge_dagster.orchestration.dead_letters import ReplayPlan, replay_start
from agentforge_dagster.orchestration.runner import run_order, run_replays
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import dead_lettered_order


def dead_lettered_at_delivery(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> tuple[str, str]:
    order_id, failed = dead_lettered_order(defs, instance, store)
    return order_id, failed.run_id


def delete_artifacts(settings: AgentForgeSettings, order_id: str, *steps: str) -> None:
    for step in steps:
        (
            settings.storage.resolved_artifacts_dir() / step_asset_name(step) / f"{order_id}.json"
        ).unlink()


def paid_calls(store: BusinessStore, order_id: str) -> int:
    return sum(1 for row in store.model_calls.model_call_rows(order_id) if not row["cache_hit"])


def started_steps(instance: DagsterInstance, run_id: str) -> set[str]:
    entries = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    return {entry.step_key.removeprefix("order_") for entry in entries if entry.step_key}


def test_the_start_moves_to_the_earliest_step_whose_output_a_later_step_needs() -> None:
    everything = {"intake", "plan", "draft", "review", "delivery", "invoice"}
    assert replay_start("delivery", everything) == ("delivery", [])
    assert replay_start("delivery", everything - {"plan"}) == ("delivery", []), "not needed"
    assert replay_start("delivery", everything - {"review"}) == ("review", ["review"])
    assert replay_start("delivery", everything - {"plan", "review"}) == (
        "plan",
        ["plan", "review"],
    )
    assert replay_start("invoice", set()) == ("intake", ["intake", "delivery"])
    assert replay_start("launch", set()) == ("intake", [])


def test_a_replay_whose_artifacts_are_gone_reruns_from_there_without_paying_again(
    defs, instance, store, settings
) -> None:
    order_id, _ = dead_lettered_at_delivery(defs, instance, store)
    paid = paid_calls(store, order_id)
    assert paid >= 2  # plan and draft at least
    delete_artifacts(settings, order_id, "plan", "review")
    store.dead_letters.request_replay(order_id, actor="test")

    # The sensor and the in-process runner plan through the same function.
    with build_sensor_context(
        instance=instance,
        resources={
            "store": BusinessStoreResource(database_url=settings.storage.resolved_database_url()),
            "artifact_io_manager": defs.resources["artifact_io_manager"],
        },
        definitions=defs,
    ) as context:
        [request] = defs.resolve_sensor_def("dead_letter_replays")(context)
    assert request.tags["agentforge/replay_from"] == "plan"
    assert [key.path[-1] for key in request.asset_selection] == [
        step_asset_name(step) for step in ("plan", "draft", "review", "delivery", "invoice")
    ]

    [replay] = run_replays(defs, instance, store)
    assert replay.success and replay.status is OrderStatus.COMPLETED
    assert started_steps(instance, replay.run_id) == {
        "plan",
        "draft",
        "review",
        "delivery",
        "invoice",
    }
    run = instance.get_run_by_id(replay.run_id)
    assert run is not None and run.tags["agentforge/replay_from"] == "plan"
    assert paid_calls(store, order_id) == paid, "the re-run model steps were served from the store"
    assert any(row["cache_hit"] for row in store.model_calls.model_call_rows(order_id))
    [moved] = [r for r in store.audit.audit_rows(order_id) if r["event"] == "replay_start_moved"]
    assert moved["step"] == "plan"
    assert moved["detail"] == {
        "requested": "delivery",
        "start": "plan",
        "missing": ["plan", "review"],
    }
    assert store.audit.verify_audit().ok


def test_a_missing_artifact_inside_a_run_fails_the_step_once_as_permanent(
    defs, instance, store, settings
) -> None:
    order_id, failed_run = dead_lettered_at_delivery(defs, instance, store)
    delete_artifacts(settings, order_id, "review")
    store.dead_letters.request_replay(order_id, actor="test")
    # A replay launched before the artifact went missing (planned from the failed step).
    plan = ReplayPlan(order_id, "delivery", f"replay-{order_id}-1", failed_run)
    result = run_order(defs, instance, store, order_id, replay=plan)

    assert not result.success and result.status is OrderStatus.DEAD_LETTERED
    retries = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries == [], "a missing artifact is not retried"
    [letter] = store.dead_letters.dead_letters()
    assert (letter["failed_step"], letter["error_class"], letter["error_type"]) == (
        "delivery",
        "permanent",
        "MissingArtifact",
    )
    assert letter["attempts"] == 1
    location = settings.storage.resolved_artifacts_dir() / "order_review" / f"{order_id}.json"
    assert (
        f"the review artifact of order {order_id!r} is missing at {location}" in (letter["message"])
    )
