"""Per-destination delivery statuses (written by the scale-out workers, read by the API).

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_statuses",
        sa.Column("result_set_id", sa.String(length=255), nullable=False),
        sa.Column("destination_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("collection_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("result_set_id", "destination_id", name="pk_delivery_statuses"),
    )
    op.create_index("ix_delivery_statuses_account_id", "delivery_statuses", ["account_id"])
    op.create_index("ix_delivery_statuses_status", "delivery_statuses", ["status"])


def downgrade() -> None:
    op.drop_index("ix_delivery_statuses_status", table_name="delivery_statuses")
    op.drop_index("ix_delivery_statuses_account_id", table_name="delivery_statuses")
    op.drop_table("delivery_statuses")
