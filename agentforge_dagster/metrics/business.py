"""Daily business figures: revenue, model spend, orders delivered and failed, runway."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.persistence.store import BusinessStore

if TYPE_CHECKING:
    import pandas as pd
else:
    from agentforge_dagster.metrics._pandas import pd


@dataclass(frozen=True)
class DailyFigures:
    day: str
    revenue: float
    model_spend: float
    orders_delivered: int
    orders_failed: int
    net_burn: float
    runway_days: float | None  # None: the day made money, no runway to count down
    cache_hit_rate: float | None = None  # model calls answered from the response store
    latency_p50_s: float | None = None  # submit to delivered, orders completed that day
    latency_p95_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """The rows a store read, as a frame of the columns a figure uses."""
    return pd.DataFrame(rows, columns=columns)


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
        _frame(store.deliveries.ledger_rows(), ["amount_cents", "created_at"]), "created_at", day
    )
    calls = _on_day(
        _frame(store.model_calls.model_call_rows(), ["cost_usd", "cache_hit", "started_at"]),
        "started_at",
        day,
    )
    done = _on_day(
        _frame(store.orders.lifetimes(OrderStatus.COMPLETED), ["created_at", "updated_at"]),
        "updated_at",
        day,
    )
    waits = (
        (
            pd.to_datetime(done["updated_at"], utc=True)
            - pd.to_datetime(done["created_at"], utc=True)
        ).dt.total_seconds()
        if len(done)
        else pd.Series(dtype=float)
    )
    delivered = _on_day(
        _frame(store.deliveries.delivery_rows(), ["delivered_at"]), "delivered_at", day
    )
    transitions = _on_day(
        _frame(store.audit.stored_events("transition"), ["ts", "detail"]), "ts", day
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
        cache_hit_rate=round(float(calls["cache_hit"].astype(bool).mean()), 3)
        if len(calls)
        else None,
        latency_p50_s=round(float(waits.quantile(0.5)), 1) if len(waits) else None,
        latency_p95_s=round(float(waits.quantile(0.95)), 1) if len(waits) else None,
    )


COST_GROUPS = {"order": "order_id", "step": "step", "customer": "customer", "model": "model"}


def model_costs(store: BusinessStore, by: str) -> pd.DataFrame:
    """Model calls, tokens and cost per order, step, customer or model; cache hits cost 0."""
    calls = pd.DataFrame(store.model_calls.calls_with_customer())
    column = COST_GROUPS[by]
    if calls.empty:
        return pd.DataFrame(
            columns=["calls", "cache_hits", "input_tokens", "output_tokens", "cost_usd"]
        ).rename_axis(column)
    calls["cost_usd"] = calls["cost_usd"].astype(float)
    return (
        calls.groupby(column)
        .agg(
            calls=("call_id", "count"),
            cache_hits=("cache_hit", "sum"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
            cost_usd=("cost_usd", "sum"),
        )
        .sort_values("cost_usd", ascending=False)
    )


def plan_day(day: date, plan_start: date | None, first_order: date | None) -> int | None:
    """Day N of the business plan (day 1 is its start; default start: the first order's date)."""
    start = plan_start or first_order
    return (day - start).days + 1 if start is not None else None


def first_order_date(store: BusinessStore) -> date | None:
    first = store.orders.first_submitted_at()
    return pd.Timestamp(first).date() if first is not None else None
