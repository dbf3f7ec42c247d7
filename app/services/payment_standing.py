"""Who may spend the customer's money on a pack sale (DESIGN.md, "Who may spend the customer's
money"): the checks every sale passes, whoever makes it (API `{bundle}`, dashboard buy,
auto-recharge), and the payment standing Kinde's billing events set.

- In Kinde mode (sales invoiced through Kinde) a sale needs the wallet's Kinde billing customer:
  without one it is refused with 409 `no_billing_customer`, and nothing is written (an invoice
  that can never be sent would leave the credits unpaid for good).
- After `customer.payment_failed` for the wallet's customer, a sale not made by an admin is
  refused with 402 `payment_overdue`, and auto-recharge buys nothing, until
  `customer.payment_succeeded`. Events arrive in any order: the newest event decides.

`SaleGuard.prepare` runs before the sale's transaction (it may ask Kinde who the customer is);
`SaleGuard.check` runs inside it, so a payment failure recorded in between still stops it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.ledger import LedgerError
from app.services.idempotency import Outcome
from app.services.ports import KindeApiError, KindeBilling, KindeNotFound, UnitOfWork

PAYMENT_FAILED = "customer.payment_failed"
PAYMENT_SUCCEEDED = "customer.payment_succeeded"
OVERDUE_MESSAGE = ("A payment for this account failed, so packs cannot be bought until it is "
                   "paid. Update your payment method where you manage your subscription.")


class NoBillingCustomer(LedgerError):
    """A sale in Kinde mode for a wallet with no Kinde billing customer to invoice (409)."""

    code = "no_billing_customer"


class PaymentOverdue(LedgerError):
    """A sale by a non-admin after a failed payment, before it was paid (402)."""

    code = "payment_overdue"


class BillingLookupUnavailable(LedgerError):
    """Kinde could not say who the wallet's billing customer is; retry later (503)."""

    code = "unavailable"


@dataclass(frozen=True)
class SaleCheck:
    """What `prepare` learned, for `check` inside the sale's transaction."""

    wallet_id: str
    by_admin: bool
    # A customer id Kinde gave when the wallet's profile had none yet.
    looked_up_customer: str | None = None


class SaleGuard:
    """The checks before any pack sale; `invoiced` says whether sales are invoiced through Kinde
    (only then is a billing customer needed)."""

    def __init__(self, invoiced: Callable[[], bool], kinde: KindeBilling | None) -> None:
        self.invoiced = invoiced
        self.kinde = kinde

    def prepare(self, uow: Callable[[bool], UnitOfWork], wallet_id: str, *,
                by_admin: bool) -> SaleCheck:
        """Look the customer up in Kinde when the wallet does not know it yet (outside any
        transaction). Refusals are left to `check`, after a retry's key has been replayed."""
        if not self.invoiced():
            return SaleCheck(wallet_id, by_admin)
        with uow(False) as read:
            profile = read.wallets.profile(wallet_id)
        if profile is not None and profile.billing_customer_id:
            return SaleCheck(wallet_id, by_admin)
        return SaleCheck(wallet_id, by_admin, self._look_up(wallet_id))

    def check(self, uow: UnitOfWork, sale: SaleCheck) -> None:
        """Inside the sale's transaction: raise when the sale may not be made now."""
        if not sale.by_admin and uow.payment_standing.overdue(sale.wallet_id):
            raise PaymentOverdue(OVERDUE_MESSAGE)
        if not self.invoiced():
            return
        profile = uow.wallets.profile(sale.wallet_id)
        if sale.looked_up_customer:
            # Remember who Kinde said the customer is, so that its billing events (a failed
            # payment above all) reach this wallet from now on.
            if profile is not None and not profile.billing_customer_id and (
                    uow.wallets.find_by_customer(sale.looked_up_customer) in (None,
                                                                               sale.wallet_id)):
                uow.wallets.update_profile(sale.wallet_id,
                                           billing_customer_id=sale.looked_up_customer)
            return
        if profile is None or not profile.billing_customer_id:
            raise NoBillingCustomer(
                f"{sale.wallet_id} has no Kinde billing customer to invoice, so no pack can "
                f"be sold to it yet: create its billing customer in Kinde first")

    def _look_up(self, wallet_id: str) -> str | None:
        if self.kinde is None:
            return None
        try:
            if wallet_id.startswith("kp_"):
                customer = self.kinde.get_user(wallet_id).customer_id
            else:
                customer = self.kinde.get_org_billing(wallet_id).customer_id
        except KindeNotFound:
            return None
        except KindeApiError as exc:
            raise BillingLookupUnavailable(
                f"Kinde did not say who {wallet_id}'s billing customer is ({exc.code}); "
                f"nothing was bought, try again shortly") from None
        return str(customer) if customer else None


def auto_recharge_blocked(uow: UnitOfWork, wallet_id: str, invoiced: bool) -> str | None:
    """Why auto-recharge must not buy for this wallet now (None: it may). Auto-recharge is
    never an admin's sale, and runs inside a debit's transaction, so it asks Kinde nothing."""
    if uow.payment_standing.overdue(wallet_id):
        return "a payment failed"
    if invoiced:
        profile = uow.wallets.profile(wallet_id)
        if profile is None or not profile.billing_customer_id:
            return "no Kinde billing customer"
    return None


def record_payment_event(uow: UnitOfWork, wallet_id: str, event_type: str,
                         event_at: datetime | None, now: datetime) -> str | None:
    """Keep what a payment event says about the wallet's standing; a note for the inbox."""
    if event_type not in (PAYMENT_FAILED, PAYMENT_SUCCEEDED):
        return None
    overdue = event_type == PAYMENT_FAILED
    if not uow.payment_standing.record(wallet_id, overdue, event_at or now, now):
        return "payment standing unchanged (a newer payment event is known)"
    return "payment overdue: sales paused" if overdue else "payment received: sales resumed"


class Seller(Protocol):
    """The pack sale use case (`LedgerService.top_up_bundle`)."""

    def top_up_bundle(self, wallet_id: str, bundle_key: str, *,
                      idempotency_key: str | None = None,
                      check: Callable[[UnitOfWork], None] | None = None) -> Outcome: ...

    @property
    def uow(self) -> Callable[[bool], UnitOfWork]: ...


def sell_pack(ledger: Seller, guard: SaleGuard, wallet_id: str, bundle: str, *,
              by_admin: bool, idempotency_key: str | None) -> Outcome:
    """A pack sale through the guard: the one path for the API and the dashboard."""
    sale = guard.prepare(ledger.uow, wallet_id, by_admin=by_admin)
    return ledger.top_up_bundle(wallet_id, bundle, idempotency_key=idempotency_key,
                                check=lambda uow: guard.check(uow, sale))
