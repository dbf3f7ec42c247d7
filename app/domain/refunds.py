"""Refund rules as plain Python: what of a sold pack may go back, what it is worth, and whether
Kinde's invoice can simply count one pack fewer.

A refund names a purchase (its ledger entry) and takes the pack's unused credits out of the
wallet as one `void` entry. The rules:
- only purchases are refunded: grants, allotments and adjustments were never paid for;
- a pack is refunded at most once (the store enforces it with a key on the pack's block);
- credits that open holds need are not taken: when voiding the pack's unused credits would
  leave open holds uncovered (available below zero) the refund is refused, nothing changes, and
  the operator captures or releases the holds first. A refund is all of a pack's unused credits
  or nothing, so "at most once" never strands credits that a later refund could not return;
- a pack with nothing left (used, expired, or spent on arrears) has nothing to refund;
- the amount is the pack's price less the money its used credits consumed (app.domain.money
  `share_of`, in the currency's minor unit): the same allocation the revenue roll-forward
  makes, so the refund it reports equals this amount;
- the invoice: a wholly unused pack invoiced through Kinde and sold in the Kinde period that is
  still open is taken off that period's pack count (`reduced`: Kinde never invoices it); any
  other refund is a credit note the operator issues in Kinde (`credit_note_due`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from app.domain.ledger import Block, LedgerError, Wallet
from app.domain.money import round_money, share_of


class RefundInvoice(StrEnum):
    """What happens to the customer's invoice for a refunded pack."""

    REDUCED = "reduced"
    """Kinde has not invoiced the pack's period yet: its pack count is lowered by one."""
    CREDIT_NOTE_DUE = "credit_note_due"
    """The pack is (or will be) invoiced: the operator issues a credit note in Kinde."""


class NotRefundable(LedgerError):
    """Not a purchase, or a purchase with no unused credits left (answered 409)."""

    code = "not_refundable"


class AlreadyRefunded(LedgerError):
    """The pack was refunded before (answered 409)."""

    code = "already_refunded"


class CreditsHeld(LedgerError):
    """Open holds need some of the pack's unused credits (answered 409)."""

    code = "credits_held"


@dataclass(frozen=True)
class KindePeriod:
    """What we know of the Kinde period that invoices a pack's meter."""

    start: datetime
    end: datetime
    # The period of the last count Kinde acknowledged on the meter (None: nothing yet). A later
    # one than `start` means our cached period is stale: never lower a count then.
    acknowledged_start: datetime | None = None


@dataclass(frozen=True)
class RefundTerms:
    credits: int
    amount: Decimal
    currency: str
    invoice: RefundInvoice


def refundable_credits(wallet: Wallet, block: Block | None, kind: str,
                       now: datetime) -> int:
    """The credits a refund of this purchase takes back, or the refusal (see the module)."""
    if kind != "purchase":
        raise NotRefundable(
            f"only purchases are refunded; this entry is a {kind} (nothing was paid for it)")
    if block is not None and block.expires_at is not None and block.expires_at <= now:
        # Credits past their expiry are only kept for an open hold: they are not unused.
        raise NotRefundable("this pack has expired: what is left of it is kept only for an "
                            "open hold and expires when the hold settles")
    remaining = block.remaining if block is not None else 0
    if remaining <= 0:
        raise NotRefundable("nothing of this pack is left to refund (used, expired, or paid "
                            "arrears)")
    if remaining > wallet.available:
        raise CreditsHeld(
            f"open holds reserve {wallet.held:,} credits and would no longer be covered: "
            f"capture or release them, then refund the {remaining:,} unused credits")
    return remaining


def refund_terms(
    *,
    original: int,
    unused: int,
    price: Decimal,
    currency: str,
    sold_at: datetime,
    now: datetime,
    invoiced_through_kinde: bool,
    period: KindePeriod | None,
) -> RefundTerms:
    """The amount of `unused` credits of a pack of `original` sold for `price`, and the
    invoice it goes back on."""
    cost = round_money(price, currency)
    amount = cost - share_of(cost, original, original - unused, currency)
    reduced = (
        unused == original
        and invoiced_through_kinde
        and period is not None
        and period.start <= sold_at < period.end
        and now < period.end
        and (period.acknowledged_start is None or period.acknowledged_start <= period.start)
    )
    invoice = RefundInvoice.REDUCED if reduced else RefundInvoice.CREDIT_NOTE_DUE
    return RefundTerms(unused, amount, currency, invoice)


def refund_description(credits: int, reason: str) -> str:
    return f"-{credits:,} credits: pack refunded ({reason})"


def adjustment_description(credits: int, reason: str) -> str:
    sign = "+" if credits > 0 else "-"
    return f"{sign}{abs(credits):,} credits: adjustment ({reason})"
