"""The asset checks beside the order assets, each failing on a forged artifact.

Forgeries are made the way they could happen: a ledger row or a delivery record written before the
run (the steps keep what was recorded first), a delivered file altered afterwards, a model whose
plan leaves a section of the outline out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from dagster import DagsterEventType, DagsterInstance, Definitions

from agentforge_dagster.cli import main
from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.models import Delivery, Invoice, Review, utcnow
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.execution.checks import delivered_file_matches, draft_approved
from agentforge_dagster.orchestration.runner import run_order
from agentforge_dagster.persistence.deliverables import LocalDeliverables
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import make_order
from tests.execution.test_model_pipeline import configure
from tests.fakes.brain import TASKS, offline_brain
from tests.fakes.llm_server import FakeLLMServer, user_prompt


def evaluations(instance: DagsterInstance, run_id: str) -> dict[str, bool]:
    found = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        data: Any = entry.dagster_event.event_specific_data if entry.dagster_event else None
        found[data.check_name] = data.passed
    return found


def flags(store: BusinessStore, order_id: str) -> list[str]:
    return [
        row["detail"]["check"]
        for row in store.audit.audit_rows(order_id)
        if row["event"] == "check_failed"
    ]


def test_every_check_passes_on_an_honest_order(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore
) -> None:
    order = store.orders.submit(make_order())
    result = run_order(defs, instance, store, order.order_id)
    assert result.status is OrderStatus.COMPLETED
    assert evaluations(instance, result.run_id) == {
        "plan_covers_outline": True,
        "draft_approved": True,
        "delivered_file_matches": True,
        "invoice_matches_price": True,
    }
    assert store.audit.event_count("check_failed") == 0


def test_a_forged_invoice_amount_fails_its_check_and_raises_a_flag(
    defs: Definitions,
    instance: DagsterInstance,
    store: BusinessStore,
    settings: AgentForgeSettings,
    monkeypatch,
) -> None:
    order = store.orders.submit(make_order(price="150.00"))
    forged = Invoice(
        order_id=order.order_id, invoice_id="inv-forged", amount_cents=100, issued_at=utcnow()
    )
    store.deliveries.record_ledger_entry(order, forged)  # booked before the run: the step keeps it
    result = run_order(defs, instance, store, order.order_id)
    assert evaluations(instance, result.run_id)["invoice_matches_price"] is False
    assert flags(store, order.order_id) == ["invoice_matches_price"]
    assert store.audit.event_count("check_failed") == 1
    monkeypatch.setenv("AGENTFORGE_HOME", str(settings.storage.home))
    status = CliRunner().invoke(main, ["status"], catch_exceptions=False)
    assert "checks failed: 1" in status.output


def test_an_altered_delivery_fails_its_check_run_or_direct(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings: AgentForgeSettings
) -> None:
    order = store.orders.submit(make_order())
    location = settings.storage.resolved_deliveries_dir() / f"{order.order_id}.md"
    forged = Delivery(
        order_id=order.order_id,
        delivery_id=f"dlv-{order.order_id}",
        location=str(location),
        content_sha256="0" * 64,  # recorded, but not what is delivered
        delivered_at=utcnow(),
    )
    store.deliveries.record_delivery(forged)
    result = run_order(defs, instance, store, order.order_id)
    assert evaluations(instance, result.run_id)["delivered_file_matches"] is False
    assert flags(store, order.order_id) == ["delivered_file_matches"]

    honest = store.orders.submit(make_order(1))
    done = run_order(defs, instance, store, honest.order_id)
    assert evaluations(instance, done.run_id)["delivered_file_matches"] is True
    path = settings.storage.resolved_deliveries_dir() / f"{honest.order_id}.md"
    path.write_text(path.read_text() + "\nA line added after delivery.\n")
    delivery = Delivery(**_delivery_row(store, honest.order_id))
    files = LocalDeliverables(settings.storage.resolved_deliveries_dir())
    assert not delivered_file_matches(store, files, honest.order_id, delivery).passed
    path.unlink()
    assert not delivered_file_matches(store, files, honest.order_id, delivery).metadata[
        "file_exists"
    ]


def _delivery_row(store: BusinessStore, order_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from agentforge_dagster.persistence.schema import deliveries

    with store.engine.connect() as conn:
        return dict(
            conn.execute(select(deliveries).where(deliveries.c.order_id == order_id))
            .mappings()
            .one()
        )


def test_an_unapproved_unheld_review_fails_the_blocking_check() -> None:
    from agentforge_dagster.domain.models import Draft, DraftSection

    draft = Draft(
        order_id="o",
        title="t",
        revision=0,
        model="m",
        sections=[DraftSection(heading="A", body="b")],
    )
    forged = Review(order_id="o", approved=False, issues=["x"], revisions=0, final_draft=draft)
    assert not draft_approved(None, None, "o", forged).passed  # type: ignore[arg-type]
    held = forged.model_copy(update={"hold": "quarantined", "hold_id": 1})
    assert draft_approved(None, None, "o", held).passed  # type: ignore[arg-type]


def planless_brain(body: dict[str, Any]) -> str:
    """A model whose plans leave the last section of the service's outline out."""
    answer = json.loads(offline_brain(body))
    instruction = user_prompt(body).split("\n\n", 1)[0]
    if next(t for prefix, t in TASKS.items() if instruction.startswith(prefix)) == "plan":
        answer["sections"] = answer["sections"][:-1]
    return json.dumps(answer)


def test_a_plan_that_leaves_the_outline_out_blocks_the_steps_after_it(
    monkeypatch, tmp_path: Path, instance: DagsterInstance
) -> None:
    with FakeLLMServer(answer=planless_brain) as llm:
        settings = configure(monkeypatch, tmp_path, f"openai:gpt-test@{llm.openai_base_url}")
        store = BusinessStore.opened(settings.storage.resolved_database_url())
        defs = build_definitions(settings, drills=True)
        order = store.orders.submit(make_order())
        result = run_order(defs, instance, store, order.order_id)
    assert not result.success and result.status is OrderStatus.DEAD_LETTERED
    assert evaluations(instance, result.run_id) == {"plan_covers_outline": False}
    started = {
        e.step_key for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START)
    }
    assert started == {"order_intake", "order_plan"}, "nothing after the plan ran"
    [letter] = store.dead_letters.dead_letters()
    assert (letter["failed_step"], letter["error_class"]) == ("plan", "permanent")
    assert flags(store, order.order_id) == ["plan_covers_outline"]
