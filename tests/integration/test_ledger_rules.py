"""Ledger rules on real databases (SQLite and PostgreSQL), with time moved by a FakeClock:

- credits under an open hold do not expire while the hold is open; what the hold no longer
  needs expires when it is captured, released or expires;
- a capture is never larger than its hold;
- a low-balance alert describes the balance the write ends at (a credit in the same write that
  lifts the balance above the threshold means no alert);
- the expiry sweep is ordered and one wallet that fails to sweep does not stop the others;
- the revenue report reads one consistent snapshot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from adapters.local_keys import LocalKeyring
from adapters.sql.store import SqlStore
from app.bootstrap import Container, build_container
from app.domain.ledger import CaptureExceedsHold, HoldNotOpen
from app.services.ledger import LedgerService, verify_ledger
from app.settings import DEFAULT_CATALOG, Settings
from tests.conftest import FakeClock


def _view(ledger: LedgerService, wallet: str) -> tuple[int, int, int]:
    view = ledger.get_wallet(wallet)
    return view["balance"], view["held"], view["available"]


def _kinds(ledger: LedgerService, wallet: str) -> list[tuple[str, int]]:
    entries = ledger.ledger_page(wallet, limit=200)["entries"]
    return [(e["kind"], e["amount"]) for e in reversed(entries)]


# -- defect 7: credits expiring under an open hold -------------------------------------------


def test_capture_after_the_credits_expired_stays_covered(
    sql_ledger: LedgerService, clock: FakeClock
) -> None:
    sql_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    hold = sql_ledger.place_hold("kp_a", credits=100, expires_in_seconds=3 * 24 * 3600)
    clock.advance(days=2)  # the block is past its expiry, the hold is still open
    assert sql_ledger.sweep_due() == 1  # the block fell due: the sweep visits the wallet,
    assert sql_ledger.sweep_due() == 0  # keeps the held credits, and does not come back
    assert _view(sql_ledger, "kp_a") == (100, 100, 0)
    out = sql_ledger.capture_hold(hold.body["hold_id"])
    assert out.body["balance"] == 0 and out.body["available"] == 0
    assert _view(sql_ledger, "kp_a") == (0, 0, 0)
    assert verify_ledger(sql_ledger.uow) == {}
    assert ("expiry", -100) not in _kinds(sql_ledger, "kp_a")


def test_partial_capture_after_expiry_expires_the_rest(
    sql_ledger: LedgerService, clock: FakeClock
) -> None:
    sql_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    sql_ledger.grant("kp_a", 30, "forever")
    hold = sql_ledger.place_hold("kp_a", credits=120, expires_in_seconds=3 * 24 * 3600)
    clock.advance(days=2)
    # The hold reserves the soonest-expiring credits: all 100 of the trial stay for now.
    assert _view(sql_ledger, "kp_a") == (130, 120, 10)
    out = sql_ledger.capture_hold(hold.body["hold_id"], 60)
    # The capture drew the kept-back (expired) credits first; their rest expired at once.
    assert (out.body["balance"], out.body["available"]) == (30, 30)
    assert _kinds(sql_ledger, "kp_a")[-2:] == [("capture", -60), ("expiry", -40)]
    assert verify_ledger(sql_ledger.uow) == {}


def test_release_after_expiry_expires_what_was_kept(
    sql_ledger: LedgerService, clock: FakeClock
) -> None:
    sql_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    hold = sql_ledger.place_hold("kp_a", credits=80, expires_in_seconds=3 * 24 * 3600)
    clock.advance(days=2)
    assert _view(sql_ledger, "kp_a") == (80, 80, 0)  # the 20 not held expired on time
    sql_ledger.release_hold(hold.body["hold_id"])
    assert _view(sql_ledger, "kp_a") == (0, 0, 0)
    assert _kinds(sql_ledger, "kp_a")[-3:] == [("expiry", -20), ("release", 0), ("expiry", -80)]
    assert verify_ledger(sql_ledger.uow) == {}


def test_hold_expiry_after_block_expiry_frees_and_expires(
    sql_ledger: LedgerService, clock: FakeClock
) -> None:
    sql_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    hold = sql_ledger.place_hold("kp_a", credits=100, expires_in_seconds=2 * 24 * 3600)
    clock.advance(days=1, hours=1)
    assert _view(sql_ledger, "kp_a") == (100, 100, 0)
    clock.advance(days=2)  # now the hold is past its expiry too
    assert sql_ledger.sweep_due() == 1
    assert _view(sql_ledger, "kp_a") == (0, 0, 0)
    with pytest.raises(HoldNotOpen):
        sql_ledger.capture_hold(hold.body["hold_id"])
    assert verify_ledger(sql_ledger.uow) == {}


def test_a_hold_is_no_way_to_keep_expiring_credits(
    sql_ledger: LedgerService, clock: FakeClock
) -> None:
    """Hold the credits about to expire, spend the rest, then release the hold (or capture a
    hold placed after they expired): the held credits still expire."""
    sql_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    sql_ledger.grant("kp_a", 100, "goodwill")
    first = sql_ledger.place_hold("kp_a", credits=100, expires_in_seconds=3 * 24 * 3600)
    clock.advance(days=2)
    sql_ledger.record_usage("kp_a", "api_call", 50)
    second = sql_ledger.place_hold("kp_a", credits=50, expires_in_seconds=3600)
    sql_ledger.capture_hold(second.body["hold_id"])
    sql_ledger.release_hold(first.body["hold_id"])
    # The trial's 100 were kept only for the first hold; 50 + 50 of goodwill were spent.
    assert _view(sql_ledger, "kp_a") == (0, 0, 0)
    assert _kinds(sql_ledger, "kp_a")[-2:] == [("release", 0), ("expiry", -100)]
    assert verify_ledger(sql_ledger.uow) == {}


# -- defect 8: capture larger than the hold ---------------------------------------------------


def test_capture_larger_than_the_hold_is_refused(
    sql_ledger: LedgerService, sql_store: SqlStore
) -> None:
    sql_ledger.grant("kp_a", 1000, "welcome")
    hold = sql_ledger.place_hold("kp_a", credits=100)
    with pytest.raises(CaptureExceedsHold) as refused:
        sql_ledger.capture_hold(hold.body["hold_id"], 700)
    assert refused.value.code == "capture_exceeds_hold"
    assert "100" in refused.value.message and "700" in refused.value.message
    assert _view(sql_ledger, "kp_a") == (1000, 100, 900)
    assert [k for k, _ in _kinds(sql_ledger, "kp_a")] == ["grant", "hold"]
    # The hold is still open and can be captured for what it holds.
    assert sql_ledger.capture_hold(hold.body["hold_id"], 100).body["balance"] == 900


# -- suspected: an alert for a balance the same write raises again ----------------------------


def _make_container(db_url: str, tmp: Path, clock: FakeClock) -> Container:
    settings = Settings.from_env({
        "DATABASE_URL": db_url, "CREDITS_CATALOG": str(DEFAULT_CATALOG),
        "KINDE_CREDITS_VAR_DIR": str(tmp),
    })
    keyring = LocalKeyring.load_or_create(tmp / "k.pem")
    return build_container(settings, key_source=keyring.key_source(), clock=clock)


@pytest.fixture
def container(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Container]:
    c = _make_container(db_url, tmp_path, clock)
    yield c
    c.close()


def _notices(c: Container) -> list[dict[str, Any]]:
    with c.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT payload FROM outbox WHERE kind = 'notify_log' "
                                 "ORDER BY id"))
        return [json.loads(r[0]) for r in rows]


def test_no_alert_when_the_same_write_credits_above_the_threshold(
    container: Container, clock: FakeClock
) -> None:
    container.ledger.grant("kp_a", 900, "trial", expires_after_days=1)
    container.ledger.grant("kp_a", 100, "forever")
    clock.advance(days=2)
    # One write: the trial expires (100 left: below 50 %, 25 % and 10 % of 1,000) and the
    # grant lifts the balance to 1,100. The customer never ends at 100: no alert.
    out = container.ledger.grant("kp_a", 1000, "goodwill")
    assert out.body["balance"] == 1100
    assert _notices(container) == []
    # The thresholds are armed against the new balance: the next real crossing alerts once.
    container.ledger.record_usage("kp_a", "report_generation", 11)  # 550: 50 % of 1,100
    [alert] = _notices(container)
    assert alert["data"]["threshold_percent"] == 50 and alert["data"]["balance"] == 550


def test_alert_in_a_write_that_also_credits_describes_the_final_balance(
    container: Container, clock: FakeClock
) -> None:
    container.ledger.grant("kp_a", 900, "trial", expires_after_days=1)
    container.ledger.grant("kp_a", 100, "forever")
    container.ledger.set_alerts("kp_a", {"thresholds_percent": [],
                                         "thresholds_credits": [500]})
    clock.advance(days=2)
    # Expiry takes the balance to 100, the grant lifts it to 300: still below 500, so one
    # alert, for the 300 the wallet really has.
    container.ledger.grant("kp_a", 200, "goodwill")
    [alert] = _notices(container)
    assert alert["type"] == "credits.balance_low"
    assert alert["data"]["balance"] == 300 and alert["data"]["threshold_credits"] == 500
    assert alert["data"]["message"].startswith("300 credits left")


# -- suspected: the sweep stops at a wallet that always fails ---------------------------------


def test_one_failing_wallet_does_not_stop_the_sweep(
    sql_ledger: LedgerService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wallets = [f"kp_w{i}" for i in range(5)]
    for i, wallet in enumerate(wallets):
        sql_ledger.grant(wallet, 10, "trial", expires_after_days=1 + i)
    clock.advance(days=10)
    with sql_ledger.uow(False) as uow:
        # Ordered by when they fell due, oldest first.
        assert uow.wallets.wallets_due_for_sweep(clock(), 100) == wallets
        assert uow.wallets.wallets_due_for_sweep(clock(), 2) == wallets[:2]
    original = sql_ledger.sweeps.sweep_wallet

    def flaky(wallet_id: str) -> None:
        if wallet_id == "kp_w0":
            raise RuntimeError("this wallet cannot be swept")
        original(wallet_id)

    monkeypatch.setattr(sql_ledger.sweeps, "sweep_wallet", flaky)
    with caplog.at_level(logging.ERROR, logger="kinde_credits.ledger"):
        assert sql_ledger.sweep_due() == 5
        assert sql_ledger.sweep_due() == 1  # only the failing one is still due
    assert "kp_w0" in caplog.text
    monkeypatch.undo()
    for wallet in wallets[1:]:
        with sql_ledger.uow(False) as uow:
            stored = uow.wallets.read(wallet)
        assert stored is not None and stored.balance == 0
    assert verify_ledger(sql_ledger.uow) == {}


# -- suspected: the revenue report reads two snapshots ----------------------------------------


def test_revenue_report_reads_one_snapshot(
    sql_ledger: LedgerService, db_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    from click.testing import CliRunner
    from sqlalchemy.engine import Engine

    from app.cli import main

    sql_ledger.top_up_bundle("kp_a", "starter")
    sql_ledger.record_usage("kp_a", "report_generation", 20)  # 1,000 of 5,000 used
    clock.advance(days=400)  # the pack is past its expiry, not yet swept

    # A sweep commits (on its own connection) right after the report's first query.
    state = {"armed": True}

    def sweep_between(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (state["armed"] and statement.lstrip().upper().startswith("SELECT")
                and conn.engine is not sql_ledger.uow.engine):  # type: ignore[attr-defined]
            state["armed"] = False
            assert sql_ledger.sweep_due() == 1

    event.listen(Engine, "after_cursor_execute", sweep_between)
    try:
        result = CliRunner().invoke(
            main, ["report", "revenue", "--json", "--since", "2026-01-01"],
            env={"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)},
        )
    finally:
        event.remove(Engine, "after_cursor_execute", sweep_between)
    assert result.exit_code == 0, result.output
    assert not state["armed"]  # the sweep did run in the middle of the report
    usd = json.loads(result.output)["currencies"]["USD"]
    # Before the sweep (4,000 deferred) or after it (4,000 breakage), never a mix of both.
    assert usd["credits"]["used"] == 1000
    assert Decimal(usd["recognised"]) == Decimal("9.80")
    assert Decimal(usd["recognised"]) + Decimal(usd["breakage"]) + Decimal(
        usd["closing_deferred"]) == Decimal("49.00")
