"""Model calls, stored answers and the monthly budget: what the models cost and what was paid for.

Every call is recorded (cost, tokens, latency) so the month's spend is one SQL sum. A paid answer is
kept under its request's key, first writer wins, so a retry or a replay never pays twice for it.
A budget cap is an upsert per month: the last operator to set it wins, with no moment without a cap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from agentforge_dagster.domain.models import utcnow
from agentforge_dagster.persistence import audit
from agentforge_dagster.persistence.schema import budgets, model_calls, model_responses
from agentforge_dagster.persistence.sql import StoreConcern, dialect_insert, insert_once


class ModelCallStore(StoreConcern):
    """The model calls made, the answers kept, and the cap on what a month may spend."""

    # -- model responses (never pay twice) ------------------------------------------------------
    def stored_response(self, cache_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(model_responses).where(model_responses.c.cache_key == cache_key)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def store_response(self, **values: Any) -> None:
        """Keep a paid answer; a second writer of the same key keeps the first answer."""
        with self.begin() as conn:
            insert_once(conn, model_responses, {**values, "created_at": utcnow()}, "cache_key")

    # -- model calls ----------------------------------------------------------------------------
    def record_model_call(self, **values: Any) -> None:
        with self.begin() as conn:
            conn.execute(model_calls.insert().values(**values))

    def model_call_rows(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = select(model_calls).order_by(model_calls.c.call_id)
        if order_id is not None:
            query = query.where(model_calls.c.order_id == order_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def repaid_calls(self) -> dict[str, int]:
        """Per order, paid calls for an answer that had been paid for already (should be none)."""
        paid = (
            select(
                model_calls.c.order_id,
                (func.count() - 1).label("repeats"),
            )
            .where(model_calls.c.cache_hit.is_(False), model_calls.c.cache_key.is_not(None))
            .group_by(model_calls.c.order_id, model_calls.c.cache_key)
            .having(func.count() > 1)
        ).subquery()
        query = select(paid.c.order_id, func.sum(paid.c.repeats)).group_by(paid.c.order_id)
        with self.engine.connect() as conn:
            return {order_id: int(repeats) for order_id, repeats in conn.execute(query)}

    # -- budget ---------------------------------------------------------------------------------
    def set_budget(self, cap_usd: Decimal, month: str = "default") -> None:
        """Set the month's cap (or the default cap); replaces the one set before."""
        cap = {"cap_usd": cap_usd, "set_at": utcnow()}
        with self.begin() as conn:
            conn.execute(
                dialect_insert(conn, budgets)
                .values(month=month, **cap)
                .on_conflict_do_update(index_elements=[budgets.c.month], set_=cap)
            )
            audit.append(conn, "budget_set", detail={"month": month, "cap_usd": str(cap_usd)})

    def budget_cap(self, month: str) -> Decimal | None:
        """The month's cap, else the default cap set in the store; None: no cap stored."""
        with self.engine.connect() as conn:
            caps = dict(
                conn.execute(
                    select(budgets.c.month, budgets.c.cap_usd).where(
                        budgets.c.month.in_([month, "default"])
                    )
                ).all()
            )
        cap = caps.get(month, caps.get("default"))
        return Decimal(cap) if cap is not None else None

    def month_spend(self, month: str) -> Decimal:
        """What paid model calls cost in ``month`` (YYYY-MM); cache hits cost nothing."""
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(model_calls.c.cost_usd), 0)).where(
                    model_calls.c.cache_hit.is_(False),
                    model_calls.c.started_at >= start,
                    model_calls.c.started_at < end,
                )
            ).scalar_one()
        return Decimal(str(total))
