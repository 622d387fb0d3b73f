"""The atomic budget: a paid model call reserves its worst-case cost before it goes out.

Adds ``budget_reservations`` (one row per call in flight, deleted when the call's real cost is
recorded or the call fails; a row older than its time to live is a crashed caller's and no longer
counts).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_reservations",
        sa.Column("reservation_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("amount_usd", sa.Numeric(12, 6), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_budget_reservations_month", "budget_reservations", ["month"])


def downgrade() -> None:
    op.drop_index("ix_budget_reservations_month", table_name="budget_reservations")
    op.drop_table("budget_reservations")
