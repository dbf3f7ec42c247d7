"""team budgets: member caps, member spend per UTC window, member of each hold

Revision ID: 0011
Revises: 0013
Create Date: 2026-11-28 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import adapters.sql.schema

revision = "0011"
down_revision = "0013"
branch_labels = None
depends_on = None


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    # Tolerates a schema that already has the tables (a database re-stamped to an earlier
    # revision and upgraded again, as the migration tests do).
    existing = _tables()
    if "member_budgets" not in existing:
        _create_member_budgets()
    if "member_spend" not in existing:
        _create_member_spend()
    if "member_holds" not in existing:
        _create_member_holds()


def _create_member_budgets() -> None:
    op.create_table(
        "member_budgets",
        sa.Column("wallet_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("credits_per_day", sa.BigInteger(), nullable=True),
        sa.Column("credits_per_month", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", adapters.sql.schema.UtcDateTime(), nullable=False),
        sa.CheckConstraint("credits_per_day IS NULL OR credits_per_day >= 0",
                           name=op.f("ck_member_budgets_day_cap")),
        sa.CheckConstraint("credits_per_month IS NULL OR credits_per_month >= 0",
                           name=op.f("ck_member_budgets_month_cap")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"],
                                name=op.f("fk_member_budgets_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("wallet_id", "member_id", name=op.f("pk_member_budgets")),
    )


def _create_member_spend() -> None:
    op.create_table(
        "member_spend",
        sa.Column("wallet_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("feature", sa.String(length=64), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", adapters.sql.schema.UtcDateTime(), nullable=False),
        sa.CheckConstraint("credits >= 0", name=op.f("ck_member_spend_credits_not_negative")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"],
                                name=op.f("fk_member_spend_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("wallet_id", "member_id", "period", "feature",
                                name=op.f("pk_member_spend")),
    )


def _create_member_holds() -> None:
    op.create_table(
        "member_holds",
        sa.Column("hold_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"],
                                name=op.f("fk_member_holds_hold_id_holds")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"],
                                name=op.f("fk_member_holds_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_member_holds")),
    )
    op.create_index("ix_member_holds_wallet_id_member_id", "member_holds",
                    ["wallet_id", "member_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_member_holds_wallet_id_member_id", table_name="member_holds")
    op.drop_table("member_holds")
    op.drop_table("member_spend")
    op.drop_table("member_budgets")
