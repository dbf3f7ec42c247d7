"""Usage the product reports (refusable): one debit per record, through the wallet writer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.domain.budgets import MemberBudgetExceeded
from app.domain.ledger import InsufficientCredits, LedgerError, Wallet, owner_type_of
from app.domain.limits import usage_credits
from app.domain.usage_terms import describe_debit, describe_units_left
from app.services import budgets as member_budgets
from app.services import views
from app.services.errors import OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_MESSAGE, status_for
from app.services.features import app_feature
from app.services.idempotency import Outcome, keyed_work, run_keyed
from app.services.ports import CommitOutcomeUnknown, DuplicateKey, UnitOfWork
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
        work, scope = self._usage_work(wallet_id, feature_key, quantity, occurred_at,
                                       idempotency_key, member)
        return run_keyed(self.writer.runner, work, scope, idempotency_key)

    def _usage_work(
        self,
        wallet_id: str,
        feature_key: str,
        quantity: int,
        occurred_at: datetime | None,
        idempotency_key: str | None,
        member: str | None,
    ) -> tuple[Callable[[UnitOfWork], Outcome], str]:
        """Validate a usage record (raising before any write) and return its keyed work."""
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
            # Refused for credits below the auto-recharge threshold: auto-recharge may buy
            # and the debit is tried again (WalletWriter.spend).
            written = self.writer.spend(
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
        scope = f"wallet:{wallet_id}"
        return keyed_work(self.writer.clock, scope, idempotency_key, request, action), scope

    def record_usage_batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Many usage records, each its own piece of work, so one refusal fails only itself.

        The pieces are submitted together, so they share transactions and commits (group
        commit) while each keeps its own savepoint, key and answer.
        """
        results: list[dict[str, Any] | None] = [None] * len(records)
        works: list[tuple[Callable[[UnitOfWork], Outcome], str]] = []
        keys: list[str | None] = []
        submitted: list[int] = []
        for index, record in enumerate(records):
            try:
                work, scope = self._usage_work(
                    record["wallet_id"], record["feature"], record["quantity"],
                    record.get("occurred_at"), record.get("idempotency_key"),
                    record.get("member"))
            except Exception as exc:
                results[index] = _record_result(index, exc)
                continue
            works.append((work, scope))
            keys.append(record.get("idempotency_key"))
            submitted.append(index)
        outcomes = self.writer.runner.run_many(works)
        for (work, scope), key, index, outcome in zip(works, keys, submitted, outcomes,
                                                      strict=True):
            if isinstance(outcome, DuplicateKey) and key:
                # Raced another request with this key (PostgreSQL): read the winner's answer.
                try:
                    outcome = run_keyed(self.writer.runner, work, scope, key)
                except Exception as exc:
                    outcome = exc
            results[index] = _record_result(index, outcome)
        return [result for result in results if result is not None]


def _record_result(index: int, outcome: Outcome | Exception) -> dict[str, Any]:
    """One batch record's answer: its result, or its error as the single endpoint gives it."""
    if isinstance(outcome, Outcome):
        return {"index": index, "status": outcome.status, "result": outcome.body,
                "replayed": outcome.replayed}
    if isinstance(outcome, LedgerError):
        error: dict[str, Any] = {"code": outcome.code, "message": outcome.message}
        if isinstance(outcome, InsufficientCredits):
            error.update(needed=outcome.needed, available=outcome.available)
        if isinstance(outcome, MemberBudgetExceeded):
            error.update(needed=outcome.needed,
                         available_to_member=outcome.available_to_member)
        return {"index": index, "status": status_for(outcome), "error": error}
    if isinstance(outcome, CommitOutcomeUnknown):
        # This record may be applied: never say it was not. Its key makes the retry safe.
        log.error("usage batch record %d: commit outcome unknown", index, exc_info=outcome)
        return {"index": index, "status": 503, "error": {
            "code": OUTCOME_UNKNOWN, "message": OUTCOME_UNKNOWN_MESSAGE}}
    # Records before this one may be committed: a 500 for the whole batch would say "not
    # applied" about them. This record's work was rolled back, so the per-record answer is the
    # truth; a retry with the same keys replays the rest.
    log.error("usage batch record %d failed", index, exc_info=outcome)
    return {"index": index, "status": 500, "error": {
        "code": "internal_error",
        "message": "internal error; this record was not applied (retry it)",
    }}
