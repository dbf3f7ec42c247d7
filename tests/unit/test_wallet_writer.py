"""The wallet writer: one path, its steps in order, nothing written when nothing changed."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.domain.catalog import Catalog
from app.domain.ledger import InsufficientCredits, Wallet
from app.services.ledger import LedgerService
from app.services.ports import UnitOfWork
from app.services.wallet_writer import Saved, WalletWriter
from tests.conftest import FakeClock
from tests.fakes.memory_store import MemoryStore


def _writer(store: MemoryStore, catalog: Catalog, clock: FakeClock,
            steps: list[str]) -> WalletWriter:
    writer = WalletWriter(store, catalog, clock)

    def before(uow: UnitOfWork, wallet: Wallet, now: datetime) -> None:
        steps.append("sweep")

    def after(uow: UnitOfWork, wallet: Wallet, saved: Saved, now: datetime) -> None:
        steps.append(f"after:{[e.kind for _, e in saved]}")

    writer.before_sweep.append(before)
    writer.after_write.append(after)
    return writer


def test_steps_run_in_order_and_expiry_comes_before_the_change(
    memory_store: MemoryStore, catalog: Catalog, clock: FakeClock
) -> None:
    ledger = LedgerService(memory_store, catalog, clock)
    ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    clock.advance(days=2)
    steps: list[str] = []
    writer = _writer(memory_store, catalog, clock, steps)

    def change(wallet: Wallet) -> int:
        steps.append(f"change:{wallet.balance}")  # the expired trial is gone already
        wallet.credit(10, kind="grant", reason="later", description="+10 credits: later",
                      now=clock())
        return wallet.balance

    with memory_store(True) as uow:
        written = writer.write(uow, "kp_a", clock(), change)
        uow.commit()
    assert written is not None and written.result == 10
    assert steps == ["sweep", "change:0", "after:['expiry', 'grant']"]
    assert [e.kind for _, e in written.saved] == ["expiry", "grant"]


def test_a_write_that_changes_nothing_writes_nothing(
    memory_store: MemoryStore, catalog: Catalog, clock: FakeClock
) -> None:
    LedgerService(memory_store, catalog, clock).grant("kp_a", 100, "trial")
    steps: list[str] = []
    writer = _writer(memory_store, catalog, clock, steps)
    with memory_store(True) as uow:
        written = writer.write(uow, "kp_a", clock(), lambda wallet: None)
    assert written is not None and written.saved == []
    assert steps == ["sweep"]  # no save, so no after-write hooks


def test_a_missing_wallet_is_created_refused_or_skipped(
    memory_store: MemoryStore, catalog: Catalog, clock: FakeClock
) -> None:
    writer = WalletWriter(memory_store, catalog, clock)
    with memory_store(True) as uow:
        assert writer.write(uow, "kp_none", clock(), lambda wallet: None) is None
        with pytest.raises(InsufficientCredits):
            writer.write(uow, "kp_none", clock(), lambda wallet: None,
                         missing=lambda: InsufficientCredits(1, 0))
        created = writer.write(uow, "kp_new", clock(), lambda wallet: wallet.id, create=True)
    assert created is not None and created.result == "kp_new"


def test_alerts_describe_the_state_the_write_ends_in(
    memory_store: MemoryStore, catalog: Catalog, clock: FakeClock
) -> None:
    ledger = LedgerService(memory_store, catalog, clock)
    ledger.grant("kp_a", 1000, "welcome")
    writer = ledger.writer
    with memory_store(True) as uow:
        written = writer.write(uow, "kp_a", clock(), lambda wallet: wallet.debit(
            1000, reason="x", description="-1,000 credits", now=clock()))
    assert written is not None
    assert written.wallet.alerts_fired  # the thresholds crossed are remembered
    later = clock() + timedelta(seconds=1)
    with memory_store(True) as uow:
        again = writer.write(uow, "kp_a", later, lambda wallet: None)
    assert again is not None and again.wallet.new_alerts == []
