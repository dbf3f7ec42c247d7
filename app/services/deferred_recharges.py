"""The worker's auto-recharge step: purchases that waited for one in flight, made once it
settled.

A debit below the threshold while a purchase is still being invoiced buys nothing (one in
flight at a time) but is remembered (app.services.recharge). Once the outbox invoices the
pending purchase (or it fails, which suspends auto-recharge), this step, run right after the
outbox in each worker pass, buys the one that waited: under the wallet's lock, through the
wallet writer, with every rule of a purchase (active, below the threshold, none in flight, under
`max_per_day`). Safe in several workers at once and beside racing requests: the lock and the
in-flight check make it exactly once.
"""

from __future__ import annotations

import logging

from app.domain.ledger import Wallet
from app.services.ports import UnitOfWork
from app.services.wallet_writer import WalletWriter

log = logging.getLogger("kinde_credits.recharge")


class DeferredRechargeService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def run_due(self, limit: int = 100) -> int:
        """Make the waiting purchases whose wallets have none in flight; how many were tried."""
        recharger = self.writer.recharger
        if recharger is None:
            return 0
        with self.writer.uow(False) as uow:
            ready = uow.recharges.deferred_ready(limit)
        for wallet_id in ready:
            try:
                self.follow_up(wallet_id)
            except Exception:
                log.exception("deferred auto-recharge of wallet %s failed; the others go on",
                              wallet_id)
        return len(ready)

    def follow_up(self, wallet_id: str) -> bool:
        """The waiting purchase of one wallet, in its own transaction; True if bought."""
        recharger = self.writer.recharger
        assert recharger is not None

        def work(uow: UnitOfWork) -> bool:
            now = self.writer.clock()

            def buy(wallet: Wallet) -> bool:
                return recharger.follow_up(uow, wallet, now)

            written = self.writer.write(uow, wallet_id, now, buy)
            return written is not None and written.result

        return self.writer.runner.run(work, f"wallet:{wallet_id}")
