"""Tables for team budgets (migration 0011): caps per org member, spend per UTC window and
feature, and which member each hold belongs to.

Kept apart from `schema.py` so the feature adds tables without touching the core ledger's
models; they share its `Base`, so Alembic and the tests see one metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from adapters.sql.schema import Base, UtcDateTime


class MemberBudgetRow(Base):
    """An admin's caps for one member of an org wallet (NULL = no cap)."""

    __tablename__ = "member_budgets"
    __table_args__ = (
        CheckConstraint("credits_per_day IS NULL OR credits_per_day >= 0", name="day_cap"),
        CheckConstraint("credits_per_month IS NULL OR credits_per_month >= 0",
                        name="month_cap"),
    )

    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    credits_per_day: Mapped[int | None] = mapped_column(BigInteger)
    credits_per_month: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MemberSpendRow(Base):
    """Credits a member spent per UTC window and feature: `period` is a day ("2026-11-24") or
    a month ("2026-11"). Each debit adds to one day row and one month row, so reading a
    member's window is a handful of rows whatever the history (one per feature used)."""

    __tablename__ = "member_spend"
    __table_args__ = (CheckConstraint("credits >= 0", name="credits_not_negative"),)

    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    # "" for spend not tied to a catalog feature (a hold of plain credits).
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MemberHoldRow(Base):
    """The member a hold was placed for. Its reservation is the hold's amount while the hold is
    open and unexpired, read through the holds table, so every way a hold ends (capture,
    release, expiry by the sweep) gives the budget back without a second bookkeeping path."""

    __tablename__ = "member_holds"
    __table_args__ = (Index("ix_member_holds_wallet_id_member_id", "wallet_id", "member_id"),)

    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    member_id: Mapped[str] = mapped_column(String(64))


member_budgets = cast(Table, MemberBudgetRow.__table__)
member_spend = cast(Table, MemberSpendRow.__table__)
member_holds = cast(Table, MemberHoldRow.__table__)
