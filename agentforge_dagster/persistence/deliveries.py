"""Deliveries and the ledger: the side effects a customer sees, made once per order.

A step may run twice for one order (a retry, a replay, two runs racing), so each is an insert that
the first writer wins, keyed by the order (:func:`~agentforge_dagster.persistence.sql.insert_once`):
a repeat returns what was recorded the first time rather than a second delivery or invoice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from agentforge_dagster.domain.models import Delivery, Invoice, Order
from agentforge_dagster.persistence.schema import deliveries, ledger
from agentforge_dagster.persistence.sql import StoreConcern, insert_once


class DeliveryStore(StoreConcern):
    """One delivery and one ledger entry per order, whoever writes them first."""

    def record_delivery(self, delivery: Delivery) -> Delivery:
        """Record a delivery once per order; a repeat returns the delivery already recorded."""
        with self.begin() as conn:
            row = insert_once(conn, deliveries, delivery.model_dump(), "order_id")
        return Delivery(**row)

    def delivery(self, order_id: str) -> Delivery | None:
        """The order's recorded delivery, if it was delivered."""
        query = select(deliveries).where(deliveries.c.order_id == order_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return Delivery(**row) if row is not None else None

    def delivery_rows(self) -> list[dict[str, Any]]:
        """Every recorded delivery, in the order they were made."""
        query = select(deliveries).order_by(deliveries.c.delivered_at, deliveries.c.order_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def record_ledger_entry(self, order: Order, invoice: Invoice) -> Invoice:
        """Book an invoice in the ledger once per order; a repeat returns the booked invoice."""
        values = {
            "order_id": order.order_id,
            "invoice_id": invoice.invoice_id,
            "customer": order.customer,
            "amount_cents": invoice.amount_cents,
            "created_at": invoice.issued_at,
        }
        with self.begin() as conn:
            row = insert_once(conn, ledger, values, "order_id")
        return Invoice(
            order_id=row["order_id"],
            invoice_id=row["invoice_id"],
            amount_cents=row["amount_cents"],
            issued_at=row["created_at"],
        )

    def ledger_entries(self, order_id: str) -> int:
        """How many ledger rows the order has (one once invoiced; the invoice check counts them)."""
        query = select(func.count()).select_from(ledger).where(ledger.c.order_id == order_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def ledger_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(select(ledger).order_by(ledger.c.entry_id)).mappings()
            ]
