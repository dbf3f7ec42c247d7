"""Ports: every Protocol the services need from storage and the outside world, in one module.

Services depend only on these; `adapters/` implements them (the SQL store) and tests implement
them with fakes (tests/fakes/memory_store.py). A unit of work is one database transaction:
everything a use case changes commits together or not at all, and it offers every repository
as a typed property, so the type checker sees each use of `uow.<repository>`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Protocol,
    Self,
    TypeVar,
    runtime_checkable,
)

from app.domain.agreements import Period
from app.domain.alerts import AlertSettings
from app.domain.audit import WalletAudit
from app.domain.budgets import Caps, MemberUsage
from app.domain.ledger import EntryFields, Hold, Wallet
from app.domain.recharge import AutoRecharge

if TYPE_CHECKING:
    from app.domain.principal import Principal


class DuplicateKey(Exception):
    """A unique key was taken by a concurrent transaction (raised by stores, not services)."""


class CommitOutcomeUnknown(Exception):
    """COMMIT was sent but its answer was lost (the connection dropped): the transaction may
    have been applied or not. Raised by a unit of work's `commit` (stores, not services).

    Nothing may run the work again on its own (it may be applied already); the caller is told
    so, and retries with the same idempotency key, which returns the first result if the
    commit did land and applies the write once if it did not.
    """


# -- wallets and idempotency --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RecordedEntry(EntryFields):
    """An entry as stored (with its id), for reading the ledger."""

    id: int
    wallet_id: str


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class WalletProfile:
    """What we know of a wallet's owner in Kinde billing (and where to notify them)."""

    wallet_id: str
    billing_customer_id: str | None
    agreement_id: str | None
    plan_code: str | None
    email: str | None


class WalletRepository(Protocol):
    def lock(self, wallet_id: str) -> Wallet | None:
        """Load a wallet with its live blocks and hold it exclusively until the unit ends."""

    def lock_or_create(self, wallet_id: str, now: datetime) -> Wallet:
        """Like lock(), creating an empty wallet first when there is none."""

    def read(self, wallet_id: str) -> Wallet | None:
        """Load a wallet with its live blocks, without locking (for reads)."""

    def save(self, wallet: Wallet, now: datetime) -> list[int]:
        """Persist the wallet's pending changes and clear them (the wallet then reads as just
        loaded, `reference_at_load` included); returns the ids of its new entries in order."""

    def get_hold(self, hold_id: str) -> Hold | None: ...

    def open_holds(self, wallet_id: str) -> list[Hold]:
        """The wallet's open holds, soonest expiry first."""

    def entries(
        self, wallet_id: str, limit: int, before_id: int | None = None
    ) -> list[RecordedEntry]:
        """Newest first; `before_id` is the keyset cursor (entries with a smaller id)."""

    def wallets_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        """Wallets with an expiry or hold expiry at or before `now`, longest overdue first."""

    def usage_since(self, wallet_id: str, since: datetime) -> int:
        """Credits used (usage and captures) since a moment, for run-rate estimates."""

    def profile(self, wallet_id: str) -> WalletProfile | None: ...

    def update_profile(self, wallet_id: str, **fields: str | None) -> None: ...

    def find_by_customer(self, billing_customer_id: str) -> str | None: ...

    def save_alert_settings(self, wallet_id: str, settings: AlertSettings | None) -> None: ...

    def save_auto_recharge(self, wallet_id: str, settings: AutoRecharge) -> None: ...

    def audit(self, after: str | None, limit: int) -> list[WalletAudit]:
        """Per-wallet totals for the invariant check, a page of wallets ordered by id."""


class IdempotencyRepository(Protocol):
    def get(self, scope: str, key: str) -> StoredResponse | None: ...

    def claim(
        self, scope: str, key: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        """Reserve the key for this unit of work, waiting while a concurrent one holds it;
        the stored answer if the key was already used (then nothing is reserved). A reserved
        key must be `put` before commit; a rollback frees it."""

    def put(
        self,
        scope: str,
        key: str,
        request_hash: str,
        status_code: int,
        body: dict[str, Any],
        now: datetime,
    ) -> None:
        """Store the answer for a key; `DuplicateKey` if another unit of work stored one."""


# -- outbox and Kinde usage reporting -----------------------------------------------------------


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    kind: str
    topic: str
    wallet_id: str | None
    payload: dict[str, Any]
    version: int
    attempts: int
    claimed_until: datetime | None
    created_at: datetime
    status: str = "pending"
    last_error: str | None = None
    # The version at the last failed or rate-limited attempt; None when not backing off.
    failed_version: int | None = None

    @property
    def newer_than_failure(self) -> bool:
        """Work arrived after the last failed attempt, so this version has not failed yet."""
        return self.failed_version is not None and self.version != self.failed_version


@dataclass(frozen=True)
class AgreementInfo:
    id: str
    customer_id: str
    plan_code: str | None
    period_start: datetime | None
    period_end: datetime | None
    feature_codes: tuple[str, ...]
    fetched_at: datetime


@dataclass(frozen=True)
class UsageReportState:
    """What Kinde acknowledged for a wallet's feature: see adapters.sql.schema.UsageReportRow."""

    wallet_id: str
    feature: str
    agreement_id: str | None
    period_start: datetime | None
    base_units: int
    last_sent_total: int
    last_sent_at: datetime | None


class NeedsConfirmation(Exception):
    """Delivered, but an earlier attempt whose outcome is unknown may still land after it:
    deliver the same (absolute) state once more after `after_seconds`."""

    def __init__(self, after_seconds: float) -> None:
        super().__init__(f"confirm in {after_seconds}s")
        self.after_seconds = after_seconds


class DeliveryError(Exception):
    """A delivery that did not go through. `retryable` errors are tried again with backoff;
    `retry_after` (seconds) overrides the backoff, e.g. from RateLimit-Reset on a 429."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class OutboxRepository(Protocol):
    def enqueue(
        self, kind: str, topic: str, wallet_id: str | None, payload: dict[str, Any],
        now: datetime,
    ) -> None: ...

    def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[OutboxMessage]: ...

    def renew(self, message: OutboxMessage, until: datetime) -> OutboxMessage | None: ...

    def mark_sent(self, message: OutboxMessage, now: datetime) -> bool: ...

    def retry_later(self, message: OutboxMessage, when: datetime, error: str) -> None: ...

    def schedule_confirmation(self, message: OutboxMessage, when: datetime) -> None: ...

    def release(self, message: OutboxMessage, when: datetime, error: str) -> None: ...

    def dead(self, message: OutboxMessage, error: str, now: datetime) -> bool: ...

    def died_since(self, topic: str, since: datetime) -> bool: ...

    def counts(self) -> dict[str, int]: ...

    def oldest_pending_age(self, now: datetime) -> float: ...

    def list(self, status: str | None, limit: int) -> list[OutboxMessage]: ...

    def requeue_dead(self, ids: Iterable[int] | None, now: datetime) -> int: ...


class BillingRepository(Protocol):
    """The agreement cache (current billing periods) and the usage report state."""

    def agreement(self, agreement_id: str) -> AgreementInfo | None: ...

    def save_agreement(self, info: AgreementInfo) -> None: ...

    def report_state(self, wallet_id: str, feature: str) -> UsageReportState: ...

    def save_report_state(self, state: UsageReportState) -> None: ...

    def units_used(self, wallet_id: str, feature: str) -> int: ...


class RechargeRepository(Protocol):
    """Bundle purchases: auto-recharges and sales, and whether Kinde invoiced them."""

    def add(self, recharge_id: str, wallet_id: str, bundle: str, credits: int, price: str,
            currency: str, day: str, now: datetime, *, auto: bool = True,
            meter: str | None = None, block_id: str | None = None) -> None:
        """Record a purchase; `meter` is the usage-report key that invoices it (default: the
        pack's sale code, "bundle:<key>"); `block_id` the block of credits it sold."""

    def mark_refunded(self, recharge_id: str, now: datetime) -> None:
        """Refunded before Kinde invoiced it: no longer counted, pending or in flight."""

    def in_flight(self, wallet_id: str) -> bool:
        """An auto-recharge whose invoice Kinde has not confirmed yet (nor given up on)."""

    def count_on_day(self, wallet_id: str, day: str) -> int:
        """Auto-recharges on one UTC day (sales through the API do not count)."""

    def billable(self, wallet_id: str, meter: str) -> tuple[int, list[str]]:
        """How many purchases one meter invoices (refunded ones taken off the count are not
        counted), and the ids not yet invoiced."""

    def mark_invoiced(self, ids: Iterable[str], now: datetime) -> int: ...

    def mark_failed(self, wallet_id: str, meter: str, reason: str, now: datetime) -> list[str]:
        """The meter's pending purchases have failed; returns their ids."""

    def any_auto(self, ids: Iterable[str]) -> bool: ...

    def latest_auto(self, wallet_id: str) -> dict[str, object] | None:
        """The wallet's most recent auto-recharge purchase, for the wallet view."""

    def defer(self, wallet_id: str, now: datetime) -> None:
        """A purchase was due but waited for the one in flight: remember it (the first wait's
        time is kept) until `clear_deferred`."""

    def clear_deferred(self, wallet_id: str) -> None:
        """Nothing waits any more (bought, or no longer due)."""

    def deferred_ready(self, limit: int) -> list[str]:
        """Wallets with a purchase that waited and none in flight now, longest wait first."""


# -- webhook inbox and meter readings -----------------------------------------------------------

InboxStatus = Literal["received", "processed", "ignored", "parked"]


@dataclass(frozen=True)
class InboxEvent:
    """One stored webhook delivery. The rows with a `wallet_id` are that wallet's history."""

    event_id: str
    webhook_id: str | None
    type: str
    status: str
    payload: dict[str, Any]
    park_reason: str | None  # why parked; for processed rows, a note (e.g. "app-source")
    wallet_id: str | None
    customer_id: str | None
    attempts: int
    received_at: datetime
    processed_at: datetime | None


class InboxRepository(Protocol):
    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        """One event; `lock` holds its row until the unit ends (PostgreSQL FOR UPDATE), so two
        workers retrying one parked event apply it once."""

    def webhook_id_taken(self, webhook_id: str) -> bool: ...

    def add(
        self,
        event_id: str,
        webhook_id: str | None,
        event_type: str,
        payload: str,
        raw_body: str,
        now: datetime,
    ) -> None:
        """Insert with status `received`. A concurrent insert of the same event raises
        `DuplicateKey` (the primary key decides who applies it)."""

    def finish(
        self,
        event_id: str,
        status: InboxStatus,
        *,
        reason: str | None,
        wallet_id: str | None,
        customer_id: str | None,
        now: datetime,
    ) -> None:
        """Set the outcome of one attempt (counting it)."""

    def search(
        self,
        *,
        status: str | None = None,
        wallet_id: str | None = None,
        event_type: str | None = None,
        customer_id: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> list[InboxEvent]:
        """Oldest first by (received_at, event_id); `after` is the keyset cursor."""

    def count(self, status: str | None = None) -> int: ...


class MeterReadingRepository(Protocol):
    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None: ...

    def period_keys(self, customer_key: str, feature_code: str) -> list[str]:
        """The periods with a stored total for this wallet and feature, latest first."""

    def reading(
        self, customer_key: str, feature_code: str, period_key: str
    ) -> tuple[int, datetime] | None:
        """The stored total and when it was last raised."""

    def record(
        self, customer_key: str, feature_code: str, period_key: str, value: int, now: datetime
    ) -> None:
        """Store `value` as the period's running total (callers only ever raise it)."""


# -- plan periods -------------------------------------------------------------------------------


class PeriodStatus(StrEnum):
    """What is known of a granted plan period (a `plan_allotments` row's `status`)."""

    GRANTED = "granted"
    """Kinde, an agreement event or the local calendar stated this period."""
    PROVISIONAL = "provisional"
    """Granted on the agreement's calendar when the last period ended and Kinde had not yet
    reported the renewal: confirmed, moved or withdrawn once Kinde answers."""
    WITHDRAWN = "withdrawn"
    """Kinde said the agreement was not renewed: the unused credits were taken back."""


@dataclass(frozen=True)
class AllotmentRecord:
    """One granted plan period (a `plan_allotments` row)."""

    wallet_id: str
    agreement_id: str
    period_start: datetime
    plan_code: str
    period_end: datetime
    credits: int
    block_id: str | None = None
    ended_at: datetime | None = None
    closed_at: datetime | None = None
    status: str = PeriodStatus.GRANTED
    final: bool = False
    check_at: datetime | None = None
    attempts: int = 0
    created_at: datetime | None = None

    @property
    def period(self) -> Period:
        return Period(self.period_start, self.period_end)

    @property
    def provisional(self) -> bool:
        return self.status == PeriodStatus.PROVISIONAL


class PlanRepository(Protocol):
    """The `plan_allotments` rows: each granted period, once, and its bookkeeping."""

    def claim(self, record: AllotmentRecord, now: datetime) -> bool:
        """Insert the period's row unless it exists; True when this call inserted it."""

    def set_block(self, record: AllotmentRecord, block_id: str) -> None: ...

    def open_periods(self, wallet_id: str) -> list[AllotmentRecord]: ...

    def periods(self, wallet_id: str) -> list[AllotmentRecord]: ...

    def mark_ended(self, record: AllotmentRecord, now: datetime) -> None:
        """This period's end (expiries and cap) was applied."""

    def close(self, record: AllotmentRecord, now: datetime) -> None:
        """This period is done: its end applied and what follows it handled."""

    def update(self, record: AllotmentRecord, *, period_end: datetime | None = None,
               status: str | None = None, check_at: datetime | None = None,
               attempts: int | None = None) -> None:
        """Move a period's end, change its status or its next Kinde look-up."""

    def mark_final(self, wallet_id: str, agreement_id: str, final: bool = True) -> None:
        """The agreement was cancelled (or, `final=False`, created again): its open periods
        end and nothing follows them."""

    def due_wallets(self, now: datetime, limit: int) -> list[str]:
        """Wallets with a period whose end passed and was not applied yet."""

    def provisional_due(self, now: datetime, limit: int) -> list[AllotmentRecord]:
        """Provisional periods whose Kinde look-up is due, the longest waiting first."""

    def wallets_without_allotment(self, plan_codes: list[str], limit: int,
                                  skip: Collection[str] = ()) -> list[str]: ...


# -- team budgets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendLine:
    feature: str  # "" when not tied to a catalog feature
    credits: int
    units: int


@dataclass
class MemberRecord:
    """What the store knows of one member of a wallet, for the members report."""

    member: str
    caps: Caps = field(default_factory=Caps)
    today: list[SpendLine] = field(default_factory=list)
    month: list[SpendLine] = field(default_factory=list)
    held: int = 0


class BudgetRepository(Protocol):
    def caps(self, wallet_id: str, member: str) -> Caps: ...

    def set_caps(self, wallet_id: str, member: str, caps: Caps, now: datetime) -> None: ...

    def usage(self, wallet_id: str, member: str, now: datetime) -> MemberUsage:
        """Spent in `now`'s UTC day and month, and held by open holds not expired at `now`."""

    def add_spend(self, wallet_id: str, member: str, feature: str, credits: int, units: int,
                  now: datetime) -> None:
        """Add to the member's day and month rows (one per feature)."""

    def add_hold(self, hold_id: str, wallet_id: str, member: str) -> None: ...

    def hold_member(self, hold_id: str) -> str | None: ...

    def members(self, wallet_id: str, now: datetime) -> list[MemberRecord]:
        """Every member with caps, spend this month, or an open hold; ordered by member."""


# -- refunds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseRecord:
    """A credit entry a refund names, with the Kinde purchase that invoices it (if any)."""

    entry_id: int
    wallet_id: str
    kind: str
    block_id: str | None
    created_at: datetime
    recharge_id: str | None = None
    bundle: str | None = None
    meter: str | None = None
    auto: bool = False


@dataclass(frozen=True)
class RefundRecord:
    """One refunded pack (at most one per block): what went back and on which invoice."""

    block_id: str
    wallet_id: str
    purchase_entry_id: int
    void_entry_id: int
    recharge_id: str | None
    credits: int
    amount: Decimal
    currency: str
    invoice: str
    reason: str
    created_at: datetime


class RefundRepository(Protocol):
    def purchase(self, wallet_id: str, entry_id: int) -> PurchaseRecord | None:
        """The credit entry `entry_id` of the wallet; None when there is none."""

    def refunded(self, block_id: str) -> bool: ...

    def add(self, record: RefundRecord) -> None:
        """Record a refund; DuplicateKey when the pack was refunded already."""

    def between(self, since: datetime, until: datetime) -> list[RefundRecord]:
        """Refunds made in [since, until), oldest first."""


# -- reports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostedBlock:
    """A block with a cost basis, created before the period's end."""

    id: str
    currency: str
    cost: Decimal
    original: int
    created_at: datetime
    consumed_before: int  # credits drawn before the period's start
    # Draws inside the period in draw order: (credits, entry kind).
    draws: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class CreditFlows:
    """Credits without a cost basis: a roll-forward in credits."""

    opening: int = 0
    added: int = 0
    used: int = 0
    expired: int = 0

    @property
    def closing(self) -> int:
        return self.opening + self.added - self.used - self.expired


@dataclass(frozen=True)
class RevenueInputs:
    blocks: list[CostedBlock] = field(default_factory=list)
    uncosted: CreditFlows = CreditFlows()


class RevenueRepository(Protocol):
    def revenue_inputs(self, since: datetime, until: datetime) -> RevenueInputs:
        """Everything the report needs, read in ONE snapshot."""


class DashboardRepository(Protocol):
    def daily_usage(self, wallet_id: str, since: datetime) -> list[tuple[date, str | None, int]]:
        """(UTC day, feature, credits used) for usage and captured holds since `since`."""


# -- the unit of work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSession:
    """The one session a dashboard link opened (app.services.link_sessions)."""

    link_id: str
    wallet_id: str
    opened_at: datetime
    expires_at: datetime
    ended_at: datetime | None


class LinkSessionRepository(Protocol):
    def open(self, session: LinkSession) -> bool:
        """Record the link's session; False when the link already opened one (nothing
        written). Atomic across instances: the link id is unique."""

    def get(self, link_id: str) -> LinkSession | None: ...

    def end(self, link_id: str, now: datetime) -> None:
        """Sign out: the session ends now (a session already ended keeps its end)."""


class PaymentStandingRepository(Protocol):
    def overdue(self, wallet_id: str) -> bool:
        """Whether Kinde's latest payment event for the wallet's customer was a failure."""

    def record(self, wallet_id: str, overdue: bool, event_at: datetime, now: datetime) -> bool:
        """Keep the standing an event says, unless a newer event already set it; True when
        it was kept."""


class HoldPlacerRepository(Protocol):
    def note(self, hold_id: str, placed_by: str) -> None: ...

    def placed_by(self, hold_id: str) -> str | None:
        """The user whose token placed the hold (None: a machine placed it)."""


class Savepoint(Protocol):
    """A nested transaction inside a unit of work: undo what was done since, or keep it."""

    def rollback(self) -> None: ...

    def release(self) -> None: ...


class UnitOfWork(Protocol):
    """One transaction offering every repository, each bound to that transaction."""

    # True for a write transaction; a read one is never committed and must not write.
    write: bool

    # Read-only properties, so that implementations may narrow the repository types.
    @property
    def wallets(self) -> WalletRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def billing(self) -> BillingRepository: ...

    @property
    def recharges(self) -> RechargeRepository: ...

    @property
    def inbox(self) -> InboxRepository: ...

    @property
    def meters(self) -> MeterReadingRepository: ...

    @property
    def plans(self) -> PlanRepository: ...

    @property
    def budgets(self) -> BudgetRepository: ...

    @property
    def revenue(self) -> RevenueRepository: ...

    @property
    def refunds(self) -> RefundRepository: ...

    @property
    def dashboard(self) -> DashboardRepository: ...

    @property
    def link_sessions(self) -> LinkSessionRepository: ...

    @property
    def payment_standing(self) -> PaymentStandingRepository: ...

    @property
    def hold_placers(self) -> HoldPlacerRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def savepoint(self) -> Savepoint:
        """Begin a savepoint: work after it can be undone alone, the rest of the unit kept."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


# The webhook service's name for the one unit of work (the same type, not a narrower one).
WebhookUnitOfWork = UnitOfWork

# write=True takes the database's write lock at the start (SQLite BEGIN IMMEDIATE), so two
# writers never both read a balance and then race to update it.
UnitOfWorkFactory = Callable[[bool], UnitOfWork]
Clock = Callable[[], datetime]
T = TypeVar("T")


class TransactionRunner(Protocol):
    """Runs a piece of write work in a write transaction and commits it (app.services.group_commit).

    `work(uow)` must not commit or roll back. Its result is returned once the commit that made
    it durable succeeded; if it raises, nothing it wrote stays and the exception propagates.
    `order` (the wallet's scope) orders pieces that share a transaction.
    """

    def run(self, work: Callable[[UnitOfWork], T], order: str = "") -> T: ...

    def run_many(
        self, works: list[tuple[Callable[[UnitOfWork], T], str]]
    ) -> list[T | Exception]:
        """Like `run` for each piece, submitted together; each one's result or exception."""
        ...


# ==============================================================================================
# Ports to the outside: Kinde Management API errors and notification channels
# ==============================================================================================


# -- Kinde Management API errors ----------------------------------------------------------------


class KindeApiError(Exception):
    """Any failure of a call to Kinde. `status` is None when no HTTP answer arrived."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"Kinde API error (status={status}, code={code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class KindeUnavailable(KindeApiError):
    """Transient: connection error, timeout or 5xx. Retry later with backoff.

    `outcome_unknown` is True when the request may have reached Kinde and been applied (read
    timeout, connection dropped after sending, most 5xx). A caller resending a non-idempotent
    request (a `delta` meter usage) must take that into account; an `absolute` total is safe.
    """

    def __init__(
        self, status: int | None, code: str, message: str, *, outcome_unknown: bool
    ) -> None:
        super().__init__(status, code, message)
        self.outcome_unknown = outcome_unknown


class KindeRateLimited(KindeApiError):
    """429. Retry no sooner than `retry_after_seconds` (from the `RateLimit-Reset` header)."""

    def __init__(self, code: str, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(429, code, message)
        self.retry_after_seconds = retry_after_seconds


class KindeAuthError(KindeApiError):
    """Bad client credentials, or the M2M app lacks a scope. Needs a human; retrying won't help."""


class KindeNotFound(KindeApiError):
    """404: the resource (or the route) does not exist."""


class KindeRequestRejected(KindeApiError):
    """Any other 4xx: Kinde refused this request as sent; resending it unchanged won't help."""


# -- notification channels ----------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One delivery attempt failed.

    `retryable` says whether the same message may succeed later (server busy, network down) or
    never will as things stand (rejected, misconfigured). `retry_after` is the receiver's own
    wish in seconds (`Retry-After`), when it stated one.
    """

    def __init__(self, retryable: bool, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """A message for a person or system. `id` must stay the same across delivery attempts."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]
    recipient_email: str | None
    subject: str
    text: str

    def __post_init__(self) -> None:
        # A naive time would be signed and dated as if it were UTC by some libraries and as
        # local time by others; refuse it rather than send a wrong date.
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("Notification.timestamp must be timezone-aware")
        if not self.id:
            raise ValueError("Notification.id must not be empty")


@runtime_checkable
class NotificationChannel(Protocol):
    name: str

    def send(self, notification: Notification) -> None: ...


# ==============================================================================================
# Token verification: the verifiers' shapes and the errors the HTTP layer answers by
# ==============================================================================================


class TokenError(Exception):
    """A token that we refuse. ``code`` is stable and machine-readable; ``message`` is for
    humans and never contains the token."""

    default_code: ClassVar[str] = "invalid_token"

    def __init__(self, message: str, code: str | None = None) -> None:
        # The HTTP layer copies the message into a WWW-Authenticate header, which servers
        # encode as Latin-1 and which must not hold control characters: keep it printable
        # ASCII whatever a future caller passes in (messages are fixed text today).
        message = "".join(ch if " " <= ch <= "~" else "?" for ch in message)
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class MalformedToken(TokenError):
    """Not a JWT at all (webhooks answer 400)."""

    default_code = "malformed_token"


class KeySourceUnavailable(Exception):
    """The signing keys could not be fetched (network, HTTP status, bad JWKS document).

    Not a `TokenError`: the token may be fine; answer 503 so the caller retries.
    """


class AccessVerifier(Protocol):
    """Turns a bearer token into the caller, or raises `TokenError`/`KeySourceUnavailable`."""

    def verify(self, token: str) -> Principal: ...


class WebhookEventVerifier(Protocol):
    """Turns a webhook body into its verified claims, or raises `TokenError` (a
    `MalformedToken` when it is not a JWT at all) or `KeySourceUnavailable`."""

    def verify(self, body: bytes | str) -> Mapping[str, Any]: ...


# ==============================================================================================
# Operator questions about the whole store (metrics, CLI)
# ==============================================================================================


@dataclass(frozen=True)
class StoreTotals:
    """Whole-store figures an operator watches: wallets, credits owed both ways, stuck events."""

    wallets: int
    balance: int
    arrears: int
    parked_webhooks: int


class OperationsReader(Protocol):
    """Read-only questions about the whole store (no wallet lock, no transaction to keep)."""

    def totals(self) -> StoreTotals: ...

    def parked_webhook_count(self) -> int: ...

    def database(self) -> str:
        """The database's kind ("sqlite", "postgresql")."""
        ...

    def answers(self) -> bool:
        """Whether the database answers a trivial query now (for readiness checks)."""
        ...

    def billing_customer_ids(self, limit: int) -> tuple[str, ...]:
        """Up to `limit` Kinde billing customer ids of known wallets."""
        ...


# ==============================================================================================
# Other outside services: Kinde billing and setup calls, agreements, signing
# ==============================================================================================


class KindeBilling(Protocol):
    """What usage reporting needs from Kinde (adapters.kinde_api.KindeManagementClient)."""

    def record_meter_usage(
        self,
        customer_agreement_id: str,
        billing_feature_code: str,
        meter_value: int,
        *,
        meter_type_code: Any = "absolute",
        meter_usage_timestamp: datetime | None = None,
    ) -> None: ...

    def list_agreements(self, customer_id: str) -> list[Any]: ...

    def get_user(self, user_id: str) -> Any: ...

    def get_org_billing(self, org_code: str) -> Any: ...


class Signer(Protocol):
    """Signs small JSON payloads per purpose (adapters.dashboard_signing)."""

    def sign(self, purpose: str, payload: dict[str, Any]) -> str: ...

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload, or InvalidSignature."""


@dataclass(frozen=True)
class Agreement:
    """One of a billing customer's agreements as Kinde's agreements API lists it."""

    id: str
    plan_code: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    expires_on: datetime | None
    feature_codes: tuple[str, ...]
    billing_group_id: str | None = None


class AgreementSource(Protocol):
    """What the period service needs from Kinde (adapters.kinde_api.KindeManagementClient)."""

    def list_agreements(self, customer_id: str) -> list[Agreement]: ...


class KindeSetupApi(Protocol):
    def list_webhooks(self) -> list[Any]: ...

    def create_webhook(
        self, endpoint: str, event_types: list[str], name: str, description: str | None = None
    ) -> str: ...

    def update_webhook(
        self, webhook_id: str, *, event_types: list[str], name: str,
        description: str | None = None,
    ) -> None: ...

    def list_event_types(self) -> list[Any]: ...

    def get_entitlements(self, customer_id: str) -> Any: ...

    def list_agreements(self, customer_id: str) -> list[Any]: ...
