"""Reads of a wallet and its ledger, and the invariant check over every wallet."""

from __future__ import annotations

from typing import Any

from app.domain.audit import problems
from app.domain.ledger import InvalidRequest, OwnerType, Wallet, owner_type_of
from app.domain.limits import MAX_PAGE_SIZE
from app.services import views
from app.services.ports import UnitOfWork, UnitOfWorkFactory
from app.services.sweeps import SweepService
from app.services.wallet_writer import WalletWriter


class ReadService:
    def __init__(self, writer: WalletWriter, sweeps: SweepService) -> None:
        self.writer = writer
        self.sweeps = sweeps

    def get_wallet(self, wallet_id: str) -> dict[str, Any]:
        """The wallet as the API shows it; a wallet with no credits yet reads as zero.

        One read transaction in the common case; a wallet with expiries due is swept first
        (a write), so a stale balance is never shown, and then read again.
        """
        owner_type = owner_type_of(wallet_id)
        with self.writer.uow(False) as uow:
            wallet = uow.wallets.read(wallet_id)
            if wallet is None or not wallet.needs_sweep(self.writer.clock()):
                return self._view(uow, wallet_id, owner_type, wallet)
        self.sweeps.sweep_wallet(wallet_id)
        with self.writer.uow(False) as uow:
            return self._view(uow, wallet_id, owner_type, uow.wallets.read(wallet_id))

    def _view(self, uow: UnitOfWork, wallet_id: str, owner_type: OwnerType,
              wallet: Wallet | None) -> dict[str, Any]:
        defaults = self.writer.alert_defaults
        if wallet is None:
            wallet = Wallet(id=wallet_id, owner_type=owner_type)
            return views.wallet_view(self.writer.catalog, wallet, [], defaults, exists=False)
        holds = uow.wallets.open_holds(wallet_id)
        last_purchase = uow.recharges.latest_auto(wallet_id)
        return views.wallet_view(self.writer.catalog, wallet, holds, defaults,
                                 last_purchase=last_purchase)

    def ledger_page(
        self, wallet_id: str, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        owner_type_of(wallet_id)
        if not (1 <= limit <= MAX_PAGE_SIZE):
            raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE_SIZE}")
        before: int | None = None
        if cursor:
            # Only plain ASCII digits within a 64-bit id, as this API gives them out.
            if not (cursor.isascii() and cursor.isdigit() and 0 < int(cursor) < 2**63):
                raise InvalidRequest("cursor is not one this API gave out")
            before = int(cursor)
        with self.writer.uow(False) as uow:
            rows = uow.wallets.entries(wallet_id, limit + 1, before)
        page = rows[:limit]
        return {
            "entries": [views.entry_view(e, e.id) for e in page],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        }


def verify_ledger(uow_factory: UnitOfWorkFactory, page_size: int = 500) -> dict[str, list[str]]:
    """Check every wallet's invariants; returns {wallet_id: [problems]} for the broken ones."""
    broken: dict[str, list[str]] = {}
    after: str | None = None
    while True:
        with uow_factory(False) as uow:
            audits = uow.wallets.audit(after, page_size)
        if not audits:
            return broken
        for audit in audits:
            found = problems(audit)
            if found:
                broken[audit.wallet_id] = found
        after = audits[-1].wallet_id

