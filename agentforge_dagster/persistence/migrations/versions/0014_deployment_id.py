"""The deployment's id (one row, a random UUID, made once) and each order's trace episode.

Adds the ``deployment`` table. Every process of a deployment reads the same business database, so
this row is how a CLI on the host, a sensor and a run container agree on who they are without a
setting (traces derive their ids from it). A restore brings the row back with the data.

Adds ``orders.episode`` (how many replays took the order out of its dead letter: each starts a
new root span in the order's trace) and ``orders.episode_started_at`` (None: at intake).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "deployment",
        sa.Column("deployment_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(table, [{"deployment_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("episode", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("episode_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("episode_started_at")
        batch.drop_column("episode")
    op.drop_table("deployment")
