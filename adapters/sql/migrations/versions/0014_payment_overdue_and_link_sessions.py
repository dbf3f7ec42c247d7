"""payment overdue and link sessions: who may spend the customer's money

`dashboard_link_sessions`: the one session each dashboard link opened (a second open of the
link finds its row and is refused), with its end (expiry or "Sign out").
`payment_standing`: whether Kinde last reported a failed payment for a wallet's customer
(`customer.payment_failed` until `customer.payment_succeeded`).
`hold_placers`: the user whose token placed a hold (a user settles only holds it placed).

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-08 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import adapters.sql.schema

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tolerates tables that already exist (a database re-stamped to an earlier revision).
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    utc = adapters.sql.schema.UtcDateTime
    if "dashboard_link_sessions" not in existing:
        op.create_table(
            "dashboard_link_sessions",
            sa.Column("link_id", sa.String(length=64), nullable=False),
            sa.Column("wallet_id", sa.String(length=64), nullable=False),
            sa.Column("opened_at", utc(), nullable=False),
            sa.Column("expires_at", utc(), nullable=False),
            sa.Column("ended_at", utc(), nullable=True),
            sa.PrimaryKeyConstraint("link_id", name=op.f("pk_dashboard_link_sessions")),
        )
    if "payment_standing" not in existing:
        op.create_table(
            "payment_standing",
            sa.Column("wallet_id", sa.String(length=64), nullable=False),
            sa.Column("overdue", sa.Boolean(), nullable=False),
            sa.Column("event_at", utc(), nullable=False),
            sa.Column("updated_at", utc(), nullable=False),
            sa.PrimaryKeyConstraint("wallet_id", name=op.f("pk_payment_standing")),
        )
    if "hold_placers" not in existing:
        op.create_table(
            "hold_placers",
            sa.Column("hold_id", sa.String(length=40), nullable=False),
            sa.Column("placed_by", sa.String(length=64), nullable=False),
            sa.ForeignKeyConstraint(["hold_id"], ["holds.id"],
                                    name=op.f("fk_hold_placers_hold_id_holds")),
            sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_hold_placers")),
        )


def downgrade() -> None:
    op.drop_table("hold_placers")
    op.drop_table("payment_standing")
    op.drop_table("dashboard_link_sessions")
