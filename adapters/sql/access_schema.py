"""Tables for who may spend (migration 0014): dashboard link sessions, each wallet's payment
standing in Kinde, and who placed each hold.

Kept apart from `schema.py` (like budget_schema.py) so the feature adds tables without touching
the core ledger's models; they share its `Base`, so Alembic and the tests see one metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Boolean, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from adapters.sql.schema import Base, UtcDateTime


class LinkSessionRow(Base):
    """The one session a dashboard link opened. The primary key is the link's signed id, so a
    second open of the same link cannot insert a second row, on any number of instances."""

    __tablename__ = "dashboard_link_sessions"

    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class PaymentStandingRow(Base):
    """Whether Kinde last reported a failed payment for the wallet's customer, and the time of
    the event that said so (an older event never overrides a newer one)."""

    __tablename__ = "payment_standing"

    wallet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    overdue: Mapped[bool] = mapped_column(Boolean)
    event_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class HoldPlacerRow(Base):
    """The user whose token placed a hold (holds placed by machines have no row)."""

    __tablename__ = "hold_placers"

    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    placed_by: Mapped[str] = mapped_column(String(64))


link_sessions = cast(Table, LinkSessionRow.__table__)
payment_standing = cast(Table, PaymentStandingRow.__table__)
hold_placers = cast(Table, HoldPlacerRow.__table__)
