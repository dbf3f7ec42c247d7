"""Group commit on SQLite and PostgreSQL: savepoints really isolate a refused or failed piece,
one key inside one batch is answered once, and threads and processes sharing commits keep
every ledger rule (exact balances, one refusal for the request that does not fit, `verify`)."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

import pytest
from sqlalchemy import event

from adapters.sql.engine import is_transient_error, make_engine
from adapters.sql.store import SqlStore
from app.domain.catalog import Catalog, load_catalog
from app.domain.ledger import InsufficientCredits
from app.services.group_commit import GroupCommitRunner
from app.services.ledger import LedgerService, verify_ledger
from app.services.ports import UnitOfWork
from app.settings import DEFAULT_CATALOG
from tests.unit.test_group_commit import HeldBatch

WALLET = "kp_grouped"


def _grouped_ledger(store: SqlStore, catalog: Catalog) -> LedgerService:
    ledger = LedgerService(store, catalog)
    ledger.writer.runner = GroupCommitRunner(store, is_transient=is_transient_error)
    return ledger


def _count_commits(store: SqlStore) -> list[int]:
    commits = [0]

    @event.listens_for(store.engine, "commit")
    def _on_commit(conn: Any) -> None:
        commits[0] += 1

    return commits


def test_one_batch_one_commit_each_answer_its_own(sql_store: SqlStore,
                                                  catalog: Catalog) -> None:
    ledger = _grouped_ledger(sql_store, catalog)
    ledger.grant(WALLET, 10, reason="test")
    runner = ledger.writer.runner
    assert isinstance(runner, GroupCommitRunner)

    def broken(uow: UnitOfWork) -> None:
        wallet = uow.wallets.lock(WALLET)
        assert wallet is not None
        wallet.debit(3, reason="half-done", description="half-done", now=ledger.clock())
        uow.wallets.save(wallet, ledger.clock())
        uow.idempotency.claim(f"wallet:{WALLET}", "shared", "other-request", ledger.clock())
        raise RuntimeError("boom after writing")

    commits = _count_commits(sql_store)
    held = HeldBatch(runner)
    held.follow("fits", lambda: ledger.record_usage(WALLET, "api_call", 4,
                                                    idempotency_key="a"))
    held.follow("broken", lambda: runner.run(broken, f"wallet:{WALLET}"))
    held.follow("too_big", lambda: ledger.record_usage(WALLET, "api_call", 7,
                                                       idempotency_key="b"))
    held.follow("shared1", lambda: ledger.record_usage(WALLET, "api_call", 2,
                                                       idempotency_key="shared"))
    held.follow("shared2", lambda: ledger.record_usage(WALLET, "api_call", 2,
                                                       idempotency_key="shared"))
    results = held.finish()

    assert commits[0] == 2  # the leader alone, then one commit for the five followers
    assert results["fits"].body["balance"] == 6
    assert isinstance(results["broken"], RuntimeError)
    assert isinstance(results["too_big"], InsufficientCredits)
    assert results["too_big"].available == 6  # the broken piece's debit was undone
    # The broken piece's claim on "shared" was undone with it; the first real use wins and
    # the second, in the same transaction, is answered with the first's stored answer.
    assert results["shared1"].status == 201 and not results["shared1"].replayed
    assert results["shared2"].replayed and results["shared2"].body == results["shared1"].body
    view = ledger.get_wallet(WALLET)
    assert view["balance"] == 4
    assert [e["amount"] for e in ledger.ledger_page(WALLET)["entries"]][:2] == [-2, -4]
    assert verify_ledger(sql_store) == {}
    # The refused key stored nothing: a corrected retry with it goes through.
    assert ledger.record_usage(WALLET, "api_call", 1, idempotency_key="b").status == 201


THREADS = 12
PER_THREAD = 16  # a multiple of the wallet counts, so each wallet gets its share


def _debit_all(ledger: LedgerService, wallets: list[str], tag: str,
               per_thread: int) -> tuple[int, int, list[str]]:
    done = refused = 0
    errors: list[str] = []
    for i in range(per_thread):
        wallet = wallets[i % len(wallets)]
        try:
            ledger.record_usage(wallet, "api_call", 1, idempotency_key=f"{tag}-{i}")
            done += 1
        except InsufficientCredits:
            refused += 1
        except Exception as exc:
            errors.append(repr(exc))
    return done, refused, errors


@pytest.mark.parametrize("wallets", [1, 4], ids=["one_wallet", "four_wallets"])
def test_threads_sharing_commits_never_overspend(sql_store: SqlStore, catalog: Catalog,
                                                 wallets: int) -> None:
    ledger = _grouped_ledger(sql_store, catalog)
    ids = [f"kp_w{n}" for n in range(wallets)]
    per_wallet = THREADS * PER_THREAD // wallets
    for wallet in ids:
        ledger.grant(wallet, per_wallet - 1, reason="one request per wallet cannot fit")
    totals = [0, 0]
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def client(n: int) -> None:
        barrier.wait()
        done, refused, errs = _debit_all(ledger, ids, f"t{n}", PER_THREAD)
        with lock:
            totals[0] += done
            totals[1] += refused
            errors.extend(errs)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert totals == [THREADS * PER_THREAD - wallets, wallets]
    for wallet in ids:
        assert ledger.get_wallet(wallet)["balance"] == 0
    assert verify_ledger(sql_store) == {}


PROCESSES = 3


def _grouped_process(url: str, tag: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    store = SqlStore(make_engine(url, pool_size=THREADS))
    ledger = _grouped_ledger(store, load_catalog(DEFAULT_CATALOG))
    results: list[tuple[int, int, list[str]]] = []
    barrier = threading.Barrier(THREADS)

    def client(n: int) -> None:
        barrier.wait()
        results.append(_debit_all(ledger, [WALLET], f"{tag}-{n}", PER_THREAD))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    store.engine.dispose()
    queue.put((sum(r[0] for r in results), sum(r[1] for r in results),
               [e for r in results for e in r[2]]))


@pytest.mark.slow
def test_processes_of_grouped_threads_never_overspend(db_url: str, sql_store: SqlStore,
                                                      catalog: Catalog) -> None:
    ledger = LedgerService(sql_store, catalog)
    requests = PROCESSES * THREADS * PER_THREAD
    ledger.grant(WALLET, requests - 1, reason="one request cannot fit")
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_grouped_process, args=(db_url, f"p{n}", queue))
             for n in range(PROCESSES)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    errors = [e for o in outcomes for e in o[2]]
    assert not errors, errors
    assert sum(o[0] for o in outcomes) == requests - 1
    assert sum(o[1] for o in outcomes) == 1
    assert ledger.get_wallet(WALLET)["balance"] == 0
    assert verify_ledger(sql_store) == {}
