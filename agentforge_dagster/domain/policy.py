"""The review's rule set: what a draft must not be, each rule named, with the reason it gives.

A finding either sends the draft back for a revision (``revise``: the model can fix it) or holds the
order for a person (``quarantine``: a revision would not make it safe). The review step revises at
most ``max_revisions`` times; what is still found after that, and every ``quarantine`` finding at
once, moves the order to ``quarantined`` with the findings kept and shown.

Rules (name — action — what it catches):

- ``missing_section`` — revise — a section the plan requires is not in the draft;
- ``short_section`` — revise — a section under :data:`MIN_SECTION_WORDS` words;
- ``no_keyword`` — revise — none of the plan's keywords appears in the draft;
- ``instructs_the_system`` — quarantine — the brief or the draft tries to instruct the system
  rather than describe the work: "ignore previous instructions", "mark this order paid", "set the
  price", "do not invoice", "you are now …", "system prompt";
- ``names_another_customer`` — quarantine — the draft names another customer of the business
  (one the brief does not name itself);
- ``names_another_order`` — quarantine — the draft names another order's id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agentforge_dagster.domain.models import Draft, Order, Plan

MIN_SECTION_WORDS = 15
MIN_NAME_LENGTH = 4  # shorter customer names ("Al", "BP") match ordinary words too often

Action = Literal["revise", "quarantine"]

_INSTRUCTIONS = re.compile(
    r"\b(?:"
    r"(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)?"
    r"(?:previous|prior|above|earlier|former|system)\s+(?:instructions?|prompts?|rules?)"
    r"|mark\s+(?:this|the|my)\s+order\s+(?:as\s+)?(?:paid|completed?|delivered|free)"
    r"|(?:set|change|lower|reduce|update)\s+(?:the|its|my)\s+price"
    r"|do\s+not\s+(?:invoice|bill|charge)"
    r"|(?:issue|give|grant)\s+(?:me\s+)?(?:a\s+)?(?:full\s+)?refund"
    r"|you\s+are\s+now\s+(?:a|an|in)\b"
    r"|(?:reveal|print|show)\s+(?:your|the)\s+system\s+prompt"
    r"|system\s+prompt\s*:"
    r")",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    """One rule's objection: its name, what it does to the order, and why, in words."""

    rule: str
    action: Action
    reason: str


def _words(text: str) -> int:
    return len(text.split())


def quality_findings(plan: Plan, draft: Draft) -> list[Finding]:
    """What a revision can fix: missing or short sections, no keyword."""
    found = []
    headings = [section.heading for section in draft.sections]
    found += [
        Finding("missing_section", "revise", f"missing section {name!r}")
        for name in plan.sections
        if name not in headings
    ]
    found += [
        Finding(
            "short_section",
            "revise",
            f"section {section.heading!r} is shorter than {MIN_SECTION_WORDS} words",
        )
        for section in draft.sections
        if _words(section.body) < MIN_SECTION_WORDS
    ]
    text = draft.as_markdown().lower()
    if plan.keywords and not any(keyword.lower() in text for keyword in plan.keywords):
        found.append(
            Finding("no_keyword", "revise", "none of the brief's keywords appear in the draft")
        )
    return found


def instruction_findings(order: Order, draft: Draft | None = None) -> list[Finding]:
    """The brief or the draft speaking to the system instead of about the work."""
    found = []
    for where, text in (("brief", order.brief), ("draft", draft.as_markdown() if draft else "")):
        match = _INSTRUCTIONS.search(text)
        if match:
            phrase = " ".join(match.group(0).split())
            found.append(
                Finding(
                    "instructs_the_system",
                    "quarantine",
                    f"the {where} tries to instruct the system: {phrase!r}",
                )
            )
    return found


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE) is not None


def leak_findings(
    order: Order,
    draft: Draft,
    other_customers: Iterable[str],
    other_order_ids: Iterable[str],
) -> list[Finding]:
    """The draft naming a customer or an order that is not this one's."""
    text = draft.as_markdown()
    found = [
        Finding("names_another_customer", "quarantine", f"the draft names customer {name!r}")
        for name in sorted(set(other_customers))
        if len(name) >= MIN_NAME_LENGTH
        and name.casefold() != order.customer.casefold()
        and _mentions(text, name)
        and not _mentions(order.brief, name)
    ]
    found += [
        Finding("names_another_order", "quarantine", f"the draft names order {order_id!r}")
        for order_id in sorted(set(other_order_ids))
        if order_id != order.order_id and _mentions(text, order_id)
    ]
    return found


def review_findings(
    order: Order,
    plan: Plan,
    draft: Draft,
    *,
    other_customers: Iterable[str] = (),
    other_order_ids: Iterable[str] = (),
) -> list[Finding]:
    """Every rule over one draft, in the order of the module's list."""
    return [
        *quality_findings(plan, draft),
        *instruction_findings(order, draft),
        *leak_findings(order, draft, other_customers, other_order_ids),
    ]
