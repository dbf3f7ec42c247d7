"""Usage the product reports (refusable): one debit per record, through the wallet writer."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.domain.budgets import MemberBudgetExceeded
from app.domain.ledger import InsufficientCredits, LedgerError, Wallet, owner_type_of
from app.domain.limits import usage_credits
from app.domain.usage_terms import describe_debit, describe_units_left
from app.services import budgets as member_budgets
from app.services import views
from app.services.errors import status_for
from app.services.features import app_feature
from app.services.idempotency import Outcome, run_write
from app.services.ports import UnitOfWork
from app.services.wallet_writer import WalletWriter

log = logging.getLogger("kinde_credits.ledger")


class UsageService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def record_usage(
        self,
        wallet_id: str,
        feature_key: str,
        quantity: int,
        *,
        occurred_at: datetime | None = None,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> Outcome:
        """Debit `quantity x credits_per_unit` for refusable usage asked for by the product.

        `member` (org wallets only) names the Kinde user spending: their caps are checked and
        their spend recorded in this same transaction, under the wallet's lock.
        """
        feature = app_feature(self.writer, feature_key)
        credits = usage_credits(feature, quantity)
        owner_type_of(wallet_id)
        member = member_budgets.member_for(wallet_id, member)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def debit(wallet: Wallet) -> Any:
                if member is not None:
                    member_budgets.admit_debit(uow, wallet, member, credits, now)
                entry = wallet.debit(
                    credits,
                    reason=f"api:{feature.key}",
                    description=describe_debit(credits, feature.label, quantity, feature.unit),
                    now=now,
                    feature=feature.key,
                    quantity=quantity,
                    occurred_at=occurred_at,
                )
                if member is not None:
                    member_budgets.record_spend(uow, wallet_id, member, feature.key, credits,
                                                quantity, now)
                return entry

            # A wallet that never received credits has none: the same answer as empty.
            written = self.writer.write(
                uow, wallet_id, now, debit, missing=lambda: InsufficientCredits(credits, 0))
            assert written is not None
            wallet = written.wallet
            return 201, {
                "entry": views.entry_view(written.result, written.entry_id(written.result)),
                "balance": wallet.balance,
                "available": wallet.available,
                "value": describe_units_left(
                    wallet.available, feature.credits_per_unit, feature.unit
                ),
                **({"member": member} if member is not None else {}),
            }

        request = {"op": "usage", "feature": feature_key, "quantity": quantity,
                   "occurred_at": views.iso(occurred_at)}
        if member is not None:  # only then, so keys stored before budgets keep their hash
            request["member"] = member
        return run_write(self.writer.uow, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def record_usage_batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Many usage records, each its own unit of work, so one refusal fails only itself."""
        results: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            try:
                outcome = self.record_usage(
                    record["wallet_id"],
                    record["feature"],
                    record["quantity"],
                    occurred_at=record.get("occurred_at"),
                    idempotency_key=record.get("idempotency_key"),
                    member=record.get("member"),
                )
                results.append(
                    {"index": index, "status": outcome.status, "result": outcome.body,
                     "replayed": outcome.replayed}
                )
            except LedgerError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                status = status_for(exc)
                if isinstance(exc, InsufficientCredits):
                    error.update(needed=exc.needed, available=exc.available)
                if isinstance(exc, MemberBudgetExceeded):
                    error.update(needed=exc.needed,
                                 available_to_member=exc.available_to_member)
                results.append({"index": index, "status": status, "error": error})
            except Exception:
                # The records before this one are committed: a 500 for the whole batch would
                # say "not applied" about them. This record's unit of work rolled back, so the
                # per-record answer is the truth; a retry with the same keys replays the rest.
                log.exception("usage batch record %d failed", index)
                results.append({"index": index, "status": 500, "error": {
                    "code": "internal_error",
                    "message": "internal error; this record was not applied (retry it)",
                }})
        return results
