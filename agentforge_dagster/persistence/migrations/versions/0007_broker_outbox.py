"""Broker intake and the transactional outbox of order events.

Adds ``rejected_orders.message_key`` (the broker message a refusal came from, unique: a redelivered
message is not recorded twice), the ``order_events`` outbox (one row per state change a client
hears about, written in the transaction of the change; sent per destination) and ``broker_health``
(the last success and the last error of each broker channel).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rejected_orders") as batch:
        batch.add_column(sa.Column("message_key", sa.String(300), nullable=True))
        batch.create_unique_constraint("uq_rejected_orders_message_key", ["message_key"])
    op.create_table(
        "order_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rabbitmq_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redis_sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_order_events_order_id", "order_events", ["order_id"])
    op.create_table(
        "broker_health",
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("broker_health")
    op.drop_index("ix_order_events_order_id", table_name="order_events")
    op.drop_table("order_events")
    with op.batch_alter_table("rejected_orders") as batch:
        batch.drop_constraint("uq_rejected_orders_message_key", type_="unique")
        batch.drop_column("message_key")
