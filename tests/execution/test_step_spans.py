"""An order's run as spans: each step attempt under its run, model calls under their attempt,
retries as siblings, a dead letter and its replay as two episodes, cache hits without usage."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.runner import run_order, run_replays
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import dead_lettered_order, make_order
from tests.execution.test_model_pipeline import configure
from tests.fakes.brain import offline_brain
from tests.fakes.llm_server import FakeLLMServer, status
from tests.orchestration.test_replays import delete_artifacts
from tests.spans import Caught

STEPS = ("intake", "plan", "draft", "review", "delivery", "invoice")


def test_a_retried_step_is_two_sibling_attempts_under_the_run(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, spans: Caught
) -> None:
    order = store.orders.submit(make_order())
    retry_plan = {"resources": {"faults": {"config": {"fail_first": {"plan": 1}}}}}
    result = run_order(defs, instance, store, order.order_id, run_config=retry_plan)
    assert result.success

    trace = store.order_trace(order.order_id)
    run = spans.one("run")
    assert run.context.span_id == trace.run_span_id(result.run_id)
    plans = spans.named("step plan")
    assert [
        (p.attributes["agentforge.attempt"], p.attributes["agentforge.outcome"]) for p in plans
    ] == [
        (1, "retrying"),
        (2, "succeeded"),
    ]
    assert plans[0].attributes["error.type"] == "transient"
    assert {p.parent.span_id for p in plans} == {run.context.span_id}
    for step in STEPS:
        assert spans.named(f"step {step}"), step
    calls = [s for s in spans.all() if s.name.startswith("chat ")]
    assert calls and all(spans.parent_of(c).name.startswith("step ") for c in calls)
    assert {s.context.trace_id for s in spans.all()} == {trace.trace_id}
    [delivery] = [
        s for s in spans.named("step delivery") if s.attributes["agentforge.outcome"] == "succeeded"
    ]
    assert len(delivery.attributes["agentforge.delivery.sha256"]) == 64
    assert spans.one("step invoice").attributes["agentforge.invoice_usd"] == 150.0
    run_record = instance.get_run_by_id(result.run_id)
    assert run_record is not None and run_record.tags["agentforge/trace_id"] == trace.trace_id_hex


def test_a_dead_letter_then_a_replay_that_reuses_paid_answers(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    settings: AgentForgeSettings,
    spans: Caught,
) -> None:
    order_id, failed = dead_lettered_order(defs, instance, store)
    first = spans.one("order")
    assert first.attributes["agentforge.status"] == "dead_lettered"
    assert spans.one("dead letter").attributes["error.type"]
    paid = [s for s in spans.all() if s.name.startswith("chat ")]
    assert paid and not any(s.attributes["agentforge.cache_hit"] for s in paid)

    delete_artifacts(settings, order_id, "plan", "review")  # the replay re-runs them
    store.dead_letters.request_replay(order_id, actor="ops")
    [replay] = run_replays(defs, instance, store)
    assert replay.success and replay.status is OrderStatus.COMPLETED

    roots = spans.named("order")
    assert [r.attributes["agentforge.status"] for r in roots] == ["dead_lettered", "completed"]
    runs = {r.attributes["dagster.run_id"]: spans.parent_of(r) for r in spans.named("run")}
    assert runs[failed.run_id] is roots[0] and runs[replay.run_id] is roots[1]
    hits = [
        s
        for s in spans.all()
        if s.name.startswith("chat ") and s.attributes["agentforge.cache_hit"]
    ]
    assert hits, "the replayed plan was answered from the store"
    assert all("gen_ai.usage.input_tokens" not in s.attributes for s in hits)
    assert len({s.context.trace_id for s in spans.all()}) == 1


def test_a_fallback_to_the_second_provider_is_failed_calls_then_the_answer(
    monkeypatch, tmp_path, instance: DagsterInstance, spans: Caught
) -> None:
    with FakeLLMServer(answer=offline_brain) as up, FakeLLMServer(default=status(503)) as down:
        settings = configure(
            monkeypatch,
            tmp_path,
            f"openai:gpt-test@{down.openai_base_url},openai:secondary@{up.openai_base_url}",
        )
        store = BusinessStore.opened(settings.storage.resolved_database_url())
        order = store.orders.submit(make_order())
        assert run_order(build_definitions(settings), instance, store, order.order_id).success

    plan = [s for s in spans.named("step plan")]
    calls = [
        s
        for s in spans.all()
        if s.name.startswith("chat ") and s.parent.span_id in {p.context.span_id for p in plan}
    ]
    failed = [c for c in calls if "error.type" in c.attributes]
    answered = [c for c in calls if "error.type" not in c.attributes]
    assert {c.name for c in failed} == {"chat gpt-test"}
    assert len(failed) == settings.models.fallback_after
    assert all(c.attributes["server.address"] == "127.0.0.1" for c in calls)
    assert [c.name for c in answered] == ["chat secondary"]
    assert answered[0].attributes["gen_ai.usage.output_tokens"] > 0
    assert answered[0].attributes["agentforge.cost_usd"] >= 0
