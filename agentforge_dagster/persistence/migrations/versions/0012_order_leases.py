"""Orders held by a runner are leases: who holds the order, for which run, until when.

Adds ``orders.lease_run_id``, ``orders.lease_holder`` and ``orders.lease_until``
(:mod:`agentforge_dagster.persistence.leases`). Orders in processing when this runs have no lease
and are judged by their runs as before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("lease_run_id", sa.String(80), nullable=True))
        batch.add_column(sa.Column("lease_holder", sa.String(300), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_holder")
        batch.drop_column("lease_run_id")
