"""The same ledger tests on real SQLite and real PostgreSQL through the SQL store."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from adapters.sql import schema as t
from adapters.sql.store import SqlStore
from app.domain.ledger import InsufficientCredits
from app.services.ledger import IdempotencyConflict, LedgerService, verify_ledger
from tests.conftest import FakeClock


def test_usage_and_top_up_round_trip(sql_ledger: LedgerService) -> None:
    sql_ledger.top_up_bundle("kp_a", "starter")
    out = sql_ledger.record_usage("kp_a", "report_generation", 2)
    assert out.body["balance"] == 4900
    assert out.body["entry"]["description"] == "-100 credits for Report Generation (2 reports)"
    view = sql_ledger.get_wallet("kp_a")
    assert (view["balance"], view["available"], view["held"]) == (4900, 4900, 0)
    assert view["blocks"][0]["remaining"] == 4900
    page = sql_ledger.ledger_page("kp_a")
    assert [e["kind"] for e in page["entries"]] == ["usage", "purchase"]
    assert page["entries"][0]["created_at"].endswith("Z")
    assert verify_ledger(sql_ledger.uow) == {}


def test_refused_usage_writes_nothing(sql_ledger: LedgerService, sql_store: SqlStore) -> None:
    sql_ledger.grant("kp_a", 10, "welcome")
    with pytest.raises(InsufficientCredits):
        sql_ledger.record_usage("kp_a", "report_generation", 1, idempotency_key="k")
    with sql_store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM entries")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 0


def test_idempotency_on_the_database(sql_ledger: LedgerService) -> None:
    sql_ledger.grant("kp_a", 100, "welcome")
    first = sql_ledger.record_usage("kp_a", "api_call", 3, idempotency_key="abc")
    again = sql_ledger.record_usage("kp_a", "api_call", 3, idempotency_key="abc")
    assert again.replayed and again.body == first.body
    with pytest.raises(IdempotencyConflict):
        sql_ledger.record_usage("kp_a", "api_call", 2, idempotency_key="abc")
    assert sql_ledger.get_wallet("kp_a")["balance"] == 97


def test_expiry_and_holds_on_the_database(sql_ledger: LedgerService, clock: FakeClock) -> None:
    sql_ledger.grant("org_x", 300, "trial", expires_after_days=2)
    sql_ledger.grant("org_x", 100, "forever")
    hold = sql_ledger.place_hold("org_x", credits=250, expires_in_seconds=600)
    sql_ledger.record_usage("org_x", "api_call", 150)
    with pytest.raises(InsufficientCredits):
        sql_ledger.record_usage("org_x", "api_call", 1)
    sql_ledger.capture_hold(hold.body["hold_id"], 200)
    assert sql_ledger.get_wallet("org_x")["balance"] == 50
    clock.advance(days=3)
    assert sql_ledger.sweep_due() == 0  # nothing left in the expiring block: it was used first
    view = sql_ledger.get_wallet("org_x")
    assert view["balance"] == 50 and view["next_expiry_at"] is None
    assert verify_ledger(sql_ledger.uow) == {}


def test_expiry_sweep_moves_remainders(sql_ledger: LedgerService, clock: FakeClock) -> None:
    sql_ledger.grant("kp_a", 300, "trial", expires_after_days=1)
    sql_ledger.place_hold("kp_a", credits=10, expires_in_seconds=60)
    clock.advance(days=2)
    assert sql_ledger.sweep_due() == 1
    view = sql_ledger.get_wallet("kp_a")
    assert (view["balance"], view["held"]) == (0, 0)
    kinds = [e["kind"] for e in sql_ledger.ledger_page("kp_a")["entries"]]
    assert sorted(kinds[:2]) == ["expiry", "release"]
    assert verify_ledger(sql_ledger.uow) == {}


def test_database_constraints_back_the_invariants(sql_ledger: LedgerService,
                                                  sql_store: SqlStore) -> None:
    sql_ledger.grant("kp_a", 100, "welcome")
    with sql_store.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("UPDATE blocks SET remaining = -1"))
    with sql_store.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("UPDATE blocks SET remaining = original + 1"))
    with sql_store.engine.connect() as conn, pytest.raises(IntegrityError):
        row = {"scope": "s", "key": "k", "request_hash": "h", "status_code": 201,
               "response": "{}", "created_at": sql_ledger.clock()}
        conn.execute(insert(t.idempotency_keys), [row, row])


def test_verify_finds_tampering(sql_ledger: LedgerService, sql_store: SqlStore) -> None:
    sql_ledger.grant("kp_a", 100, "welcome")
    sql_ledger.record_usage("kp_a", "api_call", 10)
    assert verify_ledger(sql_store) == {}
    with sql_store.engine.begin() as conn:
        conn.execute(text("UPDATE wallets SET balance = balance + 5"))
        conn.execute(text("UPDATE entries SET balance_after = 7 WHERE kind = 'grant'"))
    problems = verify_ledger(sql_store)["kp_a"]
    assert any("sum of entries" in p for p in problems)
    assert any("does not follow" in p for p in problems)


def test_reads_are_o1_in_history(sql_ledger: LedgerService, sql_store: SqlStore) -> None:
    """The balance comes from the wallet row, not a sum over entries."""
    sql_ledger.grant("kp_a", 1000, "welcome")
    for _ in range(20):
        sql_ledger.record_usage("kp_a", "api_call", 1)
    statements: list[str] = []
    from sqlalchemy import event

    def log(conn, cursor, statement, *a):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(sql_store.engine, "before_cursor_execute", log)
    try:
        sql_ledger.get_wallet("kp_a")
    finally:
        event.remove(sql_store.engine, "before_cursor_execute", log)
    assert not any("entries" in s.lower() for s in statements)
