"""Figures of the review gate: how often drafts are held, how long people take, what they decide.

- quarantine rate per service and model: orders quarantined over orders drafted, by the service
  ordered and the model that wrote the draft;
- time waiting for a decision: median and longest, decided holds; and how many wait now;
- outcomes: approvals, edits, re-drives and rejections.

``agentforge report`` prints them; the ``daily_business_figures`` asset records the day's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from agentforge_dagster.persistence.review_holds import DECISIONS
from agentforge_dagster.persistence.store import BusinessStore

if TYPE_CHECKING:
    import pandas as pd
else:
    from agentforge_dagster.metrics._pandas import pd


@dataclass(frozen=True)
class ReviewGateFigures:
    rates: pd.DataFrame  # index (service, model): drafted, quarantined, quarantine_rate
    held: int
    waiting: int
    median_wait_hours: float | None
    longest_wait_hours: float | None
    outcomes: dict[str, int]


_HOLD_COLUMNS = ["order_id", "kind", "model", "held_at", "decision", "decided_at"]


def review_gate_figures(store: BusinessStore, day: date | None = None) -> ReviewGateFigures:
    """The gate's figures over every hold, or over the holds of ``day`` (UTC)."""
    holds = pd.DataFrame(store.review.hold_rows(), columns=_HOLD_COLUMNS)
    drafts = pd.DataFrame(
        store.model_calls.draft_models(), columns=["order_id", "model", "service"]
    )
    services = pd.DataFrame(list(store.orders.services().items()), columns=["order_id", "service"])
    if day is not None:
        moments = pd.to_datetime(holds["held_at"], utc=True)
        holds = holds[moments.dt.date == day]
    quarantined = holds[holds["kind"] == "quarantined"].merge(services, on="order_id")
    drafted = drafts.groupby(["service", "model"])["order_id"].nunique().rename("drafted")
    held = quarantined.groupby(["service", "model"])["order_id"].nunique().rename("quarantined")
    rates = pd.concat([drafted, held], axis=1).fillna(0).astype(int)
    if day is not None:
        rates = rates[rates["quarantined"] > 0]
    rates["quarantine_rate"] = (
        rates["quarantined"] / rates["drafted"].where(rates["drafted"] > 0)
    ).round(3)
    decided = holds.dropna(subset=["decided_at"])
    waits = (
        pd.to_datetime(decided["decided_at"], utc=True)
        - pd.to_datetime(decided["held_at"], utc=True)
    ).dt.total_seconds() / 3600
    counts = holds["decision"].value_counts()
    return ReviewGateFigures(
        rates=rates,
        held=len(holds),
        waiting=int(holds["decision"].isna().sum()),
        median_wait_hours=round(float(waits.median()), 3) if len(waits) else None,
        longest_wait_hours=round(float(waits.max()), 3) if len(waits) else None,
        outcomes={decision: int(counts.get(decision, 0)) for decision in DECISIONS},
    )


def format_review_gate(figures: ReviewGateFigures) -> str:
    if figures.held == 0:
        return "review gate: no order was held for a person"
    wait = (
        f"median wait {figures.median_wait_hours:.2f} h, longest {figures.longest_wait_hours:.2f} h"
        if figures.median_wait_hours is not None
        else "no decision yet"
    )
    outcomes = ", ".join(f"{name} {count}" for name, count in figures.outcomes.items())
    lines = [
        f"review gate: {figures.held} holds, {figures.waiting} waiting; {wait}; {outcomes}",
        figures.rates.to_string(),
    ]
    return "\n".join(lines)
