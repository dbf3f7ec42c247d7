"""Many threads and processes debiting one wallet: exactly N debits succeed, never more."""

from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

from adapters.sql.engine import make_engine
from adapters.sql.store import SqlStore
from app.domain.catalog import load_catalog
from app.domain.ledger import InsufficientCredits
from app.services.ledger import LedgerService, verify_ledger
from app.settings import DEFAULT_CATALOG

N = 120  # debits the wallet can pay for
THREADS = 16
PROCESSES = 4


def _debit_until_refused(ledger: LedgerService, wallet_id: str, tag: str) -> int:
    done = 0
    for i in range(N + 5):
        try:
            # Half the requests carry idempotency keys to exercise that path too.
            key = f"{tag}-{i}" if i % 2 else None
            ledger.record_usage(wallet_id, "api_call", 1, idempotency_key=key)
            done += 1
        except InsufficientCredits:
            break
    return done


def test_threads_never_overspend(sql_store: SqlStore) -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    ledger = LedgerService(sql_store, catalog)
    ledger.grant("kp_race", N, "exactly N")
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(n: int) -> None:
        barrier.wait()
        try:
            results.append(_debit_until_refused(ledger, "kp_race", f"t{n}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert sum(results) == N
    view = ledger.get_wallet("kp_race")
    assert view["balance"] == 0
    assert verify_ledger(sql_store) == {}


def _process_worker(url: str, tag: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    store = SqlStore(make_engine(url, pool_size=2))
    ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
    try:
        queue.put(_debit_until_refused(ledger, "kp_race", tag))
    except BaseException as exc:
        queue.put(repr(exc))
    finally:
        store.engine.dispose()


@pytest.mark.slow
def test_processes_never_overspend(db_url: str, sql_store: SqlStore) -> None:
    ledger = LedgerService(sql_store, load_catalog(DEFAULT_CATALOG))
    ledger.grant("kp_race", N, "exactly N")
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_process_worker, args=(db_url, f"p{i}", queue))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == N
    assert ledger.get_wallet("kp_race")["balance"] == 0
    assert verify_ledger(sql_store) == {}
