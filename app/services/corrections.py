"""Corrections and refunds: an operator's adjustments, and a sold pack's unused credits back.

Each use case is one unit of work through the wallet writer (lock, sweep, change, alerts,
save, hooks), keyed by the optional `Idempotency-Key` (scope: the wallet). Guarantees:
- `adjust`: a positive adjustment is a new block (optionally expiring); a negative one draws
  like usage (soonest-expiring credits first) and is refused with 402 rather than take
  available credits below zero. The operator's reason is the entry's reason and description.
- `refund`: the pack's unused credits leave as one `void` entry and one `refunds` row in the
  same transaction; the row's key (the pack's block) makes a second refund impossible, and the
  wallet lock means nothing is drawn from the pack after its void. A wholly unused pack sold in
  Kinde's still-open period is taken off its meter's count, and a `pack_invoice` row re-sends
  the lowered absolute count (`reduced`); otherwise a credit note is due (app.domain.refunds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.domain.ledger import InvalidRequest, NewEntry, Wallet, owner_type_of
from app.domain.limits import MAX_CREDITS
from app.domain.refunds import (
    AlreadyRefunded,
    KindePeriod,
    RefundInvoice,
    RefundTerms,
    adjustment_description,
    refund_description,
    refund_terms,
    refundable_credits,
)
from app.services import views
from app.services.errors import NotFound
from app.services.idempotency import Outcome, run_write
from app.services.outbox_kinds import PACK_INVOICE, meter_topic
from app.services.ports import DuplicateKey, PurchaseRecord, RefundRecord, UnitOfWork
from app.services.wallet_writer import WalletWriter

MAX_REASON = 500


def _reason(reason: Any) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not 1 <= len(text) <= MAX_REASON:
        raise InvalidRequest(f"reason is required: 1 to {MAX_REASON} characters, shown in the "
                             f"wallet's history")
    return text


def _missing(wallet_id: str) -> NotFound:
    return NotFound(f"no wallet {wallet_id}")


@dataclass(frozen=True)
class _Refunded:
    terms: RefundTerms
    entry: NewEntry
    block_id: str


class CorrectionService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def adjust(
        self, wallet_id: str, credits: int, reason: str, *,
        expires_at: datetime | None = None, idempotency_key: str | None = None,
    ) -> Outcome:
        """Correct a balance by `credits` (non-zero), with the operator's reason."""
        owner_type_of(wallet_id)
        if isinstance(credits, bool) or not isinstance(credits, int) or credits == 0 or abs(
                credits) > MAX_CREDITS:
            raise InvalidRequest(f"credits must be a non-zero whole number from "
                                 f"-{MAX_CREDITS:,} to {MAX_CREDITS:,}")
        text = _reason(reason)
        if expires_at is not None and credits < 0:
            raise InvalidRequest("expires_at is for positive adjustments (new credits) only")

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def change(wallet: Wallet) -> NewEntry:
                description = adjustment_description(credits, text)
                if credits > 0:
                    return wallet.credit(credits, kind="adjustment", reason=text,
                                         description=description, now=now,
                                         expires_at=expires_at)
                return wallet.debit(-credits, kind="adjustment", reason=text,
                                    description=description, now=now)

            # A positive adjustment creates the wallet like a grant; a negative one needs it.
            written = self.writer.write(uow, wallet_id, now, change, create=credits > 0,
                                        missing=lambda: _missing(wallet_id))
            assert written is not None
            return 201, {
                "entry": views.entry_view(written.result, written.entry_id(written.result)),
                "balance": written.wallet.balance,
                "available": written.wallet.available,
            }

        request = {"op": "adjustment", "credits": credits, "reason": text,
                   "expires_at": expires_at.isoformat() if expires_at else None}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def refund(
        self, wallet_id: str, entry_id: int, reason: str, *, idempotency_key: str | None = None,
    ) -> Outcome:
        """Refund the pack a purchase entry sold: its unused credits go back (see module)."""
        owner_type_of(wallet_id)
        text = _reason(reason)
        if not 0 < entry_id < 2**63:  # no entry id is outside a signed 64-bit column
            raise NotFound(f"no entry {entry_id} in wallet {wallet_id}")

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            purchase = uow.refunds.purchase(wallet_id, entry_id)
            if purchase is None:
                raise NotFound(f"no entry {entry_id} in wallet {wallet_id}")
            period = _kinde_period(uow, wallet_id, purchase)

            def change(wallet: Wallet) -> _Refunded:
                # Under the wallet's lock: a refund that committed first is seen here.
                if purchase.block_id is not None and uow.refunds.refunded(purchase.block_id):
                    raise AlreadyRefunded(f"entry {entry_id}'s pack was already refunded")
                block = next((b for b in wallet.blocks if b.id == purchase.block_id), None)
                credits = refundable_credits(wallet, block, purchase.kind, now)
                assert block is not None
                terms = refund_terms(
                    original=block.original, unused=credits,
                    price=block.cost_amount or Decimal(0), currency=block.currency or "",
                    sold_at=purchase.created_at, now=now,
                    invoiced_through_kinde=purchase.recharge_id is not None, period=period)
                entry = wallet.void_part(block, credits, now=now,
                                         description=refund_description(credits, text))
                return _Refunded(terms, entry, block.id)

            written = self.writer.write(uow, wallet_id, now, change,
                                        missing=lambda: _missing(wallet_id))
            assert written is not None
            done = written.result
            void_id = written.entry_id(done.entry)
            try:
                uow.refunds.add(RefundRecord(
                    block_id=done.block_id, wallet_id=wallet_id, purchase_entry_id=entry_id,
                    void_entry_id=void_id, recharge_id=purchase.recharge_id,
                    credits=done.terms.credits, amount=done.terms.amount,
                    currency=done.terms.currency, invoice=done.terms.invoice, reason=text,
                    created_at=now))
            except DuplicateKey as exc:
                raise AlreadyRefunded(f"entry {entry_id}'s pack was already refunded") from exc
            if done.terms.invoice is RefundInvoice.REDUCED:
                _lower_pack_count(uow, wallet_id, purchase, now)
            return 201, {
                "refunded_credits": done.terms.credits,
                "refunded_amount": str(done.terms.amount),
                "currency": done.terms.currency,
                "invoice": str(done.terms.invoice),
                "purchase_entry_id": entry_id,
                "entry": views.entry_view(done.entry, void_id),
                "balance": written.wallet.balance,
                "available": written.wallet.available,
            }

        request = {"op": "refund", "entry_id": entry_id, "reason": text}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)


def _kinde_period(uow: UnitOfWork, wallet_id: str, purchase: PurchaseRecord) -> KindePeriod | None:
    """The Kinde period that invoices the purchase's meter, as last looked up (None: unknown,
    or the purchase is not invoiced through Kinde)."""
    if purchase.recharge_id is None or purchase.meter is None:
        return None
    profile = uow.wallets.profile(wallet_id)
    agreement = uow.billing.agreement(profile.agreement_id) if (
        profile is not None and profile.agreement_id) else None
    if agreement is None or agreement.period_start is None or agreement.period_end is None:
        return None
    state = uow.billing.report_state(wallet_id, purchase.meter)
    acknowledged = state.period_start if state.agreement_id == agreement.id else None
    return KindePeriod(agreement.period_start, agreement.period_end, acknowledged)


def _lower_pack_count(uow: UnitOfWork, wallet_id: str, purchase: PurchaseRecord,
                      now: datetime) -> None:
    """Take the pack off its meter's count and have the lowered absolute count sent."""
    assert purchase.recharge_id is not None and purchase.meter is not None
    uow.recharges.mark_refunded(purchase.recharge_id, now)
    uow.outbox.enqueue(
        PACK_INVOICE, meter_topic(wallet_id, purchase.meter), wallet_id,
        {"wallet_id": wallet_id, "bundle": purchase.bundle, "meter": purchase.meter,
         "auto": purchase.auto},
        now,
    )
