"""Racing debits against member caps on one org wallet, from threads and from processes, on
SQLite and PostgreSQL: no cap is ever overrun and no org credit is lost or double-spent."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

import pytest
from sqlalchemy import text

from adapters.sql.engine import make_engine
from adapters.sql.store import SqlStore
from app.domain.budgets import MemberBudgetExceeded
from app.domain.catalog import load_catalog
from app.domain.ledger import InsufficientCredits
from app.services.budgets import BudgetService
from app.services.ledger import LedgerService, verify_ledger
from app.settings import DEFAULT_CATALOG

ORG = "org_race"
CAPS = {"kp_alice": {"credits_per_day": 40}, "kp_bob": {"credits_per_month": 25},
        "kp_carol": {"credits_per_day": 30, "credits_per_month": 33}}
LIMIT = {"kp_alice": 40, "kp_bob": 25, "kp_carol": 30}
ORG_CREDITS = 1000
THREADS = 12
PROCESSES = 4


def _spend_until_refused(ledger: LedgerService, members: list[str], tag: str,
                         with_holds: bool) -> dict[str, int]:
    """Spend 1 credit at a time for each member until every one is refused; returns credits
    this worker got through per member (usage plus captured holds)."""
    spent = dict.fromkeys(members, 0)
    active = list(members)
    i = 0
    while active:
        i += 1
        for member in list(active):
            try:
                if with_holds and i % 3 == 0:
                    # A hold of 2 reserves budget; capture 1 or release: both must add up.
                    hold = ledger.place_hold(ORG, credits=2, member=member).body
                    if i % 2:
                        ledger.capture_hold(hold["hold_id"], 1)
                        spent[member] += 1
                    else:
                        ledger.release_hold(hold["hold_id"])
                else:
                    key = f"{tag}-{member}-{i}" if i % 2 else None
                    ledger.record_usage(ORG, "api_call", 1, member=member, idempotency_key=key)
                    spent[member] += 1
            except (MemberBudgetExceeded, InsufficientCredits):
                if not with_holds or i % 3 != 0:
                    active.remove(member)
            if i > 500:
                raise AssertionError("never refused: the cap is not enforced")
    return spent


def _prepare(store: SqlStore) -> LedgerService:
    ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
    ledger.grant(ORG, ORG_CREDITS, "team credits")
    budgets = BudgetService(ledger)
    for member, caps in CAPS.items():
        budgets.set_budget(ORG, member, caps)
    return ledger


def _check_totals(store: SqlStore, ledger: LedgerService, results: list[dict[str, int]],
                  exact: bool) -> None:
    got = {m: sum(r[m] for r in results) for m in CAPS}
    with store.engine.connect() as conn:
        # Month rows only (a day row holds the same credits again).
        recorded = dict(conn.execute(text(
            "SELECT member_id, SUM(credits) FROM member_spend WHERE length(period) = 7 "
            "GROUP BY member_id")).all())
    for member, limit in LIMIT.items():
        assert got[member] <= limit, (member, got[member])
        if exact:
            assert got[member] == limit, (member, got[member])
        # What the workers were told succeeded is exactly what the budget recorded.
        assert int(recorded.get(member) or 0) == got[member]
    wallet = ledger.get_wallet(ORG)
    # Every credit that left the org wallet is one a worker was told it spent: none lost.
    assert wallet["balance"] == ORG_CREDITS - sum(got.values())
    assert wallet["held"] == 0
    assert verify_ledger(store) == {}


@pytest.mark.parametrize("with_holds", [False, True], ids=["usage", "usage+holds"])
def test_threads_never_overrun_a_member_cap(sql_store: SqlStore, with_holds: bool) -> None:
    ledger = _prepare(sql_store)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(n: int) -> None:
        barrier.wait()
        try:
            results.append(_spend_until_refused(ledger, list(CAPS), f"t{n}", with_holds))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    _check_totals(sql_store, ledger, results, exact=not with_holds)


def _process_worker(url: str, tag: str, queue: Any) -> None:
    store = SqlStore(make_engine(url, pool_size=2))
    ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
    try:
        queue.put(_spend_until_refused(ledger, list(CAPS), tag, with_holds=False))
    except BaseException as exc:
        queue.put(repr(exc))
    finally:
        store.engine.dispose()


@pytest.mark.slow
def test_processes_never_overrun_a_member_cap(db_url: str, sql_store: SqlStore) -> None:
    ledger = _prepare(sql_store)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(db_url, f"p{i}", queue))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(isinstance(r, dict) for r in results), results
    _check_totals(sql_store, ledger, results, exact=True)
