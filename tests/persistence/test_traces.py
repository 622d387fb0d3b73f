"""An order's life as spans, written where its status changes (persistence/traces.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from agentforge_dagster.domain.policy import Finding
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.persistence.traces import deployment_id
from agentforge_dagster.tracing import OrderTrace
from tests.conftest import make_order
from tests.spans import Caught


def _trace(store: BusinessStore, order_id: str, episode: int = 0) -> OrderTrace:
    with store.engine.connect() as conn:
        return OrderTrace(deployment_id(conn), order_id, episode)


def test_a_delivered_order_is_one_trace_rooted_at_its_derived_span(
    store: BusinessStore, spans: Caught
) -> None:
    order = store.orders.submit(make_order(), source="cli")
    store.orders.claim(order.order_id, run_id="run-1", step="plan")
    store.orders.transition(order.order_id, OrderStatus.COMPLETED, run_id="run-1", step="invoice")

    trace = _trace(store, order.order_id)
    assert sorted(spans.names()) == ["intake", "order", "queued", "run"]
    assert {span.context.trace_id for span in spans.all()} == {trace.trace_id}
    root = spans.one("order")
    assert root.parent is None and root.context.span_id == trace.root_span_id
    assert root.attributes["agentforge.status"] == "completed"
    assert root.attributes["openinference.span.kind"] == "AGENT"
    for name in ("intake", "queued", "run"):
        assert spans.parent_of(spans.one(name)) is root, name
    run = spans.one("run")
    assert run.context.span_id == trace.run_span_id("run-1")
    assert run.attributes["dagster.run_id"] == "run-1"
    assert spans.one("intake").attributes["agentforge.source"] == "cli"
    assert root.start_time <= spans.one("queued").start_time <= run.start_time <= root.end_time


def test_a_dead_letter_and_its_replay_are_two_episodes_of_one_trace(
    store: BusinessStore, spans: Caught
) -> None:
    order = store.orders.submit(make_order())
    store.orders.claim(order.order_id, run_id="run-1", step="plan")
    store.orders.transition(
        order.order_id, OrderStatus.FAILED, run_id="run-1", step="delivery", error_class="permanent"
    )
    store.dead_letters.dead_letter(
        order.order_id,
        run_id="run-1",
        failed_step="delivery",
        error_class="permanent",
        error_type="Failure",
        message="no",
        attempts=1,
    )
    first_root = spans.one("order")
    assert first_root.attributes["agentforge.status"] == "dead_lettered"
    assert spans.one("dead letter").attributes["error.type"] == "permanent"

    store.dead_letters.request_replay(order.order_id, actor="ops@example.com")
    store.orders.claim(order.order_id, run_id="run-2", step="delivery")
    store.orders.transition(order.order_id, OrderStatus.COMPLETED, run_id="run-2", step="invoice")

    roots = spans.named("order")
    assert [r.attributes["agentforge.status"] for r in roots] == ["dead_lettered", "completed"]
    second = _trace(store, order.order_id, episode=1)
    assert roots[1].context.span_id == second.root_span_id != roots[0].context.span_id
    assert {span.context.trace_id for span in spans.all()} == {second.trace_id}
    replay = spans.one("replay")
    assert spans.parent_of(replay) is roots[1]
    assert replay.attributes["agentforge.actor"] == "ops@example.com"
    runs = {span.attributes["dagster.run_id"]: spans.parent_of(span) for span in spans.named("run")}
    assert runs == {"run-1": roots[0], "run-2": roots[1]}


def test_a_review_hold_spans_from_the_hold_to_the_decision(
    store: BusinessStore, spans: Caught
) -> None:
    order = store.orders.submit(make_order())
    store.orders.claim(order.order_id, run_id="run-1", step="review")
    store.review.hold_for_review(
        order.order_id,
        run_id="run-1",
        kind="quarantined",
        step="review",
        findings=[Finding("content_refused", "quarantine", "a secret note")],
        draft=None,
        model="offline",
    )
    store.review.decide(
        order.order_id, "reject", actor="reviewer@example.com", note="private words"
    )

    hold = spans.one("review hold")
    assert hold.attributes["agentforge.decision"] == "reject"
    assert hold.attributes["agentforge.actor"] == "reviewer@example.com"
    assert "private words" not in str(dict(hold.attributes))
    assert spans.one("order").attributes["agentforge.status"] == "rejected"


def test_a_move_rolled_back_emits_nothing(store: BusinessStore, spans: Caught) -> None:
    order = store.orders.submit(make_order())
    before = len(spans.all())
    with pytest.raises(RuntimeError), store.begin() as conn:
        from agentforge_dagster.persistence.orders import transition_in

        transition_in(conn, order.order_id, OrderStatus.PROCESSING, run_id="run-1")
        raise RuntimeError("the mover fails after the move")
    assert len(spans.all()) == before
    assert store.orders.status(order.order_id) is OrderStatus.QUEUED


def test_tracing_off_emits_nothing_and_reads_nothing_more(
    store: BusinessStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    statements: list[str] = []
    from sqlalchemy import event

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    order = store.orders.submit(make_order())
    store.orders.claim(order.order_id, run_id="run-1", step="plan")
    assert not any("deployment" in s for s in statements)
    assert not any(
        "episode_started_at" in s and s.lstrip().upper().startswith("SELECT") for s in statements
    )


def test_every_database_has_one_deployment_id_of_its_own(store: BusinessStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = BusinessStore.opened(f"sqlite:///{tmp_path / 'other.db'}")
    with store.engine.connect() as a, other.engine.connect() as b:
        assert deployment_id(a) != deployment_id(b)
        assert a.execute(text("SELECT count(*) FROM deployment")).scalar_one() == 1


def test_the_root_has_no_parent_even_when_it_settles_inside_a_step_span(
    store: BusinessStore, spans: Caught
) -> None:
    from agentforge_dagster import tracing

    order = store.orders.submit(make_order())
    store.orders.claim(order.order_id, run_id="run-1", step="plan")
    trace = store.order_trace(order.order_id)
    with tracing.span("step invoice", trace, parent=trace.run_span_id("run-1")):
        store.orders.transition(
            order.order_id, OrderStatus.COMPLETED, run_id="run-1", step="invoice"
        )
    root = spans.one("order")
    assert root.parent is None
    assert spans.parent_of(spans.one("run")) is root
    assert spans.parent_of(spans.one("step invoice")) is spans.one("run")
