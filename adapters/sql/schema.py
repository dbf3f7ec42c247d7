"""The database schema (SQLAlchemy 2 typed declarative models), shared by SQLite and PostgreSQL.

The models define the tables that Alembic migrates; the hot paths in `store.py` use the Core
`Table` objects directly for speed. Constraints here back the ledger invariants in the
database itself, so a bug in code cannot write a negative block or a duplicate idempotency key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy import (
    false as sa_false,
)
from sqlalchemy import (
    true as sa_true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT identity.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always gives back aware UTC datetimes.

    SQLite has no time zones, so values are normalised to naive UTC on the way in.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger: always pass aware UTC times")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite reads
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime())


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class WalletRow(Base):
    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("owner_type IN ('user', 'org')", name="owner_type"),
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("arrears >= 0", name="arrears_not_negative"),
        CheckConstraint("overdraft_limit >= 0", name="overdraft_not_negative"),
        Index("ix_wallets_auto_recharge_deferred", "auto_recharge_deferred_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(8))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    arrears: Mapped[int] = mapped_column(BigInteger, default=0)
    overdraft_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    reference_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    next_expiry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_hold_expiry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The next plan period end not yet applied: a read past it sweeps (migration 0015).
    next_period_end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # What Kinde billing knows this owner as (from webhooks or Management API look-ups).
    billing_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    plan_code: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    # Alert settings (JSON text; NULL = catalog defaults) and auto-recharge settings.
    alert_settings: Mapped[str | None] = mapped_column(Text)
    alerts_fired: Mapped[str | None] = mapped_column(Text)
    auto_recharge_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_recharge_threshold: Mapped[int | None] = mapped_column(BigInteger)
    auto_recharge_bundle: Mapped[str | None] = mapped_column(String(64))
    auto_recharge_suspended: Mapped[str | None] = mapped_column(Text)
    # When a purchase first waited for the one in flight (None: nothing waits); see
    # app.services.recharge.
    auto_recharge_deferred_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BlockRow(Base):
    __tablename__ = "blocks"
    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining <= original", name="remaining_within_original"),
        CheckConstraint("original > 0", name="original_positive"),
        Index("ix_blocks_live", "wallet_id", "remaining"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    original: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(Text)
    # Cost basis as a decimal string: money never goes through float.
    cost_amount: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))


class EntryRow(Base):
    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('grant','purchase','allotment','usage','hold','capture','release',"
            "'expiry','adjustment','void')",
            name="kind",
        ),
        Index("ix_entries_wallet_id_id", "wallet_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    feature: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The block a credit entry created (migration 0017), so a refund finds a purchase's pack.
    block_id: Mapped[str | None] = mapped_column(String(40))


class HoldRow(Base):
    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "status IN ('open','captured','released','expired')", name="status"
        ),
        Index("ix_holds_status_expires_at", "status", "expires_at"),
        Index("ix_holds_wallet_id_status", "wallet_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))
    feature: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    captured_amount: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class IdempotencyRow(Base):
    """A key is recorded only with a write that succeeded, and kept for good."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookEventRow(Base):
    """The inbox: every verified Kinde event, stored with its raw payload before acting on it."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(
            "status IN ('received','processed','ignored','parked')", name="status"
        ),
        Index("ix_webhook_events_status", "status"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    webhook_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(12))
    payload: Mapped[str] = mapped_column(Text)
    raw_body: Mapped[str] = mapped_column(Text)
    park_reason: Mapped[str | None] = mapped_column(Text)
    wallet_id: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MeterReadingRow(Base):
    """Last `absolute` meter value seen per owner, feature and period (debit only increases).

    `customer_id` holds the wallet id the readings belong to (not Kinde's billing customer id),
    so events that name the customer and events that name only the user or org share one total.
    """

    __tablename__ = "meter_readings"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    feature_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OutboxRow(Base):
    """Everything that must reach Kinde or a person, written with the ledger change it follows."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending','sent','dead')", name="status"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_outbox_topic_status", "topic", "status"),
        # At most one pending row per topic: later changes bump its version instead of adding
        # rows, which coalesces many debits into one report and gives one sender per topic.
        Index(
            "uq_outbox_pending_topic",
            "topic",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    # Rows with the same topic (e.g. one agreement and feature) may be coalesced into one call.
    topic: Mapped[str] = mapped_column(String(200))
    wallet_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The version the row had when its last attempt failed (NULL: not backing off). New work
    # on a backing-off row keeps its next attempt; work newer than the failure is never
    # dead-lettered with it (see app.services.outbox).
    failed_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UsageReportRow(Base):
    """What Kinde has acknowledged for one wallet and app-source feature.

    The value reported is an `absolute` period total: all units used so far minus
    `base_units` (units already accounted to earlier periods or agreements), so a resend after a
    lost answer cannot double count.
    """

    __tablename__ = "usage_reports"

    wallet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    base_units: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sent_total: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BillingAgreementRow(Base):
    """Cached Kinde agreements (current period bounds), refreshed when the period ends."""

    __tablename__ = "billing_agreements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    plan_code: Mapped[str | None] = mapped_column(String(64))
    period_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    feature_codes: Mapped[str] = mapped_column(Text, default="[]")
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RechargeRow(Base):
    """One bundle purchase (auto-recharge or a sale): credits granted with it, invoiced
    through the payment gateway. A purchase stays billable for good once its credits exist."""

    __tablename__ = "recharges"
    __table_args__ = (
        CheckConstraint("status IN ('pending','invoiced','failed')", name="status"),
        Index("ix_recharges_wallet_id_day", "wallet_id", "day"),
        Index("ix_recharges_wallet_id_status", "wallet_id", "status"),
        Index("ix_recharges_wallet_id_meter", "wallet_id", "meter"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    bundle: Mapped[str] = mapped_column(String(64))
    # True for auto-recharge purchases (they count against max_per_day), False for sales
    # made through POST /top-ups {bundle}.
    auto: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # The usage-report key whose absolute count invoices this purchase: "bundle:<key>" (the
    # pack's kinde_feature_code) or "bundle-auto:<key>" (its auto_recharge_kinde_feature_code).
    meter: Mapped[str] = mapped_column(String(80))
    credits: Mapped[int] = mapped_column(BigInteger)
    price: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(10))
    day: Mapped[str] = mapped_column(String(10))  # UTC date, for the daily cap
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The block of credits it sold, and when it was refunded before Kinde invoiced it (then it
    # is no longer counted on its meter: Kinde invoices one pack fewer). Migration 0017.
    block_id: Mapped[str | None] = mapped_column(String(40))
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RefundRow(Base):
    """One refunded pack: the block's primary key makes a second refund of it impossible,
    whatever the race. `void_entry_id` is the `void` entry that took the unused credits out;
    the revenue roll-forward counts its draw as a refund (other voids are not refunds)."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("invoice IN ('reduced','credit_note_due')", name="invoice"),
        Index("ix_refunds_created_at", "created_at"),
    )

    block_id: Mapped[str] = mapped_column(ForeignKey("blocks.id"), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    purchase_entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entries.id"))
    void_entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("entries.id"), unique=True)
    recharge_id: Mapped[str | None] = mapped_column(String(40))
    credits: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    invoice: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BlockDrawRow(Base):
    """Which block an entry took credits from, and how many (usage, captures, expiries, and
    credits that paid arrears). Written in the entry's own transaction; the revenue report
    recognises each block's cost basis from these, exactly, for any past period."""

    __tablename__ = "block_draws"
    __table_args__ = (
        CheckConstraint("credits > 0", name="credits_positive"),
        Index("ix_block_draws_block_id", "block_id"),
        Index("ix_block_draws_created_at", "created_at"),
    )

    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("entries.id"), primary_key=True
    )
    block_id: Mapped[str] = mapped_column(ForeignKey("blocks.id"), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    # Copied from the entry (immutable there too) so reports need no join.
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PlanAllotmentRow(Base):
    """One plan allotment per (wallet, agreement, period start, plan): the primary key makes
    a second grant for the same period impossible, whatever order Kinde's events come in. The
    row is also the period's bookkeeping: `ended_at` once its end's expiries and cap were
    applied, `closed_at` once the next period was granted (or there is none)."""

    __tablename__ = "plan_allotments"
    __table_args__ = (Index("ix_plan_allotments_open", "closed_at", "period_end"),
                      Index("ix_plan_allotments_check", "status", "check_at"))

    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    plan_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime)
    credits: Mapped[int] = mapped_column(BigInteger)
    block_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # "granted" | "provisional" | "withdrawn" (migration 0015 explains them).
    status: Mapped[str] = mapped_column(String(16), server_default="granted")
    final: Mapped[bool] = mapped_column(Boolean, server_default=sa_false())
    check_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")


# Core Table objects for the hot paths (the declarative classes above define them).
wallets = cast(Table, WalletRow.__table__)
blocks = cast(Table, BlockRow.__table__)
entries = cast(Table, EntryRow.__table__)
holds = cast(Table, HoldRow.__table__)
idempotency_keys = cast(Table, IdempotencyRow.__table__)
webhook_events = cast(Table, WebhookEventRow.__table__)
meter_readings = cast(Table, MeterReadingRow.__table__)
outbox = cast(Table, OutboxRow.__table__)
usage_reports = cast(Table, UsageReportRow.__table__)
billing_agreements = cast(Table, BillingAgreementRow.__table__)
recharges = cast(Table, RechargeRow.__table__)
block_draws = cast(Table, BlockDrawRow.__table__)
plan_allotments = cast(Table, PlanAllotmentRow.__table__)
refunds = cast(Table, RefundRow.__table__)
