"""Queue launch marks on orders; dead letters; model calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("failed_error_class", sa.String(20)))
        batch.add_column(sa.Column("launch_requested_at", sa.DateTime(timezone=True)))
    op.create_table(
        "dead_letters",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("failed_step", sa.String(40), nullable=False),
        sa.Column("error_class", sa.String(20), nullable=False),
        sa.Column("error_type", sa.String(80), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("replays", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replay_requested_at", sa.DateTime(timezone=True)),
        sa.Column("replay_run_key", sa.String(120)),
    )
    op.create_table(
        "model_calls",
        sa.Column("call_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Numeric(12, 6), nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cache_hit", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_model_calls_order_id", "model_calls", ["order_id"])


def downgrade() -> None:
    op.drop_table("model_calls")
    op.drop_table("dead_letters")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("launch_requested_at")
        batch.drop_column("failed_error_class")
