"""The one path by which anything changes a wallet, inside the caller's unit of work.

Every use case that changes a wallet (usage, credits, holds, settings, webhooks, sweeps, plan
periods, auto-recharge suspension) calls `WalletWriter.write` with the change it wants, as a
callable. The writer does, in this order and nowhere else:

1. lock the wallet (`lock`, or `lock_or_create`), so writers of one wallet queue;
2. sweep: what fell due expires in time order, each dated when it fell due: the
   before-sweep hooks (plan period ends and renewals, the holds that expired before each end
   released first), then the remaining due holds and blocks;
3. the change the use case asked for (it may raise: the unit of work then rolls back whole);
   usage written with `spend` that is refused for credits below the auto-recharge threshold
   first lets auto-recharge buy, then is tried once more (app.services.recharge);
4. auto-recharge, when this write's spending triggered it;
5. alerts: the thresholds this write's entries crossed or re-armed;
6. save: the wallet's new entries, blocks, holds and row (nothing when nothing changed);
7. the after-write hooks (outbox rows: usage reports to Kinde, notifications).

Guarantees: all of it commits in the caller's transaction or none of it does; no path saves a
wallet without sweeping it first or without alerts and hooks after; a write that changes
nothing writes nothing. Reads apply the same sweep in memory (`sweep`) and never save.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from app.domain import alerts as alert_rules
from app.domain.alerts import Alert, AlertSettings
from app.domain.catalog import Catalog
from app.domain.ledger import CREDIT_KINDS, InsufficientCredits, NewEntry, Wallet
from app.domain.usage_terms import describe_hold_expired
from app.services.group_commit import OwnTransactionRunner
from app.services.ports import Clock, TransactionRunner, UnitOfWork, UnitOfWorkFactory
from app.services.recharge import AutoRecharger

T = TypeVar("T")

# Saved entries of one write, in order: (entry id, entry).
Saved = list[tuple[int, NewEntry]]
# Inside a write's transaction after the wallet was saved (outbox rows).
AfterWrite = Callable[[UnitOfWork, Wallet, Saved, datetime], None]
# Inside a write's (or a read's) sweep, before due blocks expire (plan period ends).
BeforeSweep = Callable[[UnitOfWork, Wallet, datetime], None]
# The change a use case makes to a locked, swept wallet; what it returns is handed back.
Change = Callable[[Wallet], T]


@dataclass
class Written(Generic[T]):
    """What a write did: the wallet as saved, the change's own result and the saved entries."""

    wallet: Wallet
    result: T
    saved: Saved

    def entry_id(self, entry: NewEntry) -> int:
        """The id the store gave one of this write's entries."""
        [entry_id] = [i for i, e in self.saved if e is entry]
        return entry_id


class WalletWriter:
    """Locks, sweeps, changes, recharges, alerts, saves and runs hooks, in that order."""

    def __init__(self, uow: UnitOfWorkFactory, catalog: Catalog, clock: Clock) -> None:
        self.uow = uow
        # How write transactions are run and committed: alone by default; the composition
        # root may share commits among concurrent writes (app.services.group_commit).
        self.runner: TransactionRunner = OwnTransactionRunner(uow)
        self.catalog = catalog
        self.clock = clock
        self.before_sweep: list[BeforeSweep] = []
        self.after_write: list[AfterWrite] = []
        # None without a way to charge (no Kinde billing): auto-recharge cannot be enabled.
        self.recharger: AutoRecharger | None = None
        self.alert_defaults = AlertSettings(
            catalog.alerts.thresholds_percent, (), catalog.alerts.notify_at_zero
        )

    def write(
        self,
        uow: UnitOfWork,
        wallet_id: str,
        now: datetime,
        change: Change[T],
        *,
        create: bool = False,
        missing: Callable[[], Exception] | None = None,
        sweep: bool = True,
    ) -> Written[T] | None:
        """Apply `change` to the wallet in `uow` through every step above.

        `create` makes an empty wallet when there is none; otherwise a missing wallet raises
        `missing()` or, without it, returns None (nothing written). `sweep=False` is for the
        plan worker only: it applies period ends one at a time, dated when they happened, and
        a sweep to `now` would jump over them.
        """
        return self._write(uow, wallet_id, now, change, create=create, missing=missing,
                           sweep=sweep, rescue=False)

    def spend(
        self,
        uow: UnitOfWork,
        wallet_id: str,
        now: datetime,
        change: Change[T],
        *,
        missing: Callable[[], Exception] | None = None,
    ) -> Written[T] | None:
        """`write` for refusable usage: when `change` is refused for credits on a wallet below
        its auto-recharge threshold, auto-recharge buys (if it may: active, none in flight,
        under the daily cap) and `change` is tried once more in the same transaction. If the
        pack does not cover it, the refusal stands and rolls the purchase back with it."""
        return self._write(uow, wallet_id, now, change, create=False, missing=missing,
                           sweep=True, rescue=True)

    def _write(
        self,
        uow: UnitOfWork,
        wallet_id: str,
        now: datetime,
        change: Change[T],
        *,
        create: bool,
        missing: Callable[[], Exception] | None,
        sweep: bool,
        rescue: bool,
    ) -> Written[T] | None:
        wallet = uow.wallets.lock_or_create(wallet_id, now) if create else uow.wallets.lock(
            wallet_id)
        if wallet is None:
            if missing is not None:
                raise missing()
            return None
        loaded = _Snapshot.of(wallet)
        if sweep:
            self.sweep(uow, wallet, now)
        try:
            result = change(wallet)
            rescued = False
        except InsufficientCredits:
            if not (rescue and self.recharger is not None
                    and self.recharger.rescue(uow, wallet, now)):
                raise
            result = change(wallet)  # with the pack's credits; may still refuse
            rescued = True
        recharged = rescued or (
            self.recharger is not None and self.recharger.apply(uow, wallet, now))
        self._evaluate_alerts(wallet, recharged)
        saved: Saved = []
        if loaded.changed(wallet):
            pending = list(wallet.new_entries)
            ids = uow.wallets.save(wallet, now)
            saved = list(zip(ids, pending, strict=True))
            for hook in self.after_write:
                hook(uow, wallet, saved, now)
        return Written(wallet, result, saved)

    def sweep(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> Wallet:
        """Expire what is due on a wallet, in the order it fell due: before-sweep hooks (plan
        period ends, which release the holds that expired before each end first), then holds,
        then blocks.

        Part of every write; a read calls it on an unlocked wallet to see the same state in
        memory (the hooks write nothing in a read transaction, and a read never saves).
        """
        if wallet.held > 0 and wallet.open_holds is None:
            # Which holds were placed when decides which expired credits they keep back.
            wallet.know_open_holds(uow.wallets.open_holds(wallet.id))
        for hook in self.before_sweep:
            hook(uow, wallet, now)
        self.release_expired_holds(uow, wallet, now)
        wallet.expire_blocks(now)
        return wallet

    def release_expired_holds(self, uow: UnitOfWork, wallet: Wallet, up_to: datetime) -> None:
        """Release the holds that expired by `up_to`, each dated at its own expiry: from then
        on it reserves nothing, and credits it kept past their expiry expire at that moment
        (so their breakage lands in the month the hold expired, however late the sweep)."""
        if wallet.next_hold_expiry_at is None or wallet.next_hold_expiry_at > up_to:
            return
        open_holds = [h for h in uow.wallets.open_holds(wallet.id)
                      if h.id not in wallet.touched_holds]
        for hold in sorted(open_holds, key=lambda h: (h.expires_at, h.id)):
            if hold.expires_at <= up_to:
                wallet.release_hold(hold, description=describe_hold_expired(hold.amount),
                                    now=hold.expires_at, expired=True)
        wallet.set_hold_expiry(open_holds)

    def _evaluate_alerts(self, wallet: Wallet, recharged: bool) -> None:
        """Walk this write's entries in order: debits may cross thresholds, credits re-arm.

        The customer sees only the state the write ends in: an alert whose threshold a later
        credit of the same write re-armed (e.g. expiry applied before a grant) is dropped, and
        the one that stays (the most severe) describes the final balance.
        """
        settings = wallet.alert_settings or self.alert_defaults
        reference, fired = wallet.reference_at_load, wallet.alerts_fired
        alerts: list[Alert] = []
        for entry in wallet.new_entries:
            if entry.kind in CREDIT_KINDS and entry.amount > 0:
                # (A negative adjustment is a debit: it may cross thresholds like usage.)
                reference = entry.balance_after
                fired = alert_rules.on_credit(settings, reference, entry.balance_after, fired)
            elif entry.amount < 0:
                fired, alert = alert_rules.on_debit(settings, reference, entry.balance_after,
                                                    fired)
                if alert is not None:
                    alerts.append(alert)
        wallet.alerts_fired = fired
        if recharged:
            # Auto-recharge already topped the wallet up in this very transaction: a
            # "balance low" message now would be wrong. The recharge notice says what happened.
            alerts = []
        wallet.new_alerts[:0] = alert_rules.final_alert(alerts, fired, wallet.balance, reference)


@dataclass(frozen=True)
class _Snapshot:
    """The wallet row's own fields at lock time, to tell whether a write changed anything."""

    alerts_fired: frozenset[str]
    next_expiry_at: datetime | None
    next_hold_expiry_at: datetime | None
    next_period_end_at: datetime | None

    @classmethod
    def of(cls, wallet: Wallet) -> _Snapshot:
        return cls(wallet.alerts_fired, wallet.next_expiry_at, wallet.next_hold_expiry_at,
                   wallet.next_period_end_at)

    def changed(self, wallet: Wallet) -> bool:
        return bool(
            wallet.has_pending_changes() or wallet.new_blocks or wallet.touched_blocks
            or wallet.new_alerts or self != _Snapshot.of(wallet)
        )
