"""Write units of work on SQLite pass one gate (threads: a lock; processes: a flock) before
`BEGIN IMMEDIATE`, so writers queue instead of sleeping in SQLite's busy handler. These tests
pin what the gate must guarantee: exact money under threads x processes, release on every exit
path, a clear error instead of a self-deadlock, and in-memory databases."""

from __future__ import annotations

import multiprocessing as mp
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from adapters.sql import engine as engine_module
from adapters.sql.engine import (
    NestedWriteError,
    WriterGateTimeout,
    make_engine,
    sqlite_writer_gate,
)
from adapters.sql.store import SqlStore
from app.domain.catalog import load_catalog
from app.domain.ledger import InsufficientCredits
from app.services.ledger import LedgerService, verify_ledger
from app.settings import DEFAULT_CATALOG

PROCESSES = 4
THREADS = 8
DEBITS_PER_THREAD = 5
REQUESTS = PROCESSES * THREADS * DEBITS_PER_THREAD
WALLET = "kp_gate"


def _threads_debiting(url: str, tag: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """One process: THREADS threads each send DEBITS_PER_THREAD one-credit debits; reports
    (successes, refusals, unexpected errors)."""
    store = SqlStore(make_engine(url, pool_size=THREADS))
    ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
    done, refused, errors = [0], [0], []
    count_lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(DEBITS_PER_THREAD):
            try:
                ledger.record_usage(WALLET, "api_call", 1, idempotency_key=f"{tag}-{n}-{i}")
                with count_lock:
                    done[0] += 1
            except InsufficientCredits:
                with count_lock:
                    refused[0] += 1
            except BaseException as exc:  # reported to the parent
                errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    store.engine.dispose()
    queue.put((done[0], refused[0], errors))


@pytest.mark.slow
def test_processes_of_threads_debit_exactly(db_url: str, sql_store: SqlStore) -> None:
    """4 processes x 8 threads on one wallet that pays for every request but one: every
    debit lands exactly once, and exactly one request (the one that does not fit) is refused."""
    ledger = LedgerService(sql_store, load_catalog(DEFAULT_CATALOG))
    ledger.grant(WALLET, REQUESTS - 1, "all but one")
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_threads_debiting, args=(db_url, f"p{i}", queue))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [errors for _, _, errors in results] == [[]] * PROCESSES
    assert sum(done for done, _, _ in results) == REQUESTS - 1
    assert sum(refused for _, refused, _ in results) == 1
    view = ledger.get_wallet(WALLET)
    assert (view["balance"], view["held"]) == (0, 0)
    with sql_store.engine.connect() as conn:
        usage = conn.execute(text("SELECT count(*) FROM entries WHERE kind = 'usage'")).scalar()
        keys = conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar()
    assert (usage, keys) == (REQUESTS - 1, REQUESTS - 1)
    assert verify_ledger(sql_store) == {}


def test_a_nested_write_unit_is_refused_not_deadlocked(sqlite_url: str) -> None:
    store = SqlStore(make_engine(sqlite_url))
    try:
        with store(True) as outer:
            with pytest.raises(NestedWriteError), store(True):
                pass
            # Reads never take the gate, so they may nest in a write.
            with store(False) as inner:
                assert inner.wallets.read("kp_none") is None
            outer.wallets.lock_or_create("kp_a", _now())
            outer.commit()
        # The refused nested unit left nothing held: the next writer gets in at once.
        with store(True) as again:
            assert again.wallets.lock("kp_a") is not None
    finally:
        store.engine.dispose()


def test_the_gate_is_released_on_errors(sqlite_url: str) -> None:
    store = SqlStore(make_engine(sqlite_url))
    try:
        with pytest.raises(RuntimeError, match="boom"), store(True) as uow:
            uow.wallets.lock_or_create("kp_a", _now())
            raise RuntimeError("boom")
        # Released and rolled back: another thread can write, and sees nothing of the first.
        seen: list[object] = []

        def other_thread() -> None:
            with store(True) as uow:
                seen.append(uow.wallets.lock("kp_a"))

        th = threading.Thread(target=other_thread)
        th.start()
        th.join(timeout=60)
        assert seen == [None]
    finally:
        store.engine.dispose()


def test_writers_wait_at_the_gate_in_turn(sqlite_url: str) -> None:
    """A second thread's write unit waits at the gate (not in SQLite) until the first ends."""
    store = SqlStore(make_engine(sqlite_url))
    order: list[str] = []
    first_inside = threading.Event()
    try:
        def second() -> None:
            first_inside.wait(timeout=60)
            with store(True):
                order.append("second")

        th = threading.Thread(target=second)
        with store(True) as uow:
            th.start()
            first_inside.set()
            gate = sqlite_writer_gate(store.engine)
            assert gate.lock_path is not None and Path(gate.lock_path).exists()
            uow.wallets.lock_or_create("kp_a", _now())
            # The other thread cannot get in while this unit is open, however long it lasts.
            th.join(timeout=0.2)
            order.append("first")
            uow.commit()
        th.join(timeout=60)
        assert order == ["first", "second"]
    finally:
        store.engine.dispose()


def test_in_memory_databases_work_through_the_gate() -> None:
    # One connection per thread on one in-memory database (SQLAlchemy's default for it).
    store = SqlStore(create_engine("sqlite://"))
    try:
        assert sqlite_writer_gate(store.engine).lock_path is None
        with store(True) as uow:
            uow.connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            uow.connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            uow.commit()
        with store(True) as uow:
            assert uow.connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        store.engine.dispose()


def _now() -> datetime:
    return datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_writer_kept_waiting_too_long_fails_instead_of_hanging(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like SQLite's busy timeout (shortened here): a writer that cannot get in gives up."""
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_SECONDS", 0.05)
    store = SqlStore(make_engine(sqlite_url))
    failures: list[BaseException] = []

    def second_writer() -> None:
        try:
            with store(True):
                pass
        except WriterGateTimeout as exc:
            failures.append(exc)

    try:
        with store(True):
            th = threading.Thread(target=second_writer)
            th.start()
            th.join(timeout=60)  # ends by itself: the second writer gives up
        assert len(failures) == 1
        with store(True):  # and the gate still works afterwards
            pass
    finally:
        store.engine.dispose()
