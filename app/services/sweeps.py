"""Expiry over time: blocks and holds that fell due, swept through the wallet writer."""

from __future__ import annotations

import logging

from app.domain.ledger import Wallet
from app.services.wallet_writer import WalletWriter

log = logging.getLogger("kinde_credits.ledger")


class SweepService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def sweep_wallet(self, wallet_id: str) -> None:
        """Apply what is due on one wallet (the writer sweeps; the change itself is empty)."""
        with self.writer.uow(True) as uow:
            wallet = uow.wallets.read(wallet_id)
            if wallet is None or not wallet.needs_sweep(self.writer.clock()):
                return
            self.writer.write(uow, wallet_id, self.writer.clock(), _nothing)
            uow.commit()

    def sweep_due(self, limit: int = 500) -> int:
        """Expire blocks and holds across wallets; run by the worker on a timer.

        Wallets come longest-overdue first. One that fails to sweep is logged and skipped, so
        it cannot hold up the others (it stays due and is tried again on the next pass).
        """
        with self.writer.uow(False) as uow:
            due = uow.wallets.wallets_due_for_sweep(self.writer.clock(), limit)
        for wallet_id in due:
            try:
                self.sweep_wallet(wallet_id)
            except Exception:
                log.exception("expiry sweep of wallet %s failed; the others go on", wallet_id)
        return len(due)


def _nothing(wallet: Wallet) -> None:
    """The change of a sweep: none beyond what the writer's sweep step applies."""
