"""Each step's logic as a plain function, on a real SQLite store and the offline model."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentforge_dagster.domain.errors import PermanentError
from agentforge_dagster.domain.models import Draft, DraftSection, Order, Plan
from agentforge_dagster.domain.policy import quality_findings
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution import steps
from agentforge_dagster.execution.llm.base import ModelRequest
from agentforge_dagster.execution.llm.offline import OFFLINE_MODEL_NAME, OfflineModel
from agentforge_dagster.persistence.store import BusinessStore
from tests.conftest import make_order, step_env


def env_for(
    store: BusinessStore, order: Order, tmp_path: Path, max_revisions: int = 1
) -> steps.StepEnv:
    return step_env(store, order.order_id, tmp_path / "deliveries", max_revisions=max_revisions)


def planned(store: BusinessStore, order: Order, tmp_path: Path) -> tuple[steps.StepEnv, Plan]:
    env = env_for(store, order, tmp_path)
    return env, steps.plan(env, {"intake": order})


def test_a_claimed_order_is_taken_in_and_a_second_claim_changes_nothing(store, tmp_path) -> None:
    order = store.orders.submit(make_order())
    env = env_for(store, order, tmp_path)
    with pytest.raises(PermanentError, match="is queued"):
        steps.intake(env, {})
    assert store.orders.claim(order.order_id, run_id="r1", step="intake") is OrderStatus.PROCESSING
    assert store.orders.claim(order.order_id, run_id="r1", step="intake") is OrderStatus.PROCESSING
    assert steps.intake(env, {}) == order
    transitions = [r for r in store.audit.audit_rows(order.order_id) if r["event"] == "transition"]
    assert len(transitions) == 1


def test_intake_refuses_an_order_that_is_not_queued(store, tmp_path) -> None:
    order = store.orders.submit(make_order())
    store.orders.transition(order.order_id, OrderStatus.PROCESSING)
    store.orders.transition(order.order_id, OrderStatus.COMPLETED)
    assert store.orders.claim(order.order_id, run_id="r2", step="intake") is OrderStatus.COMPLETED
    with pytest.raises(PermanentError, match="is completed"):
        steps.intake(env_for(store, order, tmp_path), {})


def test_offline_model_is_deterministic_and_labelled(store, tmp_path) -> None:
    order = make_order(service="press_release")
    _, first = planned(store, order, tmp_path)
    _, second = planned(store, order, tmp_path)
    assert first == second
    assert first.sections == ["Headline", "Summary", "Details", "Quote", "About"]
    assert "reliable" in first.keywords
    response = OfflineModel().complete(
        ModelRequest(task="plan", prompt="p", context={"order": order.model_dump(mode="json")})
    )
    assert response.model == OFFLINE_MODEL_NAME and response.cost_usd == 0.0
    assert response.input_tokens > 0 and response.output_tokens > 0


def test_offline_model_refuses_tasks_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="no writer for task 'translate'"):
        OfflineModel().complete(ModelRequest(task="translate", prompt="p"))


def test_plan_and_draft_record_model_usage(store, tmp_path) -> None:
    order = make_order()
    env, plan = planned(store, order, tmp_path)
    draft = steps.draft(env, {"intake": order, "plan": plan})
    assert draft.model == OFFLINE_MODEL_NAME and draft.revision == 0
    assert len(env.model_calls) == 2
    assert all(section.body for section in draft.sections)


def _lapsing_order(store: BusinessStore, tmp_path: Path) -> tuple[Order, Plan, Draft]:
    """An order whose first offline draft leaves out a section (about one in four do)."""
    for index in range(200):
        order = make_order(index)
        env, plan = planned(store, order, tmp_path)
        draft = steps.draft(env, {"intake": order, "plan": plan})
        if len(draft.sections) < len(plan.sections):
            return order, plan, draft
    raise AssertionError("the offline model never lapsed in 200 orders")


def test_review_approves_a_complete_draft_without_revising(store, tmp_path) -> None:
    order = make_order()
    env, plan = planned(store, order, tmp_path)
    complete = Draft(
        order_id=order.order_id,
        title=plan.title,
        revision=0,
        model="m",
        sections=[DraftSection(heading=h, body=("reliable " * 20).strip()) for h in plan.sections],
    )
    review = steps.review(env, {"intake": order, "plan": plan, "draft": complete})
    assert review.approved and review.revisions == 0 and review.final_draft == complete
    assert len(env.model_calls) == 1  # the plan only


def test_review_sends_an_incomplete_draft_back_once(store, tmp_path) -> None:
    order, plan, lapsed = _lapsing_order(store, tmp_path)
    found = quality_findings(plan, lapsed)
    assert [f.reason for f in found] == [f"missing section {plan.sections[-1]!r}"]
    env = env_for(store, order, tmp_path, max_revisions=1)
    review = steps.review(env, {"intake": order, "plan": plan, "draft": lapsed})
    assert review.revisions == 1 and review.hold is None
    assert review.final_draft.revision == 1
    assert [s.heading for s in review.final_draft.sections] == plan.sections
    assert len(env.model_calls) == 1  # one revision call


def test_review_without_revisions_left_quarantines_the_order(store, tmp_path) -> None:
    order, plan, lapsed = _lapsing_order(store, tmp_path)
    store.orders.submit(order)
    store.orders.claim(order.order_id, run_id="r1", step="intake")
    env = env_for(store, order, tmp_path, max_revisions=0)
    review = steps.review(env, {"intake": order, "plan": plan, "draft": lapsed})
    assert (review.approved, review.hold) == (False, "quarantined")
    assert review.issues == [f"missing section {plan.sections[-1]!r}"]
    assert store.orders.status(order.order_id) is OrderStatus.QUARANTINED
    hold = store.review.latest_hold(order.order_id)
    assert hold is not None and hold.hold_id == review.hold_id
    assert hold.reasons == review.issues and hold.draft == lapsed.as_markdown()
    # The step retried after it held the order (a fault after its work) holds it once.
    again = steps.review(env, {"intake": order, "plan": plan, "draft": lapsed})
    assert again.hold_id == review.hold_id and len(store.review.holds()) == 1


def _deliver_and_invoice(store: BusinessStore, tmp_path: Path) -> tuple[Order, steps.StepEnv]:
    order = store.orders.submit(make_order())
    env = env_for(store, order, tmp_path)
    store.orders.claim(order.order_id, run_id="r1", step="intake")
    steps.intake(env, {})
    plan = steps.plan(env, {"intake": order})
    draft = steps.draft(env, {"intake": order, "plan": plan})
    review = steps.review(env, {"intake": order, "plan": plan, "draft": draft})
    delivery = steps.deliver(env, {"review": review})
    assert Path(delivery.location).read_text() == review.final_draft.as_markdown()
    again = steps.deliver(env, {"review": review})
    assert again.delivery_id == delivery.delivery_id
    invoice = steps.invoice(env, {"intake": order, "delivery": delivery})
    assert steps.invoice(env, {"intake": order, "delivery": delivery}) == invoice
    return order, env


def test_delivery_and_invoice_happen_once_and_complete_the_order(store, tmp_path) -> None:
    order, _ = _deliver_and_invoice(store, tmp_path)
    ledger = store.deliveries.ledger_rows()
    assert [(r["order_id"], r["amount_cents"]) for r in ledger] == [(order.order_id, 15000)]
    assert store.orders.get(order.order_id).status is OrderStatus.COMPLETED


def test_the_step_table_is_a_chain_over_six_steps() -> None:
    assert steps.STEP_NAMES == ("intake", "plan", "draft", "review", "delivery", "invoice")
    seen: set[str] = set()
    for spec in steps.STEPS:
        assert set(spec.inputs) <= seen, f"{spec.name} reads a step that runs after it"
        seen.add(spec.name)
