"""Team budgets on org wallets: the member-spend bookkeeping of debits, caps, the members
report and the spend pre-check.

How caps stay exact under concurrency: every function that reads or changes a member's spend
runs inside the ledger's unit of work for the debit, *after* that unit of work locked the org
wallet (`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). Two debits of one
org therefore never both read the member's spend before either wrote it: the second waits for
the wallet lock and then sees the first one's spend. The spend row and the ledger entry commit
or roll back together, so a refused or failed debit leaves neither.

The rules themselves (windows, caps, what counts) are in `app.domain.budgets`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.domain.budgets import (
    Caps,
    MemberBudgetExceeded,
    admit,
    day_key,
    month_key,
    next_day_start,
    next_month_start,
    remaining,
    require_org_wallet,
    validate_member,
)
from app.domain.ledger import InsufficientCredits, LedgerError, Wallet, owner_type_of
from app.domain.limits import usage_credits
from app.services import views
from app.services.features import app_feature
from app.services.idempotency import Outcome, run_write
from app.services.ports import BudgetRepository, MemberRecord, SpendLine, UnitOfWork

if TYPE_CHECKING:
    from app.services.ledger import LedgerService


def budgets_of(uow: UnitOfWork) -> BudgetRepository:
    return uow.budgets


def member_for(wallet_id: str, member: Any) -> str | None:
    """Validate a named member before any unit of work: 422 for a bad id or a user wallet."""
    if member is None:
        return None
    require_org_wallet(wallet_id)
    return validate_member(member)


# -- inside the ledger's unit of work (the wallet is locked) ----------------------------------


def admit_debit(uow: UnitOfWork, wallet: Wallet, member: str, amount: int,
                now: datetime) -> None:
    """Refuse with MemberBudgetExceeded if `amount` would take `member` past a cap."""
    repo = budgets_of(uow)
    caps = repo.caps(wallet.id, member)
    if not caps.any:
        return
    admit(member, caps, repo.usage(wallet.id, member, now), amount,
          wallet_spendable=wallet.available + wallet.overdraft_limit)


def record_spend(uow: UnitOfWork, wallet_id: str, member: str, feature: str | None,
                 credits: int, units: int | None, now: datetime) -> None:
    budgets_of(uow).add_spend(wallet_id, member, feature or "", credits, units or 0, now)


def note_hold(uow: UnitOfWork, hold_id: str, wallet_id: str, member: str) -> None:
    budgets_of(uow).add_hold(hold_id, wallet_id, member)


def hold_member(uow: UnitOfWork, hold_id: str) -> str | None:
    return budgets_of(uow).hold_member(hold_id)


# -- use cases -----------------------------------------------------------------------------


class BudgetService:
    """Set caps, report members' spend, and answer "would this usage be allowed now?"."""

    def __init__(self, ledger: LedgerService) -> None:
        self.ledger = ledger

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.ledger.clock

    def set_budget(self, wallet_id: str, member: str, data: dict[str, Any], *,
                   idempotency_key: str | None = None) -> Outcome:
        owner_type_of(wallet_id)
        require_org_wallet(wallet_id)
        validate_member(member)
        Caps().updated(data)  # refuse a bad body before opening a transaction

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            # Under the wallet lock, so a cap change is ordered with the debits around it.
            uow.wallets.lock_or_create(wallet_id, now)
            repo = budgets_of(uow)
            caps = repo.caps(wallet_id, member).updated(data)
            repo.set_caps(wallet_id, member, caps, now)
            return 200, {"wallet_id": wallet_id, "member": member, **caps.as_dict()}

        request = {"op": "member_budget", "member": member, **data}
        writer = self.ledger.writer
        return run_write(writer.runner, writer.clock, f"wallet:{wallet_id}", idempotency_key,
                         request, action)

    def members(self, wallet_id: str, only: str | None = None) -> dict[str, Any]:
        owner_type_of(wallet_id)
        require_org_wallet(wallet_id)
        now = self.clock()
        with self.ledger.uow(False) as uow:
            records = budgets_of(uow).members(wallet_id, now)
        if only is not None:
            records = [r for r in records if r.member == only] or [MemberRecord(only)]
        return {
            "wallet_id": wallet_id,
            "day": day_key(now),
            "month": month_key(now),
            "day_resets_at": views.iso(next_day_start(now)),
            "month_resets_at": views.iso(next_month_start(now)),
            "members": [_member_view(r) for r in records],
        }

    def check(self, wallet_id: str, feature_key: str, quantity: Any,
              member: str | None = None) -> dict[str, Any]:
        """What a debit of this usage would do now, without writing anything.

        The same rules in the same order as `LedgerService.record_usage`: the member's caps
        first, then the wallet's available credits and overdraft limit. Blocks and holds that
        are due to expire are expired in memory only (the read transaction is never committed).
        """
        feature = app_feature(self.ledger.writer, feature_key)
        credits = usage_credits(feature, quantity)
        owner_type_of(wallet_id)
        member = member_for(wallet_id, member)
        with self.ledger.uow(False) as uow:
            now = self.clock()
            wallet = uow.wallets.read(wallet_id)
            if wallet is None:
                spendable = 0
            else:
                wallet = self.ledger.writer.sweep(uow, wallet, now)
                spendable = wallet.available + wallet.overdraft_limit
            left: int | None = None
            window: str | None = None
            if member is not None:
                repo = budgets_of(uow)
                left, window = remaining(repo.caps(wallet_id, member),
                                    repo.usage(wallet_id, member, now))
        available = max(spendable, 0) if left is None else min(max(spendable, 0), left)
        body: dict[str, Any] = {"allowed": True, "credits": credits, "available": available,
                                "wallet_available": max(spendable, 0)}
        if member is not None:
            body["member"] = member
            body["member_remaining"] = left
        refusal: LedgerError | None = None
        if member is not None and left is not None and credits > left:
            refusal = MemberBudgetExceeded(member, credits, min(left, max(spendable, 0)),
                                           window or "")
        elif credits > spendable:
            refusal = InsufficientCredits(credits, spendable)
        if refusal is not None:
            body.update(allowed=False, reason=refusal.message, code=refusal.code)
        return body


def _window_view(lines: list[SpendLine], cap: int | None, held: int) -> dict[str, Any]:
    spent = sum(line.credits for line in lines)
    return {
        "spent": spent,
        "cap": cap,
        "remaining": None if cap is None else max(cap - spent - held, 0),
        "by_feature": [
            {"feature": line.feature or None, "credits": line.credits, "units": line.units}
            for line in sorted(lines, key=lambda line: line.feature)
        ],
    }


def _member_view(record: MemberRecord) -> dict[str, Any]:
    return {
        "member": record.member,
        "budget": record.caps.as_dict(),
        "held": record.held,
        "today": _window_view(record.today, record.caps.credits_per_day, record.held),
        "this_month": _window_view(record.month, record.caps.credits_per_month, record.held),
    }
