"""What a run's container said before it died, on the order's dead letter.

Adds ``dead_letters.worker_output``: the last lines of the run container's output (its exit
code and OOM flag are in the letter's message), recorded when a run died around its steps.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("worker_output", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("worker_output")
