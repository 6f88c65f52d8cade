"""Deliveries over HTTP: deliveries (with their claim lease, idempotency key and completion
event), their per-destination statuses, webhook attempts, and accounts' webhook endpoints.

Revision ID: 0004
Revises: 0003
Create Date: 2026-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.String(length=255), nullable=False),
        sa.Column("collection_name", sa.String(length=255), nullable=False),
        sa.Column("result_set_id", sa.String(length=255), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        _when("now"),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("dispatched_run", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        _when("finished_at", True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        _when("lease_until", True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("webhook_status", sa.String(length=16), nullable=True),
        sa.Column("webhook_event", sa.Text(), nullable=True),
        sa.Column("webhook_target", sa.Text(), nullable=True),
        _when("webhook_next_at", True),
        _when("webhook_first_at", True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], ondelete="CASCADE",
            name="fk_deliveries_account_id_accounts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint(
            "account_id", "idempotency_key", name="uq_deliveries_account_id_idempotency_key"
        ),
    )
    op.create_index(
        "ix_deliveries_account_id_created_at", "deliveries", ["account_id", "created_at"]
    )
    op.create_index("ix_deliveries_result_set_id", "deliveries", ["result_set_id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])
    op.create_index("ix_deliveries_webhook_status", "deliveries", ["webhook_status"])
    op.create_table(
        "delivery_targets",
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("destination_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("destination_name", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], ondelete="CASCADE",
            name="fk_delivery_targets_delivery_id_deliveries",
        ),
        sa.PrimaryKeyConstraint("delivery_id", "destination_id", name="pk_delivery_targets"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _when("attempted_at"),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], ondelete="CASCADE",
            name="fk_webhook_attempts_delivery_id_deliveries",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        _when("secret_created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], ondelete="CASCADE",
            name="fk_webhook_endpoints_account_id_accounts",
        ),
        sa.PrimaryKeyConstraint("account_id", name="pk_webhook_endpoints"),
    )


def downgrade() -> None:
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_webhook_attempts_delivery_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_table("delivery_targets")
    op.drop_index("ix_deliveries_webhook_status", table_name="deliveries")
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.drop_index("ix_deliveries_result_set_id", table_name="deliveries")
    op.drop_index("ix_deliveries_account_id_created_at", table_name="deliveries")
    op.drop_table("deliveries")
