"""pack invoice meters and outbox failed_version

- `recharges.meter`: which usage-report key (and so which Kinde code) invoices a purchase.
  Auto-recharge purchases are now invoiced on the pack's `auto_recharge_kinde_feature_code`,
  counted apart from sales. Every purchase made before this revision was invoiced on the
  pack's `kinde_feature_code`, so existing rows get "bundle:<key>" and keep being counted
  where Kinde already has them.
- `outbox.failed_version`: the version a row had when its last attempt failed, so new work
  keeps a backing-off row's next attempt and is never dead-lettered with the failed version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    # Tolerates a schema that already has the columns (a database re-stamped to an earlier
    # revision and upgraded again, as the migration tests do).
    if "meter" not in _columns("recharges"):
        with op.batch_alter_table("recharges", schema=None) as batch_op:
            batch_op.add_column(sa.Column("meter", sa.String(length=80), nullable=True))
        op.execute("UPDATE recharges SET meter = 'bundle:' || bundle")
        with op.batch_alter_table("recharges", schema=None) as batch_op:
            batch_op.alter_column("meter", existing_type=sa.String(length=80), nullable=False)
            batch_op.create_index("ix_recharges_wallet_id_meter", ["wallet_id", "meter"],
                                  unique=False)
    if "failed_version" not in _columns("outbox"):
        with op.batch_alter_table("outbox", schema=None) as batch_op:
            batch_op.add_column(sa.Column("failed_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("failed_version")
    with op.batch_alter_table("recharges", schema=None) as batch_op:
        batch_op.drop_index("ix_recharges_wallet_id_meter")
        batch_op.drop_column("meter")
