"""Daily business figures: revenue, model spend, orders delivered and failed, runway."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import select

from agentforge_dagster.persistence.schema import audit_log, deliveries, ledger, model_calls
from agentforge_dagster.persistence.store import BusinessStore


@dataclass(frozen=True)
class DailyFigures:
    day: str
    revenue: float
    model_spend: float
    orders_delivered: int
    orders_failed: int
    net_burn: float
    runway_days: float | None  # None: the day made money, no runway to count down

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frame(store: BusinessStore, query: Any) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all())


def _on_day(frame: pd.DataFrame, column: str, day: date) -> pd.DataFrame:
    if frame.empty:
        return frame
    moments = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return frame[(moments >= start) & (moments < start + timedelta(days=1))]


def daily_figures(
    store: BusinessStore, day: date, *, cash_on_hand: float, daily_fixed_costs: float
) -> DailyFigures:
    booked = _on_day(
        _frame(store, select(ledger.c.amount_cents, ledger.c.created_at)), "created_at", day
    )
    calls = _on_day(
        _frame(store, select(model_calls.c.cost_usd, model_calls.c.started_at)), "started_at", day
    )
    delivered = _on_day(_frame(store, select(deliveries.c.delivered_at)), "delivered_at", day)
    transitions = _on_day(
        _frame(
            store,
            select(audit_log.c.ts, audit_log.c.detail).where(audit_log.c.event == "transition"),
        ),
        "ts",
        day,
    )
    failed = (
        int(transitions["detail"].str.contains('"to": "failed"').sum()) if len(transitions) else 0
    )
    revenue = float(booked["amount_cents"].sum()) / 100 if len(booked) else 0.0
    spend = float(calls["cost_usd"].astype(float).sum()) if len(calls) else 0.0
    net_burn = daily_fixed_costs + spend - revenue
    return DailyFigures(
        day=day.isoformat(),
        revenue=round(revenue, 2),
        model_spend=round(spend, 6),
        orders_delivered=len(delivered),
        orders_failed=failed,
        net_burn=round(net_burn, 2),
        runway_days=round(cash_on_hand / net_burn, 1) if net_burn > 0 else None,
    )
