"""Safe auto-recharge: buy the chosen bundle when a debit leaves the balance below a threshold.

Runs inside the debit's own transaction, under the wallet's lock, so that:
- credits are granted once and only once per purchase (same commit as the purchase row);
- at most one recharge is in flight per wallet (a purchase whose invoice is not yet confirmed
  blocks the next one). A purchase that waits for the one in flight is remembered
  (`recharges.defer`) and made once nothing is in flight: by the worker right after the
  outbox settles the pending one (app.services.deferred_recharges), or by the next attempt to
  spend, whichever comes first;
- a usage debit refused for credits on a wallet below its threshold buys (`rescue`) and is
  then tried again in the same transaction: it succeeds if the pack covers it; if not, the
  refusal rolls the purchase back too (a 402 never leaves a charge behind). So a wallet that
  ran dry while a purchase was in flight never stalls;
- the catalog's `max_per_day` caps purchases per wallet and UTC day;
- a failed charge (invoice dead-lettered, or Kinde's `customer.payment_failed`) suspends
  auto-recharge with a visible reason and a notification; nothing retries a failing card: the
  owner turns it back on with `PUT /v1/wallets/{id}/auto-recharge`. A dead invoice also marks
  its purchases `failed` (shown as the wallet's `auto_recharge.last_purchase`), so they no
  longer count as in flight and a re-enabled auto-recharge buys again.
The charge itself goes through the payment strategy (app.services.payments); with Kinde it is a
meter usage report (Kinde has no one-off purchase API), delivered by the outbox as a
`pack_invoice`: sales on the bundle's
`kinde_feature_code`, auto-recharges on its `auto_recharge_kinde_feature_code` (a feature priced
at the discounted pack price), each code with its own absolute count of packs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from app.domain.catalog import Catalog
from app.domain.ledger import Wallet
from app.domain.money import discounted
from app.domain.usage_terms import describe_credit
from app.services.outbox_kinds import PACK_INVOICE, kind_of
from app.services.payment_standing import auto_recharge_blocked
from app.services.payments import Payments
from app.services.ports import Clock, DeliveryError, OutboxMessage, UnitOfWork, UnitOfWorkFactory

RECHARGE_REASON = "auto-recharge:"
log = logging.getLogger("kinde_credits.recharge")


@dataclass(frozen=True)
class Notice:
    """Something to tell the wallet's owner (alerts, recharges), sent through the outbox."""

    type: str
    data: dict[str, Any]


class AutoRecharger:
    def __init__(self, catalog: Catalog, payments: Payments) -> None:
        self.catalog = catalog
        self.payments = payments

    def apply(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> bool:
        """Buy the bundle if this write's debits triggered auto-recharge; True if bought."""
        settings = wallet.auto_recharge
        if settings is None or not settings.triggered_by(wallet.balance):
            return False
        if not any(e.kind in ("usage", "capture") for e in wallet.new_entries):
            # Only spending triggers a purchase: never expiry (which a read may apply), a
            # hold, or a credit.
            return False
        return self.buy(uow, wallet, now)

    def rescue(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> bool:
        """A usage debit was just refused for credits: buy now if the wallet is below its
        threshold (the same rules as `apply`); True if bought, and the caller tries the debit
        again. If the pack does not cover it, the refusal rolls the purchase back with it."""
        settings = wallet.auto_recharge
        if settings is None or not settings.triggered_by(wallet.balance):
            return False
        return self.buy(uow, wallet, now)

    def follow_up(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> bool:
        """The purchase that waited for one in flight, once nothing is (the worker's step).

        Bought if the wallet is still below its threshold with auto-recharge active; otherwise
        the wait is forgotten (the next debit below the threshold decides again).
        """
        uow.recharges.clear_deferred(wallet.id)
        settings = wallet.auto_recharge
        if settings is None or not settings.triggered_by(wallet.balance):
            return False
        return self.buy(uow, wallet, now)

    def buy(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> bool:
        """The purchase decision once triggered: the bundle can be sold, none in flight (else
        remembered, see `follow_up`), under the daily cap; then buy. True if bought."""
        settings = wallet.auto_recharge
        if settings is None or not settings.active:
            return False
        # Who may spend (app.services.payment_standing): not after a failed payment, and in
        # Kinde mode not without the wallet's billing customer.
        if auto_recharge_blocked(uow, wallet.id, self.payments.invoiced) is not None:
            return False
        bundle = self.catalog.bundles.get(settings.bundle)
        if bundle is None or self.payments.refusal(bundle) is not None:
            self.suspend(uow, wallet, f"bundle {settings.bundle!r} can no longer be bought", now)
            return False
        if uow.recharges.in_flight(wallet.id):
            # Remembered: bought once the one in flight settles (worker) or on the next
            # attempt to spend, instead of never if this was the wallet's last debit.
            uow.recharges.defer(wallet.id, now)
            return False
        day = now.date().isoformat()
        cap = self.catalog.auto_recharge.max_per_day
        if uow.recharges.count_on_day(wallet.id, day) >= cap:
            # Tell the owner once per day, not on every debit after the cap.
            if uow.idempotency.get("recharge-cap", f"{wallet.id}:{day}") is None:
                uow.idempotency.put("recharge-cap", f"{wallet.id}:{day}", "-", 200, {}, now)
                wallet.new_alerts.append(Notice("credits.auto_recharge_capped", {
                    "wallet_id": wallet.id, "balance": wallet.balance, "max_per_day": cap,
                    "message": f"Auto-recharge already bought {cap} time(s) today, the daily "
                               f"limit; it resumes tomorrow (UTC).",
                }))
            return False
        discount = self.catalog.auto_recharge.discount_percent
        price = discounted(bundle.price, discount, bundle.currency)
        expires = now + timedelta(days=bundle.expires_after_days) if bundle.expires_after_days \
            else None
        entry = wallet.credit(
            bundle.credits,
            kind="purchase",
            reason=f"{RECHARGE_REASON}{bundle.key}",
            description=describe_credit(bundle.credits, f"auto-recharge, {bundle.description}"),
            now=now,
            expires_at=expires,
            cost_amount=price,
            currency=bundle.currency,
        )
        recharge_id = self.payments.charge(uow, wallet.id, bundle, price, now, auto=True,
                                           block_id=entry.block_id)
        uow.recharges.clear_deferred(wallet.id)
        wallet.new_alerts.append(Notice("credits.auto_recharged", {
            "wallet_id": wallet.id, "balance": wallet.balance, "bundle": bundle.key,
            "credits": bundle.credits, "price": str(price), "currency": bundle.currency,
            "recharge_id": recharge_id,
            "message": f"Auto-recharge bought {bundle.credits:,} credits ({bundle.key}) for "
                       f"{price} {bundle.currency}; balance now {wallet.balance:,} credits.",
        }))
        return True

    def suspend(self, uow: UnitOfWork, wallet: Wallet, reason: str, now: datetime) -> None:
        if wallet.auto_recharge is None or wallet.auto_recharge.suspended_reason:
            return
        wallet.auto_recharge = replace(wallet.auto_recharge, suspended_reason=reason)
        uow.wallets.save_auto_recharge(wallet.id, wallet.auto_recharge)
        wallet.new_alerts.append(suspended_notice(wallet.id, reason))


def suspended_notice(wallet_id: str, reason: str) -> Notice:
    return Notice("credits.auto_recharge_suspended", {
        "wallet_id": wallet_id, "reason": reason,
        "message": f"Auto-recharge is paused: {reason}. Check your payment method, then turn "
                   f"auto-recharge back on.",
    })


# Suspends a wallet's auto-recharge inside a caller's unit of work (wallet_settings).
SuspendIn = Callable[[UnitOfWork, str, str, datetime], bool]


class DeadInvoiceHandler:
    """Dead-letter listener for pack invoices: the purchases the dead report would have
    invoiced have failed, and a failed auto-recharge charge suspends auto-recharge.

    Marking them failed is what lets a re-enabled auto-recharge buy again: a purchase left
    `pending` would count as in flight for ever. They stay billable (their credits exist): a
    requeued or later report of the same meter still counts them, and marks them invoiced.
    """

    def __init__(self, uow: UnitOfWorkFactory, suspend_in: SuspendIn, clock: Clock) -> None:
        self.uow = uow
        self.suspend_in = suspend_in
        self.clock = clock

    def __call__(self, message: OutboxMessage, error: DeliveryError) -> None:
        if kind_of(message) != PACK_INVOICE:
            return
        payload = message.payload
        wallet_id = payload["wallet_id"]
        meter = payload.get("meter") or f"bundle:{payload['bundle']}"
        reason = f"the auto-recharge charge failed ({error.message})"
        now = self.clock()
        with self.uow(True) as uow:
            recharges = uow.recharges
            failed = recharges.mark_failed(wallet_id, meter, error.message, now)
            if payload.get("auto") or recharges.any_auto(failed):
                self.suspend_in(uow, wallet_id, reason, now)
            uow.commit()
        log.error("pack invoice for %s (%s) dead: %d purchase(s) marked failed",
                  wallet_id, meter, len(failed))
