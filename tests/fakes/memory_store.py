"""An in-memory implementation of the storage ports, for fast unit tests of the services.

Transactions are copy-on-enter, swap-on-commit, under one lock for writers, which gives the
same all-or-nothing and serialised-writer behaviour the SQL store guarantees. The repositories
follow the SQL store's contract where services can tell (what `save` writes and resets, the
orders of lists, what a claimed idempotency key does); tests/unit/test_store_parity.py runs the
same scenarios on both. The outbox, plan periods and the revenue report are SQL-only: their
properties raise, so a unit test that reaches them fails loudly instead of passing on a stub.
mypy checks this module against the ports (see the assignments at the end).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self

from app.domain.alerts import AlertSettings
from app.domain.audit import WalletAudit
from app.domain.budgets import Caps, MemberUsage, day_key, month_key
from app.domain.ledger import Block, Hold, Wallet, owner_type_of
from app.domain.recharge import AutoRecharge
from app.services.ports import (
    AgreementInfo,
    BillingRepository,
    DuplicateKey,
    HoldPlacerRepository,
    InboxEvent,
    InboxStatus,
    LinkSession,
    LinkSessionRepository,
    MemberRecord,
    OutboxRepository,
    PaymentStandingRepository,
    PlanRepository,
    PurchaseRecord,
    RecordedEntry,
    RefundRecord,
    RevenueRepository,
    SpendLine,
    StoredResponse,
    UnitOfWork,
    UnitOfWorkFactory,
    UsageReportState,
    WalletProfile,
)


@dataclass
class _State:
    wallets: dict[str, Wallet] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    entries: list[RecordedEntry] = field(default_factory=list)
    holds: dict[str, Hold] = field(default_factory=dict)
    profiles: dict[str, WalletProfile] = field(default_factory=dict)
    keys: dict[tuple[str, str], StoredResponse] = field(default_factory=dict)
    # Block draws: (entry id, block id, credits, entry kind, created_at).
    draws: list[tuple[int, str, int, str, datetime]] = field(default_factory=list)
    next_entry_id: int = 1
    caps: dict[tuple[str, str], Caps] = field(default_factory=dict)
    # (wallet, member, period, feature) -> [credits, units]
    spend: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)
    member_holds: dict[str, tuple[str, str]] = field(default_factory=dict)
    purchases: dict[str, _Purchase] = field(default_factory=dict)
    # wallet id -> when a purchase first waited for the one in flight (recharges.defer).
    deferred_recharges: dict[str, datetime] = field(default_factory=dict)
    # The webhook inbox (with each event's raw body), meter readings and when each was last
    # raised, and the billing state (agreement cache, usage report state).
    events: dict[str, InboxEvent] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    readings: dict[tuple[str, str, str], int] = field(default_factory=dict)
    raised: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    agreements: dict[str, AgreementInfo] = field(default_factory=dict)
    report_states: dict[tuple[str, str], UsageReportState] = field(default_factory=dict)
    # Who may spend: link sessions, payment standing (overdue, event time), hold placers.
    link_sessions: dict[str, LinkSession] = field(default_factory=dict)
    standing: dict[str, tuple[bool, datetime]] = field(default_factory=dict)
    hold_placers: dict[str, str] = field(default_factory=dict)
    # Refunded packs by block id (the `refunds` table's primary key).
    refunds: dict[str, RefundRecord] = field(default_factory=dict)


@dataclass
class _Purchase:
    """A `recharges` row."""

    id: str
    wallet_id: str
    bundle: str
    auto: bool
    credits: int
    price: str
    currency: str
    day: str
    meter: str
    created_at: datetime
    status: str = "pending"
    failure_reason: str | None = None
    settled_at: datetime | None = None
    block_id: str | None = None
    refunded_at: datetime | None = None


def _stored_row(wallet: Wallet, stored: Wallet | None) -> Wallet:
    """The wallet as its `wallets` row: what SQL `save` writes (balances, expiry dates, fired
    alerts) taken from `wallet`; settings (alerts, auto-recharge, overdraft) kept from the
    row, since SQL changes those only through their own methods. No pending changes."""
    base = stored or wallet
    return Wallet(
        id=wallet.id, owner_type=base.owner_type, balance=wallet.balance, held=wallet.held,
        arrears=wallet.arrears, overdraft_limit=base.overdraft_limit,
        reference_balance=wallet.reference_balance, next_expiry_at=wallet.next_expiry_at,
        next_hold_expiry_at=wallet.next_hold_expiry_at,
        next_period_end_at=wallet.next_period_end_at, alert_settings=base.alert_settings,
        alerts_fired=wallet.alerts_fired, auto_recharge=base.auto_recharge,
    )


_PROFILE_FIELDS = {"billing_customer_id", "agreement_id", "plan_code", "email"}


class MemoryWallets:
    def __init__(self, state: _State) -> None:
        self.s = state

    def _load(self, wallet_id: str) -> Wallet | None:
        stored = self.s.wallets.get(wallet_id)
        if stored is None:
            return None
        wallet = _stored_row(stored, stored)
        wallet.blocks = [
            copy.copy(b)
            for b in self.s.blocks.values()
            if b.wallet_id == wallet_id and b.remaining > 0
        ]
        return wallet

    lock = _load
    read = _load

    def lock_or_create(self, wallet_id: str, now: datetime) -> Wallet:
        if wallet_id not in self.s.wallets:
            self.s.wallets[wallet_id] = Wallet(id=wallet_id, owner_type=owner_type_of(wallet_id))
            self.s.profiles[wallet_id] = WalletProfile(wallet_id, None, None, None, None)
        wallet = self._load(wallet_id)
        assert wallet is not None
        return wallet

    def save(self, wallet: Wallet, now: datetime) -> list[int]:
        for b in wallet.new_blocks:
            self.s.blocks[b.id] = copy.copy(b)
        for b in wallet.touched_blocks.values():
            self.s.blocks[b.id] = copy.copy(b)
        for h in [*wallet.new_holds, *wallet.touched_holds.values()]:
            self.s.holds[h.id] = copy.copy(h)
        ids = []
        for e in wallet.new_entries:
            entry_id = self.s.next_entry_id
            self.s.next_entry_id += 1
            self.s.entries.append(
                RecordedEntry(
                    id=entry_id, wallet_id=wallet.id, kind=e.kind, amount=e.amount,
                    balance_after=e.balance_after, reason=e.reason, description=e.description,
                    created_at=e.created_at, feature=e.feature, quantity=e.quantity,
                    hold_id=e.hold_id, occurred_at=e.occurred_at, block_id=e.block_id,
                )
            )
            ids.append(entry_id)
            self.s.draws.extend(
                (entry_id, block_id, credits, e.kind, e.created_at) for block_id, credits in e.draws
            )
        self.s.wallets[wallet.id] = _stored_row(wallet, self.s.wallets.get(wallet.id))
        wallet.new_entries.clear()
        wallet.new_blocks.clear()
        wallet.new_holds.clear()
        wallet.touched_blocks.clear()
        wallet.touched_holds.clear()
        # As after SQL's save: the saved state is the one "loaded" (alert crossings from here).
        wallet.reference_at_load = wallet.reference_balance
        return ids

    def get_hold(self, hold_id: str) -> Hold | None:
        hold = self.s.holds.get(hold_id)
        return copy.copy(hold) if hold else None

    def open_holds(self, wallet_id: str) -> list[Hold]:
        return sorted(
            (copy.copy(h) for h in self.s.holds.values()
             if h.wallet_id == wallet_id and h.status == "open"),
            key=lambda h: h.expires_at,
        )

    def entries(
        self, wallet_id: str, limit: int, before_id: int | None = None
    ) -> list[RecordedEntry]:
        rows = [e for e in self.s.entries if e.wallet_id == wallet_id
                and (before_id is None or e.id < before_id)]
        return sorted(rows, key=lambda e: -e.id)[:limit]

    def wallets_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        due = [w for w in self.s.wallets.values() if w.needs_sweep(now)]

        def due_at(w: Wallet) -> datetime:
            return min(d for d in (w.next_expiry_at, w.next_hold_expiry_at) if d is not None)

        return [w.id for w in sorted(due, key=lambda w: (due_at(w), w.id))][:limit]

    def save_alert_settings(self, wallet_id: str, settings: AlertSettings | None) -> None:
        stored = self.s.wallets.get(wallet_id)
        if stored is not None:
            stored.alert_settings = settings

    def save_auto_recharge(self, wallet_id: str, settings: AutoRecharge) -> None:
        stored = self.s.wallets.get(wallet_id)
        if stored is not None:
            # SQL keeps no settings without a bundle, and stores an absent threshold as 0.
            stored.auto_recharge = settings if settings.bundle else None

    def usage_since(self, wallet_id: str, since: datetime) -> int:
        return -sum(e.amount for e in self.s.entries if e.wallet_id == wallet_id
                    and e.kind in ("usage", "capture") and e.created_at >= since)

    def profile(self, wallet_id: str) -> WalletProfile | None:
        return self.s.profiles.get(wallet_id)

    def update_profile(self, wallet_id: str, **fields: str | None) -> None:
        unknown = set(fields) - _PROFILE_FIELDS
        if unknown:
            raise ValueError(f"not profile fields: {sorted(unknown)}")
        profile = self.s.profiles.get(wallet_id)
        if profile is None:  # like an UPDATE of no row
            return
        self.s.profiles[wallet_id] = WalletProfile(
            wallet_id,
            fields.get("billing_customer_id", profile.billing_customer_id),
            fields.get("agreement_id", profile.agreement_id),
            fields.get("plan_code", profile.plan_code),
            fields.get("email", profile.email),
        )

    def find_by_customer(self, billing_customer_id: str) -> str | None:
        for p in self.s.profiles.values():
            if p.billing_customer_id == billing_customer_id:
                return p.wallet_id
        return None

    def audit(self, after: str | None, limit: int) -> list[WalletAudit]:
        out = []
        page = sorted(i for i in self.s.wallets if after is None or i > after)[:limit]
        for wallet_id in page:
            w = self.s.wallets[wallet_id]
            entries = sorted((e for e in self.s.entries if e.wallet_id == wallet_id),
                             key=lambda e: e.id)
            blocks = [b for b in self.s.blocks.values() if b.wallet_id == wallet_id]
            prev, broken = 0, 0
            for e in entries:
                broken += prev + e.amount != e.balance_after
                prev = e.balance_after
            out.append(WalletAudit(
                wallet_id=wallet_id, balance=w.balance, held=w.held, arrears=w.arrears,
                overdraft_limit=w.overdraft_limit, sum_entries=sum(e.amount for e in entries),
                sum_remaining=sum(b.remaining for b in blocks),
                sum_open_holds=sum(h.amount for h in self.s.holds.values()
                                   if h.wallet_id == wallet_id and h.status == "open"),
                negative_blocks=sum(b.remaining < 0 for b in blocks),
                overfull_blocks=sum(b.remaining > b.original for b in blocks),
                broken_chain_entries=broken,
                last_balance_after=entries[-1].balance_after if entries else None,
                has_unrefusable_usage=any(e.kind == "usage" and e.reason.startswith("kinde:")
                                          for e in entries),
            ))
        return out


class MemoryIdempotency:
    def __init__(self, state: _State) -> None:
        self.s = state

    def get(self, scope: str, key: str) -> StoredResponse | None:
        # A copy, like a fresh read of the row: callers may not change the stored answer.
        return copy.deepcopy(self.s.keys.get((scope, key)))

    def claim(self, scope: str, key: str, request_hash: str,
              now: datetime) -> StoredResponse | None:
        # Write units of work run one at a time here, so nothing can hold the key meanwhile.
        return self.get(scope, key)

    def put(self, scope: str, key: str, request_hash: str, status_code: int,
            body: dict[str, Any], now: datetime) -> None:
        if (scope, key) in self.s.keys:
            raise DuplicateKey(f"{scope}/{key}")
        self.s.keys[(scope, key)] = StoredResponse(request_hash, status_code, copy.deepcopy(body))


class MemoryBudgets:
    """Team budgets on the in-memory state (the same contract as adapters.sql.budgets)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def caps(self, wallet_id: str, member: str) -> Caps:
        return self.s.caps.get((wallet_id, member), Caps())

    def set_caps(self, wallet_id: str, member: str, caps: Caps, now: datetime) -> None:
        self.s.caps[(wallet_id, member)] = caps

    def _held(self, wallet_id: str, now: datetime) -> dict[str, int]:
        held: dict[str, int] = {}
        for hold_id, (wallet, member) in self.s.member_holds.items():
            hold = self.s.holds.get(hold_id)
            if wallet == wallet_id and hold and hold.status == "open" and hold.expires_at > now:
                held[member] = held.get(member, 0) + hold.amount
        return held

    def _spent(self, wallet_id: str, member: str, period: str) -> int:
        return sum(v[0] for (w, m, p, _), v in self.s.spend.items()
                   if (w, m, p) == (wallet_id, member, period))

    def usage(self, wallet_id: str, member: str, now: datetime) -> MemberUsage:
        return MemberUsage(self._spent(wallet_id, member, day_key(now)),
                           self._spent(wallet_id, member, month_key(now)),
                           self._held(wallet_id, now).get(member, 0))

    def add_spend(self, wallet_id: str, member: str, feature: str, credits: int, units: int,
                  now: datetime) -> None:
        for period in (day_key(now), month_key(now)):
            row = self.s.spend.setdefault((wallet_id, member, period, feature), [0, 0])
            row[0] += credits
            row[1] += units

    def add_hold(self, hold_id: str, wallet_id: str, member: str) -> None:
        self.s.member_holds[hold_id] = (wallet_id, member)

    def hold_member(self, hold_id: str) -> str | None:
        found = self.s.member_holds.get(hold_id)
        return found[1] if found else None

    def members(self, wallet_id: str, now: datetime) -> list[MemberRecord]:
        records: dict[str, MemberRecord] = {}
        for (wallet, member), caps in self.s.caps.items():
            if wallet == wallet_id:
                records.setdefault(member, MemberRecord(member)).caps = caps
        day, month = day_key(now), month_key(now)
        for (wallet, member, period, feature), (credits, units) in self.s.spend.items():
            if wallet == wallet_id and period in (day, month):
                record = records.setdefault(member, MemberRecord(member))
                (record.today if period == day else record.month).append(
                    SpendLine(feature, credits, units))
        for member, held in self._held(wallet_id, now).items():
            records.setdefault(member, MemberRecord(member)).held = held
        return [records[m] for m in sorted(records)]


class MemoryRecharges:
    """Bundle purchases (the same contract as adapters.sql.recharges)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def add(self, recharge_id: str, wallet_id: str, bundle: str, credits: int, price: str,
            currency: str, day: str, now: datetime, *, auto: bool = True,
            meter: str | None = None, block_id: str | None = None) -> None:
        if recharge_id in self.s.purchases:
            raise DuplicateKey(recharge_id)
        self.s.purchases[recharge_id] = _Purchase(
            recharge_id, wallet_id, bundle, auto, credits, price, currency, day,
            meter or f"bundle:{bundle}", now, block_id=block_id)

    def mark_refunded(self, recharge_id: str, now: datetime) -> None:
        self.s.purchases[recharge_id].refunded_at = now

    def in_flight(self, wallet_id: str) -> bool:
        return any(p.wallet_id == wallet_id and p.status == "pending" and p.auto
                   and p.refunded_at is None for p in self.s.purchases.values())

    def defer(self, wallet_id: str, now: datetime) -> None:
        self.s.deferred_recharges.setdefault(wallet_id, now)

    def clear_deferred(self, wallet_id: str) -> None:
        self.s.deferred_recharges.pop(wallet_id, None)

    def deferred_ready(self, limit: int) -> list[str]:
        waiting = sorted(self.s.deferred_recharges.items(), key=lambda item: (item[1], item[0]))
        return [w for w, _ in waiting if not self.in_flight(w)][:limit]

    def count_on_day(self, wallet_id: str, day: str) -> int:
        return sum(p.wallet_id == wallet_id and p.day == day and p.auto
                   for p in self.s.purchases.values())

    def billable(self, wallet_id: str, meter: str) -> tuple[int, list[str]]:
        rows = [p for p in self.s.purchases.values()
                if p.wallet_id == wallet_id and p.meter == meter and p.refunded_at is None]
        return len(rows), [p.id for p in rows if p.status != "invoiced"]

    def mark_invoiced(self, ids: Iterable[str], now: datetime) -> int:
        done = 0
        for purchase_id in set(ids):
            p = self.s.purchases.get(purchase_id)
            if p is not None and p.status != "invoiced":
                p.status, p.settled_at, p.failure_reason = "invoiced", now, None
                done += 1
        return done

    def mark_failed(self, wallet_id: str, meter: str, reason: str, now: datetime) -> list[str]:
        failed = []
        for p in self.s.purchases.values():
            if (p.wallet_id == wallet_id and p.meter == meter and p.status == "pending"
                    and p.refunded_at is None):
                p.status, p.failure_reason, p.settled_at = "failed", reason[:2000], now
                failed.append(p.id)
        return failed

    def any_auto(self, ids: Iterable[str]) -> bool:
        return any(p.auto for i in ids if (p := self.s.purchases.get(i)) is not None)

    def latest_auto(self, wallet_id: str) -> dict[str, object] | None:
        autos = [p for p in self.s.purchases.values() if p.wallet_id == wallet_id and p.auto]
        if not autos:
            return None
        p = max(autos, key=lambda p: (p.created_at, p.id))
        return {
            "id": p.id, "bundle": p.bundle, "credits": p.credits, "price": p.price,
            "currency": p.currency, "status": p.status, "failure_reason": p.failure_reason,
            "created_at": p.created_at, "settled_at": p.settled_at,
        }


class MemoryRefunds:
    """Refunded packs (the same contract as adapters.sql.refunds)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def purchase(self, wallet_id: str, entry_id: int) -> PurchaseRecord | None:
        entry = next((e for e in self.s.entries
                      if e.id == entry_id and e.wallet_id == wallet_id), None)
        if entry is None:
            return None
        sale = next((p for p in self.s.purchases.values()
                     if entry.block_id is not None and p.block_id == entry.block_id), None)
        return PurchaseRecord(
            entry_id=entry.id, wallet_id=wallet_id, kind=entry.kind, block_id=entry.block_id,
            created_at=entry.created_at, recharge_id=sale.id if sale else None,
            bundle=sale.bundle if sale else None, meter=sale.meter if sale else None,
            auto=sale.auto if sale else False)

    def refunded(self, block_id: str) -> bool:
        return block_id in self.s.refunds

    def add(self, record: RefundRecord) -> None:
        if record.block_id in self.s.refunds:
            raise DuplicateKey(f"refund of block {record.block_id}")
        self.s.refunds[record.block_id] = record

    def between(self, since: datetime, until: datetime) -> list[RefundRecord]:
        return sorted((r for r in self.s.refunds.values() if since <= r.created_at < until),
                      key=lambda r: (r.created_at, r.void_entry_id))


class MemoryInbox:
    """The webhook inbox (the same contract as adapters.sql.inbox)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        return self.s.events.get(event_id)

    def webhook_id_taken(self, webhook_id: str) -> bool:
        return any(e.webhook_id == webhook_id for e in self.s.events.values())

    def add(self, event_id: str, webhook_id: str | None, event_type: str, payload: str,
            raw_body: str, now: datetime) -> None:
        if event_id in self.s.events or (webhook_id and self.webhook_id_taken(webhook_id)):
            raise DuplicateKey(event_id)
        self.s.events[event_id] = InboxEvent(
            event_id=event_id, webhook_id=webhook_id, type=event_type, status="received",
            payload=json.loads(payload), park_reason=None, wallet_id=None, customer_id=None,
            attempts=0, received_at=now, processed_at=None,
        )
        self.s.raw[event_id] = raw_body

    def finish(self, event_id: str, status: InboxStatus, *, reason: str | None,
               wallet_id: str | None, customer_id: str | None, now: datetime) -> None:
        e = self.s.events[event_id]
        self.s.events[event_id] = replace(
            e, status=status, park_reason=reason, wallet_id=wallet_id, customer_id=customer_id,
            attempts=e.attempts + 1, processed_at=None if status == "parked" else now,
        )

    def search(self, *, status: str | None = None, wallet_id: str | None = None,
               event_type: str | None = None, customer_id: str | None = None,
               after: tuple[datetime, str] | None = None, limit: int = 100) -> list[InboxEvent]:
        rows = sorted(self.s.events.values(), key=lambda e: (e.received_at, e.event_id))
        out = [
            e for e in rows
            if (status is None or e.status == status)
            and (wallet_id is None or e.wallet_id == wallet_id)
            and (event_type is None or e.type == event_type)
            and (customer_id is None or e.customer_id == customer_id)
            and (after is None or (e.received_at, e.event_id) > after)
        ]
        return out[:limit]

    def count(self, status: str | None = None) -> int:
        return sum(1 for e in self.s.events.values() if status is None or e.status == status)


class MemoryMeters:
    """Meter readings (the same contract as adapters.sql.meters): totals only ever rise."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def reading(self, customer_key: str, feature_code: str,
                period_key: str) -> tuple[int, datetime] | None:
        key = (customer_key, feature_code, period_key)
        if key not in self.s.readings:
            return None
        return self.s.readings[key], self.s.raised.get(key, datetime.min.replace(tzinfo=UTC))

    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None:
        return self.s.readings.get((customer_key, feature_code, period_key))

    def period_keys(self, customer_key: str, feature_code: str) -> list[str]:
        keys = [k for k in self.s.readings if k[0] == customer_key and k[1] == feature_code]
        keys.sort(key=lambda k: self.s.raised.get(k, datetime.min.replace(tzinfo=UTC)),
                  reverse=True)
        return [k[2] for k in keys[:50]]

    def record(self, customer_key: str, feature_code: str, period_key: str, value: int,
               now: datetime) -> None:
        key = (customer_key, feature_code, period_key)
        if value >= self.s.readings.get(key, value):
            self.s.raised[key] = now
        self.s.readings[key] = max(value, self.s.readings.get(key, value))


class MemoryBilling:
    """The agreement cache and usage report state (the contract of adapters.sql.billing)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def agreement(self, agreement_id: str) -> AgreementInfo | None:
        return self.s.agreements.get(agreement_id)

    def save_agreement(self, info: AgreementInfo) -> None:
        self.s.agreements[info.id] = info

    def report_state(self, wallet_id: str, feature: str) -> UsageReportState:
        return self.s.report_states.get(
            (wallet_id, feature), UsageReportState(wallet_id, feature, None, None, 0, 0, None))

    def save_report_state(self, state: UsageReportState) -> None:
        self.s.report_states[(state.wallet_id, state.feature)] = state

    def units_used(self, wallet_id: str, feature: str) -> int:
        return sum(e.quantity or 0 for e in self.s.entries
                   if e.wallet_id == wallet_id and e.feature == feature
                   and e.kind in ("usage", "capture"))


class MemoryDashboard:
    """Credits used per UTC day and feature (the contract of adapters.sql.dashboard)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def daily_usage(self, wallet_id: str, since: datetime) -> list[tuple[date, str | None, int]]:
        totals: dict[tuple[date, str | None], int] = {}
        for e in self.s.entries:
            when = e.occurred_at or e.created_at
            if e.wallet_id == wallet_id and e.kind in ("usage", "capture") and when >= since:
                key = (when.astimezone(UTC).date(), e.feature)
                totals[key] = totals.get(key, 0) - e.amount
        return [(day, feature, credits) for (day, feature), credits in totals.items()]


class MemoryLinkSessions:
    """Dashboard link sessions (the contract of adapters.sql.access)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def open(self, session: LinkSession) -> bool:
        if session.link_id in self.s.link_sessions:
            return False
        self.s.link_sessions[session.link_id] = session
        return True

    def get(self, link_id: str) -> LinkSession | None:
        return self.s.link_sessions.get(link_id)

    def end(self, link_id: str, now: datetime) -> None:
        found = self.s.link_sessions.get(link_id)
        if found is not None and found.ended_at is None:
            self.s.link_sessions[link_id] = replace(found, ended_at=now)


class MemoryPaymentStanding:
    """Each wallet's payment standing (the contract of adapters.sql.access)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def overdue(self, wallet_id: str) -> bool:
        return self.s.standing.get(wallet_id, (False, datetime.min))[0]

    def record(self, wallet_id: str, overdue: bool, event_at: datetime, now: datetime) -> bool:
        known = self.s.standing.get(wallet_id)
        if known is not None and known[1] > event_at:
            return False
        self.s.standing[wallet_id] = (overdue, event_at)
        return True


class MemoryHoldPlacers:
    """Who placed each hold (the contract of adapters.sql.access)."""

    def __init__(self, state: _State) -> None:
        self.s = state

    def note(self, hold_id: str, placed_by: str) -> None:
        self.s.hold_placers[hold_id] = placed_by

    def placed_by(self, hold_id: str) -> str | None:
        return self.s.hold_placers.get(hold_id)


def _sql_only(name: str) -> NotImplementedError:
    return NotImplementedError(f"uow.{name} has no in-memory fake: test it on the SQL store")


class MemoryUnitOfWork:
    def __init__(self, store: MemoryStore, write: bool) -> None:
        self.store = store
        self.write = write
        self.committed = False

    def __enter__(self) -> Self:
        if self.write:
            self.store.write_lock.acquire()
        self._bind(copy.deepcopy(self.store.state))
        return self

    def _bind(self, state: _State) -> None:
        self.state = state
        self._wallets = MemoryWallets(state)
        self._idempotency = MemoryIdempotency(state)
        self._budgets = MemoryBudgets(state)
        self._recharges = MemoryRecharges(state)
        self._refunds = MemoryRefunds(state)
        self._inbox = MemoryInbox(state)
        self._meters = MemoryMeters(state)
        self._billing = MemoryBilling(state)
        self._dashboard = MemoryDashboard(state)
        self._link_sessions = MemoryLinkSessions(state)
        self._payment_standing = MemoryPaymentStanding(state)
        self._hold_placers = MemoryHoldPlacers(state)

    @property
    def wallets(self) -> MemoryWallets:
        return self._wallets

    @property
    def idempotency(self) -> MemoryIdempotency:
        return self._idempotency

    @property
    def budgets(self) -> MemoryBudgets:
        return self._budgets

    @property
    def recharges(self) -> MemoryRecharges:
        return self._recharges

    @property
    def refunds(self) -> MemoryRefunds:
        return self._refunds

    @property
    def inbox(self) -> MemoryInbox:
        return self._inbox

    @property
    def meters(self) -> MemoryMeters:
        return self._meters

    @property
    def billing(self) -> MemoryBilling:
        return self._billing

    @property
    def dashboard(self) -> MemoryDashboard:
        return self._dashboard

    @property
    def link_sessions(self) -> MemoryLinkSessions:
        return self._link_sessions

    @property
    def payment_standing(self) -> MemoryPaymentStanding:
        return self._payment_standing

    @property
    def hold_placers(self) -> MemoryHoldPlacers:
        return self._hold_placers

    @property
    def outbox(self) -> OutboxRepository:
        raise _sql_only("outbox")

    @property
    def plans(self) -> PlanRepository:
        raise _sql_only("plans")

    @property
    def revenue(self) -> RevenueRepository:
        raise _sql_only("revenue")

    def savepoint(self) -> _MemorySavepoint:
        return _MemorySavepoint(self)

    def commit(self) -> None:
        if not self.write:
            raise AssertionError("commit in a read-only unit of work")
        self.store.state = self.state
        self.store.commits += 1
        self.committed = True

    def rollback(self) -> None:
        self._bind(copy.deepcopy(self.store.state))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.write:
            self.store.write_lock.release()


class _MemorySavepoint:
    """Undo to the state at its start, like SQL's SAVEPOINT / ROLLBACK TO."""

    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self.uow = uow
        self.state = copy.deepcopy(uow.state)

    def rollback(self) -> None:
        self.uow._bind(self.state)

    def release(self) -> None:
        pass


class MemoryStore:
    """Callable like SqlStore: `store(write)` gives a unit of work."""

    def __init__(self) -> None:
        self.state = _State()
        self.write_lock = threading.Lock()
        self.commits = 0

    def __call__(self, write: bool) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self, write)


# mypy checks the fake against the ports here (tests/fakes is in its run, see scripts/test).
_unit_of_work: type[UnitOfWork] = MemoryUnitOfWork
_billing: type[BillingRepository] = MemoryBilling
_factory: UnitOfWorkFactory = MemoryStore()
_link_sessions: type[LinkSessionRepository] = MemoryLinkSessions
_payment_standing: type[PaymentStandingRepository] = MemoryPaymentStanding
_hold_placers: type[HoldPlacerRepository] = MemoryHoldPlacers
