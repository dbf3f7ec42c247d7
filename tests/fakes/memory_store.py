"""An in-memory implementation of the storage ports, for fast unit tests of the services.

Transactions are copy-on-enter, swap-on-commit, under one lock for writers, which gives the
same all-or-nothing and serialised-writer behaviour the SQL store guarantees.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from app.domain.audit import WalletAudit
from app.domain.budgets import Caps, MemberUsage, day_key, month_key
from app.domain.ledger import Block, Hold, Wallet, owner_type_of
from app.services.budgets import MemberRecord, SpendLine
from app.services.ports import DuplicateKey, RecordedEntry, StoredResponse, WalletProfile


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


class MemoryWallets:
    def __init__(self, state: _State) -> None:
        self.s = state

    def _load(self, wallet_id: str) -> Wallet | None:
        stored = self.s.wallets.get(wallet_id)
        if stored is None:
            return None
        wallet = replace(stored, blocks=[], new_entries=[], new_blocks=[], touched_blocks={},
                         new_holds=[], touched_holds={})
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
                    hold_id=e.hold_id, occurred_at=e.occurred_at,
                )
            )
            ids.append(entry_id)
            self.s.draws.extend(
                (entry_id, block_id, credits, e.kind, e.created_at) for block_id, credits in e.draws
            )
        self.s.wallets[wallet.id] = replace(wallet, blocks=[], new_entries=[], new_blocks=[],
                                            touched_blocks={}, new_holds=[], touched_holds={})
        for attr in ("new_entries", "new_blocks", "new_holds"):
            getattr(wallet, attr).clear()
        wallet.touched_blocks.clear()
        wallet.touched_holds.clear()
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

    def wallet_ids(self, after: str | None, limit: int) -> list[str]:
        return sorted(i for i in self.s.wallets if after is None or i > after)[:limit]

    def usage_since(self, wallet_id: str, since: datetime) -> int:
        return -sum(e.amount for e in self.s.entries if e.wallet_id == wallet_id
                    and e.kind in ("usage", "capture") and e.created_at >= since)

    def profile(self, wallet_id: str) -> WalletProfile | None:
        return self.s.profiles.get(wallet_id)

    def update_profile(self, wallet_id: str, **fields: str | None) -> None:
        self.s.profiles[wallet_id] = replace(self.s.profiles[wallet_id], **fields)  # type: ignore[arg-type]

    def find_by_customer(self, billing_customer_id: str) -> str | None:
        for p in self.s.profiles.values():
            if p.billing_customer_id == billing_customer_id:
                return p.wallet_id
        return None

    def audit(self, after: str | None, limit: int) -> list[WalletAudit]:
        out = []
        for wallet_id in self.wallet_ids(after, limit):
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
                has_unrefusable_usage=any(e.reason.startswith("kinde:") for e in entries),
            ))
        return out


class MemoryIdempotency:
    def __init__(self, state: _State) -> None:
        self.s = state

    def get(self, scope: str, key: str) -> StoredResponse | None:
        return self.s.keys.get((scope, key))

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


class MemoryUnitOfWork:
    def __init__(self, store: MemoryStore, write: bool) -> None:
        self.store = store
        self.write = write
        self.committed = False

    def __enter__(self) -> Self:
        if self.write:
            self.store.write_lock.acquire()
        self.state = copy.deepcopy(self.store.state)
        self.wallets = MemoryWallets(self.state)
        self.idempotency = MemoryIdempotency(self.state)
        self.budgets = MemoryBudgets(self.state)
        return self

    def commit(self) -> None:
        if not self.write:
            raise AssertionError("commit in a read-only unit of work")
        self.store.state = self.state
        self.store.commits += 1
        self.committed = True

    def rollback(self) -> None:
        self.state = copy.deepcopy(self.store.state)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.write:
            self.store.write_lock.release()


class MemoryStore:
    """Callable like SqlStore: `store(write)` gives a unit of work."""

    def __init__(self) -> None:
        self.state = _State()
        self.write_lock = threading.Lock()
        self.commits = 0

    def __call__(self, write: bool) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self, write)
