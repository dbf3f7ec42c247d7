"""Credits in: pack sales (paid through the payment strategy) and grants that were not sold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.domain.ledger import InvalidRequest, NewEntry, Wallet, owner_type_of
from app.domain.limits import MAX_CREDITS, require_credits
from app.domain.usage_terms import describe_credit
from app.services import views
from app.services.errors import UnknownBundle
from app.services.idempotency import Outcome, run_write
from app.services.payments import Payments
from app.services.ports import UnitOfWork
from app.services.wallet_writer import WalletWriter, Written


class CreditService:
    def __init__(self, writer: WalletWriter, payments: Payments) -> None:
        self.writer = writer
        self.payments = payments

    def top_up_bundle(
        self, wallet_id: str, bundle_key: str, *, idempotency_key: str | None = None,
        check: Callable[[UnitOfWork], None] | None = None,
    ) -> Outcome:
        """Sell a credit pack: a purchase block with the pack's price as cost basis, and the
        charge arranged through the payment strategy in the same transaction. `check` runs
        first inside that transaction and may refuse the sale (app.services.payment_standing):
        then nothing is written."""
        bundle = self.writer.catalog.bundles.get(bundle_key)
        if bundle is None:
            known = ", ".join(sorted(self.writer.catalog.bundles)) or "none configured"
            raise UnknownBundle(f"unknown bundle {bundle_key[:64]!r}; known bundles: {known}")
        refusal = self.payments.refusal(bundle)
        if refusal is not None:
            raise InvalidRequest(refusal)
        owner_type_of(wallet_id)
        payments = self.payments

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            if check is not None:
                check(uow)

            def sell(wallet: Wallet) -> NewEntry:
                entry = wallet.credit(
                    bundle.credits,
                    kind="purchase",
                    reason=f"bundle:{bundle.key}",
                    description=describe_credit(bundle.credits, bundle.description),
                    now=now,
                    expires_at=now + timedelta(days=bundle.expires_after_days)
                    if bundle.expires_after_days else None,
                    cost_amount=bundle.price,
                    currency=bundle.currency,
                )
                payments.charge(uow, wallet_id, bundle, bundle.price, now,
                                block_id=entry.block_id)
                return entry

            return 201, _credit_body(self.writer.write(uow, wallet_id, now, sell, create=True))

        request = {"op": "top_up", "bundle": bundle_key}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def grant(
        self,
        wallet_id: str,
        credits: int,
        reason: str,
        *,
        kind: str = "grant",
        expires_after_days: int | None = None,
        idempotency_key: str | None = None,
        scope: str | None = None,
    ) -> Outcome:
        """Give credits that were not sold (sign-up, goodwill, plan allotment)."""
        require_credits(credits, f"credits must be a whole number from 1 to {MAX_CREDITS:,}")
        reason = (reason or "").strip()
        if not reason:
            raise InvalidRequest("a grant needs a reason (it is shown in the ledger)")
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def give(wallet: Wallet) -> NewEntry:
                return wallet.credit(
                    credits,
                    kind=kind,
                    reason=reason[:200],
                    description=describe_credit(credits, reason[:200]),
                    now=now,
                    expires_at=now + timedelta(days=expires_after_days)
                    if expires_after_days else None,
                )

            return 201, _credit_body(self.writer.write(uow, wallet_id, now, give, create=True))

        request = {"op": kind, "credits": credits, "reason": reason,
                   "expires_after_days": expires_after_days}
        return run_write(self.writer.runner, self.writer.clock, scope or f"wallet:{wallet_id}",
                         idempotency_key, request, action)


def _credit_body(written: Written[NewEntry] | None) -> dict[str, Any]:
    assert written is not None  # created when missing
    return {
        "entry": views.entry_view(written.result, written.entry_id(written.result)),
        "balance": written.wallet.balance,
        "available": written.wallet.available,
    }
