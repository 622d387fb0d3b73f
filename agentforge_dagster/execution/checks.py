"""Asset checks beside the order assets: what must hold of a step's output, in the UI's Checks tab.

Blocking (ERROR severity; a failure stops the steps after it, so a wrong answer never reaches a
customer, and the order is dead-lettered as permanent):

- ``plan_covers_outline`` on ``order_plan``: the plan keeps every section of its service's outline;
- ``draft_approved`` on ``order_review``: the final draft was approved by the review, or the order is
  held for a person (the delivery then waits for their decision).

After the side effects (ERROR severity, not blocking: what happened cannot be undone, so a failure
raises an operator flag — a ``check_failed`` audit event, counted by ``agentforge status``):

- ``delivered_file_matches`` on ``order_delivery``: the delivered file exists and its SHA-256 is the
  one recorded;
- ``invoice_matches_price`` on ``order_invoice``: the invoice is the order's price, and exactly one
  ledger row exists for the order.

Each check is a plain function of the business store, the order id and the step's output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentforge_dagster.domain.models import (
    SERVICE_OUTLINES,
    Artifact,
    Delivery,
    Invoice,
    Plan,
    Review,
)
from agentforge_dagster.persistence.deliverables import Deliverables
from agentforge_dagster.persistence.store import BusinessStore


@dataclass(frozen=True)
class Outcome:
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepCheck:
    name: str
    step: str
    blocking: bool
    description: str
    evaluate: Callable[[BusinessStore, Deliverables, str, Artifact], Outcome]


def plan_covers_outline(
    store: BusinessStore, files: Deliverables, order_id: str, plan: Artifact
) -> Outcome:
    assert isinstance(plan, Plan)
    service = store.orders.get(order_id).order.service.value
    planned = {section.casefold() for section in plan.sections}
    missing = [s for s in SERVICE_OUTLINES[service] if s.casefold() not in planned]
    return Outcome(not missing, {"service": service, "missing_sections": ", ".join(missing)})


def draft_approved(
    store: BusinessStore, files: Deliverables, order_id: str, review: Artifact
) -> Outcome:
    assert isinstance(review, Review)
    return Outcome(
        review.approved or review.hold is not None,
        {"approved_by_review": review.approved, "held_for": review.hold or "nobody"},
    )


def delivered_file_matches(
    store: BusinessStore, files: Deliverables, order_id: str, delivery: Artifact
) -> Outcome:
    """Read back from where it was delivered (local file, or the recorded S3 version)."""
    assert isinstance(delivery, Delivery)
    found = store.deliveries.delivery(order_id)
    recorded = found.content_sha256 if found is not None else None
    content = files.read(delivery.location)
    actual = hashlib.sha256(content).hexdigest() if content is not None else None
    return Outcome(
        actual is not None and actual == recorded == delivery.content_sha256,
        {
            "location": delivery.location,
            "file_exists": actual is not None,
            "recorded": recorded or "",
        },
    )


def invoice_matches_price(
    store: BusinessStore, files: Deliverables, order_id: str, invoice: Artifact
) -> Outcome:
    assert isinstance(invoice, Invoice)
    price = store.orders.get(order_id).order.price_cents
    rows = store.deliveries.ledger_entries(order_id)
    return Outcome(
        invoice.amount_cents == price and rows == 1,
        {"price_cents": price, "invoiced_cents": invoice.amount_cents, "ledger_rows": rows},
    )


STEP_CHECKS: dict[str, tuple[StepCheck, ...]] = {
    "plan": (
        StepCheck(
            "plan_covers_outline",
            "plan",
            True,
            "The plan keeps every section of its service's outline.",
            plan_covers_outline,
        ),
    ),
    "review": (
        StepCheck(
            "draft_approved",
            "review",
            True,
            "The final draft was approved by the review, or the order is held for a person.",
            draft_approved,
        ),
    ),
    "delivery": (
        StepCheck(
            "delivered_file_matches",
            "delivery",
            False,
            "The delivered file exists and its SHA-256 is the one recorded.",
            delivered_file_matches,
        ),
    ),
    "invoice": (
        StepCheck(
            "invoice_matches_price",
            "invoice",
            False,
            "The invoice is the order's price, and exactly one ledger row exists for the order.",
            invoice_matches_price,
        ),
    ),
}
