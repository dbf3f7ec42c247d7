"""plan period states: provisional renewals, final periods and Kinde look-up back-off

`plan_allotments` gains:
- `status`: "granted" (Kinde, an event or the local calendar stated the period),
  "provisional" (granted on the agreement's calendar at the period end while Kinde had not yet
  reported the renewal; confirmed, moved or withdrawn once it does) or "withdrawn" (Kinde said
  the agreement was not renewed: the unused credits were taken back);
- `final`: the agreement was cancelled: this period's end is applied, nothing follows it;
- `check_at` / `attempts`: when the worker asks Kinde again about a provisional period, and how
  often it asked without an answer (one back-off schedule, kept in the database so that one
  stuck wallet never hides the others and every instance shares it).
`wallets.next_period_end_at`: the next plan period end not yet applied, so that a read past
it sweeps the wallet (backfilled from the open periods).
`blocks.expires_at` may now move (a period Kinde extended moves its allotment's expiry).

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-08 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sql.schema import UtcDateTime

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tolerant of columns that already exist (a database stamped back to an older revision by
    # hand, as the migration tests do): add what is missing.
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("plan_allotments")}
    for column in (
        sa.Column("status", sa.String(16), nullable=False, server_default="granted"),
        sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("check_at", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    ):
        if column.name not in have:
            op.add_column("plan_allotments", column)
    indexes = {i["name"] for i in inspector.get_indexes("plan_allotments")}
    if "ix_plan_allotments_check" not in indexes:
        op.create_index("ix_plan_allotments_check", "plan_allotments", ["status", "check_at"])
    if "next_period_end_at" not in {c["name"] for c in inspector.get_columns("wallets")}:
        op.add_column("wallets", sa.Column("next_period_end_at", UtcDateTime(), nullable=True))
    op.execute(
        "UPDATE wallets SET next_period_end_at = (SELECT MIN(a.period_end) FROM "
        "plan_allotments a WHERE a.wallet_id = wallets.id AND a.closed_at IS NULL "
        "AND a.ended_at IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("next_period_end_at")
    op.drop_index("ix_plan_allotments_check", table_name="plan_allotments")
    with op.batch_alter_table("plan_allotments") as batch:
        batch.drop_column("attempts")
        batch.drop_column("check_at")
        batch.drop_column("final")
        batch.drop_column("status")
