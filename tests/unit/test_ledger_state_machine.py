"""Hypothesis state machine: random grants, purchases, usage, holds, expiry and retries.

A simple model (a list of (amount, expiry) blocks and the idempotency results) predicts every
answer; the invariants are checked after every step. Runs on the in-memory store and on SQLite.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.store import SqlStore
from app.domain.catalog import load_catalog
from app.domain.ledger import CaptureExceedsHold, HoldNotOpen, InsufficientCredits
from app.services.ledger import IdempotencyConflict, LedgerService, verify_ledger
from app.settings import DEFAULT_CATALOG
from tests.conftest import FakeClock
from tests.fakes.memory_store import MemoryStore

CATALOG = load_catalog(DEFAULT_CATALOG)
WALLET = "kp_machine"
_TEMPLATE: dict[str, Path] = {}


class LedgerMachine(RuleBasedStateMachine):
    backend = "memory"

    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock()
        if self.backend == "memory":
            self.store: Any = MemoryStore()
        else:
            if "db" not in _TEMPLATE:
                path = Path(tempfile.mkdtemp()) / "template.db"
                upgrade(f"sqlite:///{path}")
                _TEMPLATE["db"] = path
            self.tmp = Path(tempfile.mkdtemp())
            shutil.copy(_TEMPLATE["db"], self.tmp / "t.db")
            self.store = SqlStore(make_engine(f"sqlite:///{self.tmp / 't.db'}", pool_size=2))
        self.ledger = LedgerService(self.store, CATALOG, self.clock)
        # Model: live blocks as [remaining, expires_at or None]; holds id -> amount.
        self.blocks: list[list[Any]] = []
        self.arrears = 0
        self.holds: dict[str, tuple[int, Any]] = {}
        self.keys: dict[str, tuple[str, int, int]] = {}  # key -> (feature, qty, balance after)

    def teardown(self) -> None:
        if self.backend != "memory":
            self.store.engine.dispose()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- model helpers ------------------------------------------------------------------

    def _expire_model(self) -> None:
        now = self.clock()
        # Holds past their expiry first, then blocks; open holds keep up to the held amount of
        # the soonest-expiring credits past their expiry (they do not expire under a hold).
        self.holds = {k: v for k, v in self.holds.items() if v[1] > now}
        keep = sum(a for a, _ in self.holds.values())
        due = sorted((i for i, b in enumerate(self.blocks) if b[1] is not None and b[1] <= now),
                     key=lambda i: (self.blocks[i][1], i))
        for i in due:
            kept = min(self.blocks[i][0], keep)
            keep -= kept
            self.blocks[i][0] = kept
        self.blocks = [b for b in self.blocks if b[0] > 0]

    def model_balance(self) -> int:
        self._expire_model()
        return sum(b[0] for b in self.blocks) - self.arrears

    def model_available(self) -> int:
        return self.model_balance() - sum(a for a, _ in self.holds.values())

    def _credit_model(self, amount: int, expires_days: int | None) -> None:
        paid = min(self.arrears, amount)
        self.arrears -= paid
        expiry = self.clock() + timedelta(days=expires_days) if expires_days else None
        if amount - paid:
            self.blocks.append([amount - paid, expiry])

    def _debit_model(self, amount: int, *, expire: bool = True) -> None:
        if expire:
            self._expire_model()
        now = self.clock()
        # Soonest expiry first, never-expiring last (ties don't change any balance).
        order = sorted(range(len(self.blocks)),
                       key=lambda i: (self.blocks[i][1] is None, self.blocks[i][1] or now, i))
        left = amount
        for i in order:
            take = min(self.blocks[i][0], left)
            self.blocks[i][0] -= take
            left -= take
        self.blocks = [b for b in self.blocks if b[0] > 0]
        self.arrears += left

    # -- rules --------------------------------------------------------------------------

    @rule(credits=st.integers(1, 500), days=st.one_of(st.none(), st.integers(1, 5)))
    def grant(self, credits: int, days: int | None) -> None:
        self._expire_model()
        out = self.ledger.grant(WALLET, credits, "test grant", expires_after_days=days)
        self._credit_model(credits, days)
        assert out.body["balance"] == self.model_balance()

    @rule()
    def purchase(self) -> None:
        self._expire_model()
        self.ledger.top_up_bundle(WALLET, "starter")
        self._credit_model(5000, CATALOG.bundles["starter"].expires_after_days)

    @rule(feature=st.sampled_from(["api_call", "file_conversion", "report_generation"]),
          quantity=st.integers(1, 40), key=st.one_of(st.none(), st.sampled_from("abcde")))
    def usage(self, feature: str, quantity: int, key: str | None) -> None:
        cost = quantity * CATALOG.features[feature].credits_per_unit
        available = self.model_available()
        if key is not None and key in self.keys:
            f, q, after = self.keys[key]
            if (f, q) == (feature, quantity):
                out = self.ledger.record_usage(WALLET, feature, quantity, idempotency_key=key)
                assert out.replayed and out.body["balance"] == after
            else:
                with pytest.raises(IdempotencyConflict):
                    self.ledger.record_usage(WALLET, feature, quantity, idempotency_key=key)
            return
        if cost > available:
            with pytest.raises(InsufficientCredits):
                self.ledger.record_usage(WALLET, feature, quantity, idempotency_key=key)
            return
        out = self.ledger.record_usage(WALLET, feature, quantity, idempotency_key=key)
        self._debit_model(cost)
        assert out.body["balance"] == self.model_balance()
        if key is not None:
            self.keys[key] = (feature, quantity, out.body["balance"])

    @rule(credits=st.integers(1, 300))
    def kinde_usage(self, credits: int) -> None:
        """Usage that already happened: never refused, may create arrears."""
        with self.store(True) as uow:
            wallet = uow.wallets.lock_or_create(WALLET, self.clock())
            wallet.debit(credits, reason="kinde:storage", description="x", now=self.clock(),
                         refusable=False)
            uow.wallets.save(wallet, self.clock())
            uow.commit()
        self._debit_model(credits)

    @rule(credits=st.integers(1, 300), seconds=st.integers(1, 3600))
    def hold(self, credits: int, seconds: int) -> None:
        if credits > self.model_available():
            with pytest.raises(InsufficientCredits):
                self.ledger.place_hold(WALLET, credits=credits, expires_in_seconds=seconds)
            return
        out = self.ledger.place_hold(WALLET, credits=credits, expires_in_seconds=seconds)
        self.holds[out.body["hold_id"]] = (credits, self.clock() + timedelta(seconds=seconds))

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data(), capture=st.booleans(), percent=st.integers(1, 100))
    def settle(self, data: st.DataObject, capture: bool, percent: int) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        self._expire_model()
        if hold_id not in self.holds:
            with pytest.raises(HoldNotOpen):
                self.ledger.release_hold(hold_id)
            return
        amount, _ = self.holds[hold_id]
        if capture:
            with pytest.raises(CaptureExceedsHold):
                self.ledger.capture_hold(hold_id, amount + 1)
            part = max(1, amount * percent // 100)
            self.ledger.capture_hold(hold_id, part)
            # Drawn while the hold still reserves its credits, then the rest may expire.
            self._debit_model(part, expire=False)
        else:
            self.ledger.release_hold(hold_id)
        del self.holds[hold_id]
        self._expire_model()

    # Minutes too, so that credits fall due while a hold (at most an hour here) is open.
    @rule(minutes=st.one_of(st.integers(1, 120), st.integers(60, 72 * 60)))
    def time_passes(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def matches_model_and_invariants_hold(self) -> None:
        view = self.ledger.get_wallet(WALLET)
        assert view["balance"] == self.model_balance()
        assert view["available"] == self.model_available()
        assert verify_ledger(self.store) == {}


class SqliteLedgerMachine(LedgerMachine):
    backend = "sqlite"


TestLedgerMachineMemory = LedgerMachine.TestCase
TestLedgerMachineMemory.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachineSqlite = SqliteLedgerMachine.TestCase
TestLedgerMachineSqlite.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
