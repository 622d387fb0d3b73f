"""The six business steps of an order, as plain functions over artifacts.

A step is data (:class:`StepSpec`) plus a small function ``run(env, inputs) -> artifact``. The
Dagster assets in :mod:`agentforge_dagster.execution.assets` are built from this table by one
factory, so retries, auditing and fault injection are one mechanism for all six.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from agentforge_dagster.domain.errors import PermanentError
from agentforge_dagster.domain.models import (
    Artifact,
    Delivery,
    Draft,
    DraftProposal,
    Invoice,
    Order,
    Plan,
    PlanProposal,
    Review,
    utcnow,
)
from agentforge_dagster.domain.policy import Finding, review_findings
from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.domain.steps import STEP_NAMES as STEP_NAMES  # re-exported
from agentforge_dagster.execution.gateway import ModelGateway
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse
from agentforge_dagster.persistence.deliverables import Deliverables
from agentforge_dagster.persistence.review_holds import Hold, HoldKind
from agentforge_dagster.persistence.store import BusinessStore

P = TypeVar("P", bound=BaseModel)


@dataclass
class StepEnv:
    """What a step may touch: its order, the business store, the models and where to deliver.

    ``hold`` is the order's newest hold for a person, if it ever had one: its decision says what
    a replay after it does (deliver the held draft, deliver a person's text, draft again with
    another model or an added instruction).
    """

    order_id: str
    run_id: str
    attempt: int
    store: BusinessStore
    gateway: ModelGateway
    deliverables: Deliverables
    max_revisions: int = 1
    requires_approval: Callable[[Order], bool] = lambda order: False
    hold: Hold | None = None

    @property
    def redrive_note(self) -> str | None:
        """A person's added instruction, when the newest decision on the order is a re-drive."""
        if self.hold is not None and self.hold.decision == "redrive":
            return self.hold.note or None
        return None

    @property
    def model_calls(self) -> list[ModelResponse]:
        return self.gateway.responses

    def ask(self, request: ModelRequest, schema: type[P]) -> P:
        return self.gateway.ask(request, schema)


def _prompt(instruction: str, **context: Any) -> str:
    return instruction + "\n\n" + json.dumps(context, sort_keys=True, default=str, indent=1)


# -- the steps ----------------------------------------------------------------------------------
def intake(env: StepEnv, inputs: Mapping[str, Artifact]) -> Order:
    """Take the order in: only an order a run has claimed (now processing) goes on."""
    record = env.store.orders.get(env.order_id)
    if record.status is not OrderStatus.PROCESSING:
        raise PermanentError(
            f"order {env.order_id!r} is {record.status.value}; only queued or replayed orders are "
            "taken in"
        )
    return record.order


def plan(env: StepEnv, inputs: Mapping[str, Artifact]) -> Plan:
    order = _get(inputs, "intake", Order)
    order_context = order.model_dump(mode="json")
    proposal = env.ask(
        ModelRequest(
            task="plan",
            prompt=_prompt("Plan the deliverable for this order as JSON.", order=order_context),
            context={"order": order_context},
            output_schema=PlanProposal.model_json_schema(),
        ),
        PlanProposal,
    )
    return Plan(order_id=order.order_id, **proposal.model_dump())


def _write(env: StepEnv, order: Order, plan_: Plan, revision: int, feedback: list[str]) -> Draft:
    plan_context = plan_.model_dump(mode="json")
    task = "revise" if feedback else "draft"
    instruction = (
        "Revise the deliverable to fix these review issues: " + "; ".join(feedback)
        if feedback
        else "Write the deliverable that follows this plan, as JSON."
    )
    if env.redrive_note:
        instruction += f"\n\nA person who reviewed an earlier draft asks: {env.redrive_note}"
    proposal = env.ask(
        ModelRequest(
            task=task,
            prompt=_prompt(instruction, brief=order.brief, plan=plan_context),
            context={"plan": plan_context, "brief": order.brief, "feedback": feedback},
            output_schema=DraftProposal.model_json_schema(),
        ),
        DraftProposal,
    )
    model_name = env.model_calls[-1].model
    return Draft(
        order_id=order.order_id, revision=revision, model=model_name, **proposal.model_dump()
    )


def draft(env: StepEnv, inputs: Mapping[str, Artifact]) -> Draft:
    return _write(env, _get(inputs, "intake", Order), _get(inputs, "plan", Plan), 0, [])


def review(env: StepEnv, inputs: Mapping[str, Artifact]) -> Review:
    """Check the draft against the rule set (:mod:`~agentforge_dagster.domain.policy`).

    What a revision can fix is sent back at most ``max_revisions`` times. What is still found
    then, and any finding no revision makes safe, holds the order for a person (quarantined);
    a clean draft of an order that needs approval waits for one (awaiting_approval). Either way
    the review is returned, held: the delivery step delivers it only after a person's decision.
    """
    order, plan_ = _get(inputs, "intake", Order), _get(inputs, "plan", Plan)
    current = _get(inputs, "draft", Draft)
    findings = _findings(env, order, plan_, current)
    revisions = 0
    while (
        findings and all(f.action == "revise" for f in findings) and revisions < env.max_revisions
    ):
        revisions += 1
        feedback = [f.reason for f in findings]
        current = _write(env, order, plan_, current.revision + 1, feedback)
        findings = _findings(env, order, plan_, current)
    verdict = {
        "order_id": order.order_id,
        "approved": not findings,
        "issues": [f.reason for f in findings],
        "revisions": revisions,
        "final_draft": current,
    }
    if not findings and not env.requires_approval(order):
        return Review(**verdict)
    kind: HoldKind = "quarantined" if findings else "awaiting_approval"
    hold_id = env.store.review.hold_for_review(
        order.order_id,
        run_id=env.run_id,
        kind=kind,
        step="review",
        findings=findings,
        draft=current.as_markdown(),
        model=current.model,
    )
    return Review(**verdict, hold=kind, hold_id=hold_id)


def _findings(env: StepEnv, order: Order, plan_: Plan, draft_: Draft) -> list[Finding]:
    """The rule set over a draft, with the other customers and orders the draft could name."""
    others = env.store.orders.names_in(draft_.as_markdown(), besides=order.order_id)
    return review_findings(
        order, plan_, draft_, other_customers=others.customers, other_order_ids=others.order_ids
    )


def deliver(env: StepEnv, inputs: Mapping[str, Artifact]) -> Delivery | None:
    """Hand the approved deliverable over; delivering the same order twice records one delivery.

    A held review goes out only once a person approved it (the held draft) or edited it (their
    text); until then nothing is delivered (None: no delivery, so no invoice, and the run ends).
    """
    reviewed = _get(inputs, "review", Review)
    content = reviewed.final_draft.as_markdown()
    if reviewed.hold is not None:
        hold = env.hold
        if hold is None or hold.hold_id != reviewed.hold_id or hold.decision is None:
            return None
        if hold.decision == "edit" and hold.edited_text:
            content = hold.edited_text
        elif hold.decision != "approve":
            return None
    data = content.encode("utf-8")
    location = env.deliverables.put(env.order_id, data)
    return env.store.deliveries.record_delivery(
        Delivery(
            order_id=env.order_id,
            delivery_id=f"dlv-{env.order_id}",
            location=location,
            content_sha256=hashlib.sha256(data).hexdigest(),
            delivered_at=utcnow(),
        )
    )


def invoice(env: StepEnv, inputs: Mapping[str, Artifact]) -> Invoice:
    """Book the order in the ledger (once, by the database's unique key) and complete it."""
    order = _get(inputs, "intake", Order)
    _get(inputs, "delivery", Delivery)  # no invoice without a delivery
    booked = env.store.deliveries.record_ledger_entry(
        order,
        Invoice(
            order_id=order.order_id,
            invoice_id=f"inv-{order.order_id}",
            amount_cents=order.price_cents,
            issued_at=utcnow(),
        ),
    )
    if env.store.orders.get(order.order_id).status is not OrderStatus.COMPLETED:
        env.store.orders.transition(
            order.order_id,
            OrderStatus.COMPLETED,
            run_id=env.run_id,
            step="invoice",
            invoice_id=booked.invoice_id,
        )
    return booked


A = TypeVar("A", bound=Artifact)


def _get(inputs: Mapping[str, Artifact], name: str, kind: type[A]) -> A:
    value = inputs[name]
    if not isinstance(value, kind):
        raise TypeError(f"input {name!r} should be a {kind.__name__}, got {type(value).__name__}")
    return value


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepSpec:
    name: str
    output_type: type[Artifact]
    inputs: tuple[str, ...]
    uses_model: bool
    description: str
    run: Callable[[StepEnv, Mapping[str, Artifact]], Artifact | None]

    @property
    def may_hold(self) -> bool:
        """Whether the step may end without an output, holding the order for a person: a model
        step (the model may refuse) or the delivery (a held review waits for a decision)."""
        return self.uses_model or self.name == "delivery"

    @property
    def asset_name(self) -> str:
        return f"order_{self.name}"


STEPS: tuple[StepSpec, ...] = (
    StepSpec(
        "intake",
        Order,
        (),
        False,
        "The validated order, taken from the queue into processing.",
        intake,
    ),
    StepSpec(
        "plan", Plan, ("intake",), True, "The model's plan: outline, tone, length, keywords.", plan
    ),
    StepSpec(
        "draft",
        Draft,
        ("intake", "plan"),
        True,
        "The model's first draft of the deliverable.",
        draft,
    ),
    StepSpec(
        "review",
        Review,
        ("intake", "plan", "draft"),
        True,
        "The reviewed draft, revised at most a bounded number of times.",
        review,
    ),
    StepSpec(
        "delivery",
        Delivery,
        ("review",),
        False,
        "The deliverable handed to the customer, once.",
        deliver,
    ),
    StepSpec(
        "invoice",
        Invoice,
        ("intake", "delivery"),
        False,
        "The ledger entry for the order, once.",
        invoice,
    ),
)
