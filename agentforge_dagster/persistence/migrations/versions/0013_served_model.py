"""The model that answered, beside the model asked for.

Adds ``served_model`` to ``model_calls`` and ``model_responses``: what the provider's answer said
answered (its body's ``model``), which the call is priced as when the price table knows it. Calls
recorded before have none (not said).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = ("model_calls", "model_responses")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("served_model", sa.String(120), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("served_model")
