"""How a credit pack is paid for: a strategy picked once at the composition root.

- `KindeInvoicing`: the purchase is recorded and invoiced through Kinde (an absolute count of
  packs bought, reported on the pack's Kinde feature by the outbox, kind `pack_invoice`);
- `PaidElsewhere`: the product collected payment itself (SALES_PAID_ELSEWHERE, local mode):
  the sale is recorded with its price, and nothing is charged here (that would charge twice);
- `NoWayToCharge`: neither: selling a pack would give credits away, so it is refused.

The strategy answers every question the use cases ask about payment (may this pack be sold,
is a sale invoiced, charge it), so no use case tests which gateway it has.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Protocol

from app.domain.catalog import Bundle
from app.domain.ledger import new_id
from app.services.outbox_kinds import PACK_INVOICE, meter_topic
from app.services.ports import UnitOfWork


class Payments(Protocol):
    @property
    def invoiced(self) -> bool:
        """Whether a sale is charged here. When not, recording a sale hands out credits and
        books revenue on the caller's word alone: the API lets only admins do that."""

    def refusal(self, bundle: Bundle) -> str | None:
        """Why `bundle` cannot be sold through this strategy; None when it can."""

    def charge(
        self, uow: UnitOfWork, wallet_id: str, bundle: Bundle, price: Decimal, now: datetime,
        *, auto: bool = False, block_id: str | None = None,
    ) -> str | None:
        """Arrange payment inside the purchase's transaction (`block_id`: the credits sold);
        the purchase id, if recorded."""


class KindeInvoicing:
    """Invoices a pack through Kinde: a purchase row, and an outbox row that reports the
    absolute count of packs bought on one Kinde code (the sale code, or the auto-recharge code
    for auto-recharges)."""

    invoiced = True

    def refusal(self, bundle: Bundle) -> str | None:
        if not bundle.kinde_feature_code:
            return f"bundle {bundle.key!r} has no kinde_feature_code to invoice it"
        return None

    def charge(
        self, uow: UnitOfWork, wallet_id: str, bundle: Bundle, price: Decimal, now: datetime,
        *, auto: bool = False, block_id: str | None = None,
    ) -> str | None:
        purchase_id = new_id("rch")
        meter = bundle.invoice_meter(auto)
        uow.recharges.add(
            purchase_id, wallet_id, bundle.key, bundle.credits, str(price), bundle.currency,
            now.date().isoformat(), now, auto=auto, meter=meter, block_id=block_id,
        )
        uow.outbox.enqueue(
            PACK_INVOICE,
            meter_topic(wallet_id, meter),
            wallet_id,
            {"wallet_id": wallet_id, "bundle": bundle.key, "meter": meter, "auto": auto},
            now,
        )
        return purchase_id


class PaidElsewhere:
    """The product collected payment itself: record the sale, charge nothing."""

    invoiced = False

    def refusal(self, bundle: Bundle) -> str | None:
        return None

    def charge(
        self, uow: UnitOfWork, wallet_id: str, bundle: Bundle, price: Decimal, now: datetime,
        *, auto: bool = False, block_id: str | None = None,
    ) -> str | None:
        return None


class NoWayToCharge:
    """No billing connected and payment not collected elsewhere: no pack may be sold."""

    invoiced = False

    def refusal(self, bundle: Bundle) -> str | None:
        return (
            "selling a bundle needs a way to charge for it: connect Kinde billing "
            "(KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET), or set "
            "SALES_PAID_ELSEWHERE=true if your product collects payment itself"
        )

    def charge(
        self, uow: UnitOfWork, wallet_id: str, bundle: Bundle, price: Decimal, now: datetime,
        *, auto: bool = False, block_id: str | None = None,
    ) -> str | None:
        raise AssertionError("a refused sale is never charged")


def sale_payments(*, kinde_billing: bool, paid_elsewhere: bool) -> Payments:
    """The strategy for pack sales: SALES_PAID_ELSEWHERE wins (invoicing through Kinde too
    would charge the customer twice), then Kinde billing, else none."""
    if paid_elsewhere:
        return PaidElsewhere()
    if kinde_billing:
        return KindeInvoicing()
    return NoWayToCharge()
