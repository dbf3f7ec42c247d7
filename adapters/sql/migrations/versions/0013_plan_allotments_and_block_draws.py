"""plan allotments and block draws

`plan_allotments`: one row per (wallet, agreement, period start, plan), the database's guarantee
that a plan period is granted once, and the period's bookkeeping (ended, closed).

`block_draws`: which block each usage, capture, expiry (and arrears-paying credit) took credits
from. Existing ledgers are backfilled by replaying each wallet's entries in order with the
ledger's own rules (soonest-expiring block first, then the oldest; an expiry names its block;
a credit pays arrears first), so the revenue roll-forward is exact for past periods too. One
approximation is left in old data: an expiry entry written before this revision is dated when
the sweep ran, not at the block's expiry (new expiries are dated at the expiry itself).

Revision ID: 0013
Revises: 0006
Create Date: 2026-11-28 09:45:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from adapters.sql.schema import UtcDateTime

revision = "0013"
down_revision = "0006"
branch_labels = None
depends_on = None

_CREDIT_KINDS = ("grant", "purchase", "allotment", "adjustment")
_DRAWING_KINDS = ("usage", "capture")


def upgrade() -> None:
    # Tolerant of tables that already exist (a database stamped back to an older revision
    # by hand, as migration tests do): create what is missing, backfill only a new table.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "block_draws" not in existing:
        _create_block_draws()
        _backfill_draws(op.get_bind())
    if "plan_allotments" not in existing:
        _create_plan_allotments()


def _create_block_draws() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "block_draws",
        sa.Column("entry_id", big_id, nullable=False),
        sa.Column("block_id", sa.String(length=40), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("credits > 0", name=op.f("ck_block_draws_credits_positive")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"],
                                name=op.f("fk_block_draws_entry_id_entries")),
        sa.ForeignKeyConstraint(["block_id"], ["blocks.id"],
                                name=op.f("fk_block_draws_block_id_blocks")),
        sa.PrimaryKeyConstraint("entry_id", "block_id", name=op.f("pk_block_draws")),
    )
    op.create_index("ix_block_draws_block_id", "block_draws", ["block_id"])
    op.create_index("ix_block_draws_created_at", "block_draws", ["created_at"])


def _create_plan_allotments() -> None:
    op.create_table(
        "plan_allotments",
        sa.Column("wallet_id", sa.String(length=64), nullable=False),
        sa.Column("agreement_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("period_end", UtcDateTime(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("block_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"],
                                name=op.f("fk_plan_allotments_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("wallet_id", "agreement_id", "period_start", "plan_code",
                                name=op.f("pk_plan_allotments")),
    )
    op.create_index("ix_plan_allotments_open", "plan_allotments", ["closed_at", "period_end"])


def downgrade() -> None:
    op.drop_index("ix_plan_allotments_open", table_name="plan_allotments")
    op.drop_table("plan_allotments")
    op.drop_index("ix_block_draws_created_at", table_name="block_draws")
    op.drop_index("ix_block_draws_block_id", table_name="block_draws")
    op.drop_table("block_draws")


def _order(block: dict[str, Any]) -> tuple[bool, Any, Any, str]:
    # The ledger's consumption order (app.domain.ledger.Block.consumption_order), frozen here
    # so this revision keeps meaning what it meant when it was written.
    return (
        block["expires_at"] is None,
        block["expires_at"] or block["created_at"],
        block["created_at"],
        block["id"],
    )


def _backfill_draws(conn: sa.Connection) -> None:
    wallet_ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM wallets ORDER BY id"))]
    for wallet_id in wallet_ids:
        blocks = [
            dict(r._mapping)
            for r in conn.execute(
                sa.text("SELECT id, kind, original, expires_at, created_at FROM blocks "
                        "WHERE wallet_id = :w ORDER BY created_at, id"),
                {"w": wallet_id},
            )
        ]
        unmatched = list(blocks)
        live: dict[str, dict[str, Any]] = {}
        balance = 0
        draws: list[dict[str, Any]] = []
        entries = conn.execute(
            sa.text("SELECT id, kind, amount, reason, created_at FROM entries "
                    "WHERE wallet_id = :w ORDER BY id"),
            {"w": wallet_id},
        )
        for e in entries:
            def draw(block_id: str, credits: int, e: Any = e, out: list[Any] = draws) -> None:
                out.append({"entry_id": e.id, "block_id": block_id, "credits": credits,
                              "kind": e.kind, "created_at": e.created_at})

            if e.kind in _CREDIT_KINDS and e.amount > 0:
                match = next(
                    (b for b in unmatched if b["kind"] == e.kind and b["original"] == e.amount
                     and b["created_at"] == e.created_at),
                    None,
                ) or next(
                    (b for b in unmatched if b["kind"] == e.kind and b["original"] == e.amount),
                    None,
                )
                if match is not None:
                    unmatched.remove(match)
                    paid = min(max(0, -balance), e.amount)
                    if paid:
                        draw(match["id"], paid)
                    live[match["id"]] = {**match, "remaining": e.amount - paid}
            elif e.kind == "expiry" and e.amount < 0 and e.reason in live:
                block = live[e.reason]
                take = min(-e.amount, block["remaining"])
                if take:
                    draw(block["id"], take)
                    block["remaining"] -= take
            elif e.kind in _DRAWING_KINDS and e.amount < 0:
                left = -e.amount
                for block in sorted(live.values(), key=_order):
                    if left == 0:
                        break
                    take = min(block["remaining"], left)
                    if take:
                        draw(block["id"], take)
                        block["remaining"] -= take
                        left -= take
            live = {k: v for k, v in live.items() if v["remaining"] > 0}
            balance += e.amount
        if draws:
            conn.execute(
                sa.text("INSERT INTO block_draws (entry_id, block_id, credits, kind, created_at) "
                        "VALUES (:entry_id, :block_id, :credits, :kind, :created_at)"),
                draws,
            )
