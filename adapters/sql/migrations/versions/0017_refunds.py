"""refunds: one row per refunded pack, and the links a refund follows

- `refunds`: one row per refunded pack (primary key: its block, so a pack is refunded at most
  once under any race), naming the `void` entry that took its unused credits out (the revenue
  roll-forward counts that entry's draw as a refund), the amount and currency, and whether the
  pack was taken off Kinde's count (`reduced`) or needs a credit note (`credit_note_due`).
- `entries.block_id`: the block a credit entry created (a refund names the purchase entry).
- `recharges.block_id`: the block a purchase sold; `recharges.refunded_at`: refunded before
  Kinde invoiced it, so its meter no longer counts it.
Existing rows are backfilled by matching each credit entry and purchase to the block written
in the same transaction (same wallet, kind, time and reason).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters.sql.schema import UtcDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    # Tolerant of what already exists (a database stamped back to an older revision and
    # upgraded again, as the migration tests do): add only what is missing.
    if "block_id" not in _columns("entries"):
        with op.batch_alter_table("entries") as batch:
            batch.add_column(sa.Column("block_id", sa.String(40), nullable=True))
    missing = {"block_id", "refunded_at"} - _columns("recharges")
    if missing:
        with op.batch_alter_table("recharges") as batch:
            if "block_id" in missing:
                batch.add_column(sa.Column("block_id", sa.String(40), nullable=True))
            if "refunded_at" in missing:
                batch.add_column(sa.Column("refunded_at", UtcDateTime(), nullable=True))
    if "refunds" not in set(sa.inspect(op.get_bind()).get_table_names()):
        _create_refunds()
    _backfill()


def _create_refunds() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "refunds",
        sa.Column("block_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_entry_id", big_id, nullable=False),
        sa.Column("void_entry_id", big_id, nullable=False),
        sa.Column("recharge_id", sa.String(length=40), nullable=True),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("invoice", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("invoice IN ('reduced','credit_note_due')",
                           name=op.f("ck_refunds_invoice")),
        sa.ForeignKeyConstraint(["block_id"], ["blocks.id"],
                                name=op.f("fk_refunds_block_id_blocks")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"],
                                name=op.f("fk_refunds_wallet_id_wallets")),
        sa.ForeignKeyConstraint(["purchase_entry_id"], ["entries.id"],
                                name=op.f("fk_refunds_purchase_entry_id_entries")),
        sa.ForeignKeyConstraint(["void_entry_id"], ["entries.id"],
                                name=op.f("fk_refunds_void_entry_id_entries")),
        sa.PrimaryKeyConstraint("block_id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("void_entry_id", name=op.f("uq_refunds_void_entry_id")),
    )
    op.create_index("ix_refunds_created_at", "refunds", ["created_at"])


def _backfill() -> None:
    op.execute(
        "UPDATE entries SET block_id = (SELECT MIN(b.id) FROM blocks b WHERE "
        "b.wallet_id = entries.wallet_id AND b.kind = entries.kind AND "
        "b.created_at = entries.created_at AND b.reason = entries.reason AND "
        "b.original = entries.amount) "
        "WHERE block_id IS NULL AND kind IN ('grant', 'purchase', 'allotment', 'adjustment')"
    )
    op.execute(
        "UPDATE recharges SET block_id = (SELECT MIN(b.id) FROM blocks b WHERE "
        "b.wallet_id = recharges.wallet_id AND b.kind = 'purchase' AND "
        "b.created_at = recharges.created_at AND b.original = recharges.credits AND "
        "b.reason IN ('bundle:' || recharges.bundle, 'auto-recharge:' || recharges.bundle)) "
        "WHERE block_id IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_refunds_created_at", table_name="refunds")
    op.drop_table("refunds")
    with op.batch_alter_table("recharges") as batch:
        batch.drop_column("refunded_at")
        batch.drop_column("block_id")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("block_id")
