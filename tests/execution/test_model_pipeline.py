"""The order pipeline on real model providers: the official SDKs talk to a fake server on loopback.

The fake answers like a model would (the offline model's text, reached over HTTP), or fails as
scripted: 429 with Retry-After, 500/503, 401, schema-invalid answers. Counting the requests the
server saw tells whether each error led to its action and whether anything was paid for twice.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, Definitions, build_init_resource_context
from sqlalchemy import insert, text, update

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.errors import TransientError
from agentforge_dagster.domain.models import PlanProposal, utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.faults import SlowModel
from agentforge_dagster.execution.gateway import ModelGateway, cache_key
from agentforge_dagster.execution.llm.base import ModelProvider, ModelRequest, ModelResponse
from agentforge_dagster.execution.llm.offline import OfflineModel
from agentforge_dagster.execution.llm.openai import OpenAICompatibleProvider
from agentforge_dagster.execution.resources import ModelResource
from agentforge_dagster.orchestration.dead_letters import resume_waiting_for_budget
from agentforge_dagster.orchestration.runner import run_order, run_replays
from agentforge_dagster.persistence.schema import metadata, model_calls
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order
from tests.fakes.brain import offline_brain
from tests.fakes.llm_server import FakeLLMServer, ok, status, user_prompt

SECRET = "sk-agentforge-TOPSECRET-7f3a9c"
PRICES = {"gpt-test": [2.0, 4.0], "secondary": [2.0, 4.0], "claude-test": [3.0, 15.0]}


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer=offline_brain) as server:
        yield server


def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models: str, **extra: str
) -> AgentForgeSettings:
    env = {
        "AGENTFORGE_HOME": str(tmp_path / "agentforge"),
        "AGENTFORGE_MODELS": models,
        "OPENAI_API_KEY": SECRET,
        "ANTHROPIC_API_KEY": SECRET,
        "AGENTFORGE_MODEL_PRICES_JSON": json.dumps(PRICES),
        "AGENTFORGE_RETRY_DELAY_SECONDS": "0.001",  # Retry-After still sets the floor
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AGENTFORGE_DATABASE_URL", "AGENTFORGE_S3_BUCKET"):
        monkeypatch.delenv(key, raising=False)
    return AgentForgeSettings()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, llm: FakeLLMServer
) -> tuple[Definitions, BusinessStore]:
    settings = configure(monkeypatch, tmp_path, f"openai:gpt-test@{llm.openai_base_url}")
    store = BusinessStore.from_url(settings.storage.resolved_database_url())
    store.upgrade()
    return build_definitions(settings, drills=True), store  # tests inject faults by run config


def paid(store: BusinessStore, step: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in store.model_calls.model_call_rows()
        if not r["cache_hit"] and (step is None or r["step"] == step)
    ]


def chat_requests(server: FakeLLMServer) -> list[Any]:
    return [r for r in server.requests if r.method == "POST"]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_an_order_runs_on_a_real_sdk_and_records_tokens_and_cost(
    dialect: str, monkeypatch, tmp_path, llm, instance: DagsterInstance
) -> None:
    models = (
        f"openai:gpt-test@{llm.openai_base_url}"
        if dialect == "openai"
        else f"anthropic:claude-test@{llm.anthropic_base_url}"
    )
    settings = configure(monkeypatch, tmp_path, models)
    store = BusinessStore.from_url(settings.storage.resolved_database_url())
    store.upgrade()
    order = store.orders.submit(make_order())
    result = run_order(build_definitions(settings), instance, store, order.order_id)
    assert result.success and result.status is OrderStatus.COMPLETED
    calls = paid(store)
    assert len(calls) == len(chat_requests(llm)) >= 2
    assert {c["model"] for c in calls} == {"gpt-test" if dialect == "openai" else "claude-test"}
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in calls)
    assert all(Decimal(str(c["cost_usd"])) > 0 for c in calls)
    [plan] = instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)[1:2]
    meta = plan.dagster_event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
    assert meta["model"].value == calls[0]["model"] and meta["cost_usd"].value > 0


def test_a_rate_limit_waits_what_retry_after_says(env, llm, instance) -> None:
    defs, store = env
    llm.script(status(429, retry_after=2))
    order = store.orders.submit(make_order())
    result = run_order(defs, instance, store, order.order_id)
    assert result.success
    first, second = chat_requests(llm)[:2]
    assert second.arrived_at - first.arrived_at >= 2.0
    assert len(chat_requests(llm)) == len(paid(store)) + 1


def test_server_errors_are_retried_and_a_bad_key_is_not(env, llm, instance) -> None:
    defs, store = env
    llm.script(status(500), status(503))
    order = store.orders.submit(make_order())
    assert run_order(defs, instance, store, order.order_id).success
    assert len(chat_requests(llm)) == len(paid(store)) + 2

    llm.clear()
    llm.script(status(401))
    refused = store.orders.submit(make_order(1))
    result = run_order(defs, instance, store, refused.order_id)
    assert not result.success and result.status is OrderStatus.DEAD_LETTERED
    assert len(chat_requests(llm)) == 1, "a permanent error is not retried"
    assert not instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert store.orders.get(refused.order_id).failed_error_class == "permanent"


def test_an_invalid_answer_is_sent_back_with_the_validation_error(env, llm, instance) -> None:
    defs, store = env
    llm.script(ok('{"title": "", "sections": []}'))
    order = store.orders.submit(make_order())
    assert run_order(defs, instance, store, order.order_id).success
    first, second = chat_requests(llm)[:2]
    assert "previous answer was invalid" not in user_prompt(first.body)
    assert "previous answer was invalid" in user_prompt(second.body)


def test_answers_that_never_validate_fail_permanently(monkeypatch, tmp_path, instance) -> None:
    with FakeLLMServer(answer='{"nonsense": true}') as bad:
        settings = configure(monkeypatch, tmp_path, f"openai:gpt-test@{bad.openai_base_url}")
        store = BusinessStore.from_url(settings.storage.resolved_database_url())
        store.upgrade()
        order = store.orders.submit(make_order())
        result = run_order(build_definitions(settings), instance, store, order.order_id)
        assert not result.success
        assert len(chat_requests(bad)) == 1 + settings.models.max_reprompts
        record = store.orders.get(order.order_id)
        assert record.failed_step == "plan" and record.failed_error_class == "permanent"


def test_a_step_failing_after_the_answer_is_retried_without_paying_again(
    env, llm, instance
) -> None:
    defs, store = env
    order = store.orders.submit(make_order())
    config = {"resources": {"faults": {"config": {"fail_first": {"plan": 2}}}}}
    assert run_order(defs, instance, store, order.order_id, run_config=config).success
    plan_calls = [r for r in store.model_calls.model_call_rows() if r["step"] == "plan"]
    assert [r["cache_hit"] for r in plan_calls] == [False, True, True]
    assert [Decimal(str(r["cost_usd"])) > 0 for r in plan_calls] == [True, False, False]
    assert len(chat_requests(llm)) == len(paid(store))
    assert len({r["cache_key"] for r in plan_calls}) == 1, "the retries reused the paid answer"
    assert store.model_calls.repaid_calls() == {}
    # A second payment for the same answer (two racing runs, say) is what repaid_calls counts.
    first = plan_calls[0]
    again = {k: v for k, v in first.items() if k not in ("call_id", "cache_hit")}
    store.model_calls.record_model_call(**again, cache_hit=False)
    assert store.model_calls.repaid_calls() == {order.order_id: 1}


def test_a_replayed_dead_letter_makes_no_new_paid_calls(env, llm, instance) -> None:
    defs, store = env
    order = store.orders.submit(make_order())
    broken = {"resources": {"faults": {"config": {"fail_first": {"review": 99}}}}}
    first = run_order(defs, instance, store, order.order_id, run_config=broken)
    assert not first.success  # run_order dead-letters the order itself
    before = len(chat_requests(llm))
    store.dead_letters.request_replay(order.order_id, actor="test")
    [replay] = run_replays(defs, instance, store)
    assert replay.status is OrderStatus.COMPLETED
    assert len(chat_requests(llm)) == before, "the replay paid for a call again"


def test_when_the_primary_is_down_the_step_falls_back_and_says_who_answered(
    monkeypatch, tmp_path, llm, instance
) -> None:
    with FakeLLMServer(default=status(503)) as down:
        settings = configure(
            monkeypatch,
            tmp_path,
            f"openai:gpt-test@{down.openai_base_url},openai:secondary@{llm.openai_base_url}",
        )
        store = BusinessStore.from_url(settings.storage.resolved_database_url())
        store.upgrade()
        order = store.orders.submit(make_order())
        result = run_order(build_definitions(settings), instance, store, order.order_id)
        assert result.success
        assert {r["model"] for r in paid(store)} == {"secondary"}
        failed = [
            r for r in store.audit.audit_rows(order.order_id) if r["event"] == "model_call_failed"
        ]
        assert {r["detail"]["model"] for r in failed} == {"gpt-test"}
        assert len([r for r in failed if r["step"] == "plan"]) == settings.models.fallback_after


def test_the_budget_pauses_orders_and_raising_it_resumes_them(env, llm, instance) -> None:
    defs, store = env
    store.model_calls.set_budget(Decimal("0.00"))
    order = store.orders.submit(make_order())
    result = run_order(defs, instance, store, order.order_id)
    assert not result.success and result.status is OrderStatus.WAITING_BUDGET
    assert chat_requests(llm) == [] and store.dead_letters.dead_letters() == []
    assert resume_waiting_for_budget(store, None) == []  # still over the cap

    store.model_calls.set_budget(Decimal("100"))
    assert resume_waiting_for_budget(store, None) == [order.order_id]
    [replay] = run_replays(defs, instance, store)
    assert replay.status is OrderStatus.COMPLETED
    moves = [
        r["detail"]["to"]
        for r in store.audit.audit_rows(order.order_id)
        if r["event"] == "transition"
    ]
    assert moves == ["processing", "waiting_budget", "replayed", "processing", "completed"]


def test_the_budget_resumes_when_the_month_turns(env, llm, instance) -> None:
    defs, store = env
    store.model_calls.set_budget(Decimal("1.00"))
    with store.begin() as conn:  # this month's spend so far, by earlier orders
        conn.execute(
            insert(model_calls).values(
                order_id="earlier",
                step="plan",
                run_id="r",
                attempt=1,
                provider="openai",
                model="gpt-test",
                input_tokens=1,
                output_tokens=1,
                cost_usd=1.0,
                latency_s=0.1,
                started_at=utcnow(),
                ended_at=utcnow(),
                cache_hit=False,
            )
        )
    order = store.orders.submit(make_order())
    assert run_order(defs, instance, store, order.order_id).status is OrderStatus.WAITING_BUDGET
    with store.begin() as conn:  # the month turns: that spend now belongs to last month
        conn.execute(update(model_calls).values(started_at=utcnow() - timedelta(days=40)))
    assert resume_waiting_for_budget(store, None) == [order.order_id]
    [replay] = run_replays(defs, instance, store)
    assert replay.status is OrderStatus.COMPLETED


def test_the_api_key_appears_in_no_log_metadata_or_table(
    env, llm, instance, tmp_path, caplog, capfd
) -> None:
    defs, store = env
    caplog.set_level("DEBUG")
    llm.script(status(429, retry_after=0), status(401))
    for index in range(2):
        order = store.orders.submit(make_order(index))
        run_order(defs, instance, store, order.order_id)
    assert any(r.headers.get("authorization") == f"Bearer {SECRET}" for r in llm.requests)

    places: dict[str, str] = {"logs": caplog.text}
    captured = capfd.readouterr()
    places["stdout/stderr"] = captured.out + captured.err
    for run in instance.get_runs():
        places[f"run config {run.run_id}"] = json.dumps(run.run_config, default=str)
        places[f"events {run.run_id}"] = "\n".join(
            entry.to_json() for entry in instance.all_logs(run.run_id)
        )
    with store.engine.connect() as conn:
        for name in metadata.tables:
            places[f"table {name}"] = "\n".join(
                str(tuple(row)) for row in conn.execute(text(f"select * from {name}"))
            )
    for path in (tmp_path / "agentforge").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            places[str(path)] = path.read_text(errors="replace")
    assert len(places) > 10
    leaks = [where for where, content in places.items() if SECRET in content]
    assert leaks == []


# --- the response store's key, the run's clients, the fallback count ---------------------------


class _Named:
    def __init__(self, name: str, model: str) -> None:
        self.name, self.model = name, model


def test_the_response_store_key_of_a_known_request_is_unchanged() -> None:
    """Answers already paid for are found by this key: its recipe must never drift."""
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    request = ModelRequest(
        task="plan",
        prompt="Plan a post about reliable pipelines.",
        context={"order": {"id": "x"}},  # not part of the key
        output_schema=schema,
    )
    assert (
        cache_key(_Named("openai", "gpt-4o-mini"), request)  # type: ignore[arg-type]
        == "40153ea82399305142d7a557fa51042fa071f5fae7288709fca0f62f97001f45"
    )
    draft = ModelRequest(task="draft", prompt="Write the draft.")
    assert (
        cache_key(OfflineModel(), draft)
        == "f84749b1242a3496e8e81efd815f71ec79058e7db347aeb4202ecbafce1efbe3"
    )


def test_a_run_uses_one_connection_and_closes_it(env, llm, instance) -> None:
    defs, store = env
    order = store.orders.submit(make_order())
    assert run_order(defs, instance, store, order.order_id).success
    requests = chat_requests(llm)
    assert len(requests) >= 2
    assert len({r.client_port for r in requests}) == 1, "each step built its own client"
    deadline = time.monotonic() + 5
    while llm.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llm.open_connections == 0, "the run's client was not closed"


def test_the_model_resource_shares_its_providers_and_closes_them(
    llm: FakeLLMServer, store: BusinessStore
) -> None:
    resource = ModelResource(
        models=f"openai:gpt-test@{llm.openai_base_url},offline", timeout_seconds=7.5
    )
    with resource.yield_for_execution(build_init_resource_context()) as model:
        providers = model.get_providers()
        assert model.get_providers() is providers
        primary = providers[0]
        assert isinstance(primary, OpenAICompatibleProvider)
        assert primary.timeout_s == 7.5  # one setting times the SDK client and the step's wait
        common: dict[str, Any] = {"order_id": "o-1", "run_id": "r"}
        gateway = model.gateway(
            store, step="plan", attempt=1, wrap=lambda p: SlowModel(p, 0.0), **common
        )
        assert gateway.timeout_s == 7.5
        assert [type(p) for p in gateway.providers] == [SlowModel, SlowModel]
        again = model.gateway(store, step="plan", attempt=2, **common)
        other = model.gateway(store, step="draft", attempt=1, **common)
        assert again.providers == providers and again.failures is gateway.failures
        assert other.failures is not gateway.failures
        assert not primary._client.is_closed()
    assert primary._client.is_closed()


class _Down:
    """A provider that is always unavailable, counting how often it was asked."""

    name, model = "down", "down-1"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        raise TransientError("the primary is down")


def test_fallback_counts_failures_in_memory_across_attempts(
    store: BusinessStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model call scanned the audit trail")

    monkeypatch.setattr(store.audit, "audit_rows", no_scan)
    order = store.orders.submit(make_order())
    down = _Down()
    providers: list[ModelProvider] = [down, OfflineModel()]
    failures: Counter[tuple[str, str]] = Counter()
    request = ModelRequest(
        task="plan",
        prompt="Plan the order.",
        context={"order": order.model_dump(mode="json")},
        output_schema=PlanProposal.model_json_schema(),
    )

    def attempt(number: int) -> ModelGateway:
        return ModelGateway(
            store=store,
            providers=providers,
            order_id=order.order_id,
            step="plan",
            run_id="run-1",
            attempt=number,
            fallback_after=2,
            failures=failures,
        )

    with pytest.raises(TransientError):
        attempt(1).ask(request, PlanProposal)
    assert attempt(2).ask(request, PlanProposal).title  # second failure: the offline model answers
    assert attempt(3).ask(request, PlanProposal).title  # the primary is passed over now
    assert down.calls == 2
    assert failures == {("down", "down-1"): 2}
