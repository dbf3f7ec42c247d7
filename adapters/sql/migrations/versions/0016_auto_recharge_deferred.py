"""auto-recharge purchases that wait for the one in flight

`wallets.auto_recharge_deferred_at`: when a purchase was due but another was still being
invoiced (NULL: nothing waits). The worker buys it once nothing is in flight, and the next
attempt to spend does too (app.services.recharge), so a wallet that ran dry while a purchase
was in flight never stalls.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sql.schema import UtcDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("wallets")}
    if "auto_recharge_deferred_at" not in columns:
        with op.batch_alter_table("wallets") as batch:
            batch.add_column(sa.Column("auto_recharge_deferred_at", UtcDateTime(),
                                       nullable=True))
    if "ix_wallets_auto_recharge_deferred" not in {
            i["name"] for i in inspector.get_indexes("wallets")}:
        # The worker looks for waiting purchases every pass: an index, not a scan.
        op.create_index("ix_wallets_auto_recharge_deferred", "wallets",
                        ["auto_recharge_deferred_at"])


def downgrade() -> None:
    op.drop_index("ix_wallets_auto_recharge_deferred", table_name="wallets")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("auto_recharge_deferred_at")
