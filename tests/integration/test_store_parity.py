"""The in-memory fake and the SQL store run the same scenarios and must agree.

Unit tests of the services run on tests/fakes/memory_store.py; these tests keep that fake
honest against the real store (SQLite, and PostgreSQL when available) wherever a service could
tell the difference: what `save` writes, resets and returns, list orders, profile updates,
idempotency claims, settings, and whole ledger scenarios through the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.sql.engine import make_engine
from adapters.sql.store import SqlStore
from app.domain.alerts import AlertSettings
from app.domain.catalog import Catalog
from app.domain.ledger import InsufficientCredits, Wallet
from app.domain.recharge import AutoRecharge
from app.services.ledger import LedgerService
from app.services.ports import DuplicateKey, UnitOfWorkFactory
from tests.conftest import FakeClock, _fresh_postgres
from tests.fakes.memory_store import MemoryStore

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(request: pytest.FixtureRequest) -> Iterator[UnitOfWorkFactory]:
    """Each scenario runs on the fake and on both SQL databases."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = _fresh_postgres(request.getfixturevalue("_postgres_database"))
    sql = SqlStore(make_engine(url, pool_size=5))
    yield sql
    sql.engine.dispose()


def _credited(store: UnitOfWorkFactory, wallet_id: str, *amounts: int) -> list[int]:
    with store(True) as uow:
        wallet = uow.wallets.lock_or_create(wallet_id, NOW)
        for n, amount in enumerate(amounts):
            wallet.credit(amount, kind="grant", reason=f"r{n}", description=f"+{amount}",
                          now=NOW + timedelta(seconds=n))
        ids = uow.wallets.save(wallet, NOW)
        uow.commit()
    return ids


def test_save_returns_entry_ids_in_order_and_resets_the_loaded_state(
    store: UnitOfWorkFactory,
) -> None:
    ids = _credited(store, "kp_a", 10, 20, 30)
    assert len(ids) == 3 and ids == sorted(ids)
    with store(True) as uow:
        wallet = uow.wallets.lock("kp_a")
        assert wallet is not None
        assert (wallet.balance, wallet.reference_at_load) == (60, wallet.reference_balance)
        wallet.reference_balance = 500
        wallet.debit(5, reason="r", description="-5", now=NOW)
        wallet.new_alerts.append("not stored")
        [entry_id] = uow.wallets.save(wallet, NOW)
        # Saved: nothing pending, and the saved state is the one now "loaded".
        assert entry_id > ids[-1]
        assert (wallet.new_entries, wallet.touched_blocks, wallet.new_blocks) == ([], {}, [])
        assert wallet.reference_at_load == 500
        assert uow.wallets.save(wallet, NOW) == []
        uow.commit()
    with store(False) as uow:
        loaded = uow.wallets.read("kp_a")
        assert loaded is not None
        assert (loaded.balance, loaded.reference_balance, loaded.reference_at_load) == (
            55, 500, 500)
        assert loaded.new_alerts == [] and loaded.new_entries == []
        entries = uow.wallets.entries("kp_a", limit=10)
        assert [e.amount for e in entries] == [-5, 30, 20, 10]  # newest first
        assert [e.id for e in uow.wallets.entries("kp_a", 10, before_id=entries[1].id)] == (
            [e.id for e in entries[2:]])


def test_save_writes_balances_but_settings_only_through_their_own_methods(
    store: UnitOfWorkFactory,
) -> None:
    _credited(store, "kp_a", 100)
    settings = AutoRecharge(True, 50, "starter")
    alerts = AlertSettings((10,), (), True)
    with store(True) as uow:
        wallet = uow.wallets.lock("kp_a")
        assert wallet is not None
        wallet.auto_recharge = settings  # not saved by save()
        wallet.alert_settings = alerts
        wallet.alerts_fired = frozenset({"percent:10"})
        uow.wallets.save(wallet, NOW)
        uow.commit()
    with store(True) as uow:
        wallet = uow.wallets.lock("kp_a")
        assert wallet is not None
        assert (wallet.auto_recharge, wallet.alert_settings) == (None, None)
        assert wallet.alerts_fired == frozenset({"percent:10"})
        uow.wallets.save_auto_recharge("kp_a", settings)
        uow.wallets.save_alert_settings("kp_a", alerts)
        uow.commit()
    with store(False) as uow:
        wallet = uow.wallets.read("kp_a")
        assert wallet is not None
        assert (wallet.auto_recharge, wallet.alert_settings) == (settings, alerts)


def test_holds_and_sweeps_come_back_in_the_same_order(store: UnitOfWorkFactory) -> None:
    _credited(store, "kp_a", 100)
    _credited(store, "kp_b", 100)
    with store(True) as uow:
        for wallet_id, minutes in (("kp_a", (30, 10, 20)), ("kp_b", (5,))):
            wallet = uow.wallets.lock(wallet_id)
            assert wallet is not None
            for m in minutes:
                wallet.place_hold(1, expires_at=NOW + timedelta(minutes=m), description=f"{m}",
                                  now=NOW)
            uow.wallets.save(wallet, NOW)
        uow.commit()
    with store(False) as uow:
        holds = uow.wallets.open_holds("kp_a")
        assert [h.description for h in holds] == ["10", "20", "30"]
        assert uow.wallets.get_hold(holds[0].id) == holds[0]
        assert uow.wallets.wallets_due_for_sweep(NOW + timedelta(hours=1), 10) == [
            "kp_b", "kp_a"]
        assert uow.wallets.wallets_due_for_sweep(NOW + timedelta(hours=1), 1) == ["kp_b"]
        assert uow.wallets.wallets_due_for_sweep(NOW, 10) == []


def test_profiles_update_alike(store: UnitOfWorkFactory) -> None:
    _credited(store, "kp_a", 1)
    with store(True) as uow:
        uow.wallets.update_profile("kp_a", billing_customer_id="cus_1", email="a@example.com")
        uow.wallets.update_profile("kp_a", email=None)
        uow.wallets.update_profile("kp_missing", email="x@example.com")  # no row: no change
        with pytest.raises(ValueError, match="not profile fields"):
            uow.wallets.update_profile("kp_a", balance="5")
        uow.commit()
    with store(False) as uow:
        profile = uow.wallets.profile("kp_a")
        assert profile is not None
        assert (profile.billing_customer_id, profile.email) == ("cus_1", None)
        assert uow.wallets.profile("kp_missing") is None
        assert uow.wallets.find_by_customer("cus_1") == "kp_a"
        assert uow.wallets.find_by_customer("cus_2") is None


def test_deferred_auto_recharges_alike(store: UnitOfWorkFactory) -> None:
    """A purchase that waited is listed once nothing is in flight, longest wait first; the
    first wait's time is kept; clearing forgets it."""
    for wallet in ("kp_a", "kp_b", "kp_c"):
        _credited(store, wallet, 1)
    with store(True) as uow:
        uow.recharges.add("r_b", "kp_b", "starter", 10, "1.00", "USD", "2026-11-24", NOW)
        uow.recharges.defer("kp_c", NOW + timedelta(minutes=1))
        uow.recharges.defer("kp_b", NOW)
        uow.recharges.defer("kp_a", NOW + timedelta(minutes=2))
        uow.recharges.defer("kp_c", NOW + timedelta(minutes=9))  # the first wait is kept
        uow.commit()
    with store(False) as uow:
        assert uow.recharges.deferred_ready(10) == ["kp_c", "kp_a"]  # kp_b: one in flight
        assert uow.recharges.deferred_ready(1) == ["kp_c"]
    with store(True) as uow:
        uow.recharges.mark_invoiced(["r_b"], NOW)
        uow.recharges.clear_deferred("kp_c")
        uow.recharges.clear_deferred("kp_missing")
        uow.commit()
    with store(False) as uow:
        assert uow.recharges.deferred_ready(10) == ["kp_b", "kp_a"]


def test_idempotency_keys_claim_and_store_alike(store: UnitOfWorkFactory) -> None:
    with store(True) as uow:
        assert uow.idempotency.claim("s", "k", "h1", NOW) is None
        uow.idempotency.put("s", "k", "h1", 201, {"ok": [1]}, NOW)
        uow.commit()
    with store(True) as uow:
        stored = uow.idempotency.claim("s", "k", "h2", NOW)
        assert stored is not None
        assert (stored.request_hash, stored.status_code, stored.body) == ("h1", 201, {"ok": [1]})
        stored.body["ok"].append(2)  # a caller's copy: the stored answer does not change
        again = uow.idempotency.get("s", "k")
        assert again is not None and again.body == {"ok": [1]}
        with pytest.raises(DuplicateKey):
            uow.idempotency.put("s", "k", "h3", 200, {}, NOW)
    with store(True) as uow:
        assert uow.idempotency.claim("s", "refused", "h", NOW) is None
        # Rolled back (a refused request stores nothing): the key is free again.
    with store(False) as uow:
        assert uow.idempotency.get("s", "refused") is None


def _ledger_story(ledger: LedgerService, clock: FakeClock) -> dict[str, Any]:
    ledger.grant("org_x", 300, "trial", expires_after_days=2)
    ledger.top_up_bundle("org_x", "starter")
    hold = ledger.place_hold("org_x", credits=250, expires_in_seconds=600)
    ledger.record_usage("org_x", "api_call", 150, idempotency_key="u1")
    ledger.record_usage("org_x", "api_call", 150, idempotency_key="u1")  # replayed
    ledger.set_alerts("org_x", {"thresholds_credits": [4000]})
    ledger.record_usage("org_x", "report_generation", 3)
    with pytest.raises(InsufficientCredits):
        ledger.record_usage("org_x", "report_generation", 1000)
    ledger.capture_hold(hold.body["hold_id"], 200)
    ledger.place_hold("org_x", credits=10, expires_in_seconds=60)
    clock.advance(days=3)
    swept = ledger.sweep_due()
    view = ledger.get_wallet("org_x")
    entries = ledger.ledger_page("org_x")["entries"]
    return {
        "swept": swept,
        "view": {k: v for k, v in view.items() if k not in ("blocks",)},
        "blocks": [(b["remaining"], b["expires_at"]) for b in view["blocks"]],
        "entries": [(e["kind"], e["amount"], e["balance_after"], e["description"])
                    for e in entries],
    }


def _without_ids(value: Any) -> Any:
    """Ids are random or database-assigned; everything else must match."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if not k.endswith("id")}
    if isinstance(value, list | tuple):
        return [_without_ids(v) for v in value]
    return value


def test_a_ledger_story_reads_the_same_on_the_fake_and_the_database(
    db_url: str, catalog: Catalog
) -> None:
    memory_clock, sql_clock = FakeClock(), FakeClock()
    on_memory = _ledger_story(LedgerService(MemoryStore(), catalog, memory_clock), memory_clock)
    sql = SqlStore(make_engine(db_url, pool_size=5))
    try:
        on_sql = _ledger_story(LedgerService(sql, catalog, sql_clock), sql_clock)
    finally:
        sql.engine.dispose()
    assert _without_ids(on_memory) == _without_ids(on_sql)


def test_the_fake_is_a_unit_of_work_factory() -> None:
    # The module-level assignments in tests/fakes/memory_store.py are what mypy checks; this
    # keeps an eye on the runtime side: every port is there.
    with MemoryStore()(False) as uow:
        for name in ("wallets", "idempotency", "budgets", "recharges", "inbox", "meters",
                     "billing", "dashboard"):
            assert getattr(uow, name) is not None
        assert isinstance(uow.wallets.read("kp_none") or Wallet("kp_none", "user"), Wallet)
