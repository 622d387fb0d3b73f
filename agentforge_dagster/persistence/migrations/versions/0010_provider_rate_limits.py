"""Shared rate limits of the model providers.

Adds ``provider_rate_limits`` (per provider and model: requests and tokens left in its buckets,
when they were refilled, until when a 429 paused it) and ``provider_calls_in_flight`` (one row per
call under way, with an expiry: a dead worker's slot frees itself).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_rate_limits",
        sa.Column("provider", sa.String(200), primary_key=True),
        sa.Column("requests_left", sa.Float(), nullable=False),
        sa.Column("tokens_left", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "provider_calls_in_flight",
        sa.Column("call_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_provider_calls_in_flight_provider", "provider_calls_in_flight", ["provider"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_calls_in_flight_provider", table_name="provider_calls_in_flight")
    op.drop_table("provider_calls_in_flight")
    op.drop_table("provider_rate_limits")
