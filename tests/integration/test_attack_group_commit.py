"""Attack on group commit (app.services.group_commit) on SQLite and PostgreSQL.

Findings are `xfail(strict=True)`: each fails on the current code and says why. The tests that
pass pin behaviour a fix must keep (one key twice in one batch, crossing batches of two
"processes" on one database, a killed holder of the SQLite writer gate).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from adapters.sql.engine import is_transient_error, make_engine
from adapters.sql.store import SqlStore, SqlUnitOfWork
from app.domain.catalog import Catalog
from app.services.errors import IdempotencyConflict
from app.services.group_commit import GroupCommitRunner
from app.services.idempotency import Outcome
from app.services.ledger import LedgerService, verify_ledger
from app.services.ports import UnitOfWork

SEED = "kp_seed"


class Abort(BaseException):
    """What a gevent Timeout, GreenletExit, SystemExit or KeyboardInterrupt looks like to the
    runner: not an Exception."""


def _grouped(store: SqlStore, catalog: Catalog, **kwargs: Any) -> LedgerService:
    ledger = LedgerService(store, catalog)
    ledger.writer.runner = GroupCommitRunner(store, is_transient=is_transient_error, **kwargs)
    return ledger


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    # Waits for a state, never asserts on time: the bound only turns a hang into a failure.
    for _ in range(2000):
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class Queue:
    """A leader whose batch waits on `release`, then followers queued behind it in order;
    unlike the unit tests' HeldBatch it also records BaseExceptions."""

    def __init__(self, runner: GroupCommitRunner) -> None:
        self.runner = runner
        self.release = threading.Event()
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self._start("leader", lambda: runner.run(lambda uow: self.release.wait(20)))
        _wait_until(lambda: runner.leading, "the leader to start")

    def _start(self, name: str, call: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                self.results[name] = call()
            except BaseException as exc:  # noqa: BLE001 - the attack is about these
                self.results[name] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def follow(self, name: str, call: Callable[[], Any], pieces: int = 1) -> None:
        before = self.runner.queued
        self._start(name, call)
        _wait_until(lambda: self.runner.queued == before + pieces, f"{name} to queue")

    def finish(self) -> dict[str, Any]:
        self.release.set()
        for thread in self.threads:
            thread.join(20)
        return self.results


def _aborting(uow: UnitOfWork) -> None:
    raise Abort("the leader's thread is being torn down")


def test_base_exception_in_a_batch_never_answers_uncommitted_work_as_done(
    sql_store: SqlStore, catalog: Catalog
) -> None:
    ledger = _grouped(sql_store, catalog)
    runner = ledger.writer.runner
    assert isinstance(runner, GroupCommitRunner)
    queue = Queue(runner)
    # The aborting piece leads the next batch; the grant sorts before it (kp_a < kp_z).
    queue.follow("abort", lambda: runner.run(_aborting, "wallet:kp_z"))
    queue.follow("grant", lambda: ledger.grant("kp_a", 500, reason="paid",
                                               idempotency_key="g1"))
    results = queue.finish()

    assert isinstance(results["abort"], Abort)
    answered = results["grant"]
    balance = ledger.get_wallet("kp_a")["balance"]  # a wallet never written reads as 0
    # Either the caller was told it failed, or the credits it was told about exist.
    assert not isinstance(answered, Outcome) or balance == answered.body["balance"], (
        f"caller got {answered!r} but the wallet holds {balance}")


def test_a_dying_leader_does_not_wedge_the_runner(sql_store: SqlStore) -> None:
    runner = GroupCommitRunner(sql_store, max_batch=2, is_transient=is_transient_error)

    def ok(uow: UnitOfWork) -> str:
        return "ok"

    with pytest.raises(Abort):
        runner.run_many([(_aborting, "a"), (ok, "b"), (ok, "c"), (ok, "d")])

    # Queued work with a leader flag but no thread that will lead it: the next run() hangs.
    assert not (runner.leading and runner.queued), (
        f"wedged: leading={runner.leading} with {runner.queued} piece(s) queued and no leader")
    done: list[str] = []
    follower = threading.Thread(target=lambda: done.append(runner.run(ok)), daemon=True)
    follower.start()
    follower.join(20)
    assert done == ["ok"]


class _ExitFailsAfterCommit(SqlUnitOfWork):
    """A unit of work whose clean-up fails after its commit succeeded (a connection that broke
    right after COMMIT, a gate release that fails): the commit stands."""

    armed = True
    pieces = 0
    committed = False

    def savepoint(self) -> Any:
        self.pieces += 1
        return super().savepoint()

    def commit(self) -> None:
        super().commit()
        self.committed = True

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        # Only a shared batch's transaction (two pieces or more) fails this way, once.
        if self.committed and self.pieces > 1 and _ExitFailsAfterCommit.armed:
            _ExitFailsAfterCommit.armed = False
            raise OSError("connection reset while returning it to the pool")


class _FlakyStore(SqlStore):
    def __call__(self, write: bool) -> SqlUnitOfWork:
        return _ExitFailsAfterCommit(self.engine, write)


def test_a_failure_after_the_commit_never_applies_a_batch_twice(
    sql_store: SqlStore, catalog: Catalog
) -> None:
    store = _FlakyStore(sql_store.engine)
    ledger = _grouped(store, catalog)
    _ExitFailsAfterCommit.armed = True
    ledger.grant(SEED, 100, reason="seed")
    runner = ledger.writer.runner
    assert isinstance(runner, GroupCommitRunner)
    queue = Queue(runner)
    queue.follow("u1", lambda: ledger.record_usage(SEED, "api_call", 5))
    queue.follow("u2", lambda: ledger.record_usage(SEED, "api_call", 7))
    results = queue.finish()
    _ExitFailsAfterCommit.armed = False

    charged = sum(r.body["entry"]["amount"] for r in (results["u1"], results["u2"])
                  if isinstance(r, Outcome))
    balance = ledger.get_wallet(SEED)["balance"]
    assert balance == 100 + charged, f"answers charged {-charged}, balance is {balance}"


def test_a_lone_write_is_not_starved_behind_a_big_batch(sql_store: SqlStore) -> None:
    runner = GroupCommitRunner(sql_store, max_batch=8)
    applied: list[str] = []

    def piece(name: str) -> Callable[[UnitOfWork], str]:
        def work(uow: UnitOfWork) -> str:
            applied.append(name)
            return name
        return work

    queue = Queue(runner)
    queue.follow("bulk", lambda: runner.run_many(
        [(piece(f"bulk{n}"), f"wallet:b{n:03}") for n in range(80)]), pieces=8)
    queue.follow("lone", lambda: runner.run(piece("lone"), "wallet:lone"))
    queue.finish()

    assert "lone" in applied
    position = applied.index("lone")
    assert position < 2 * runner.max_batch, (
        f"the lone write ran after {position} queued pieces ({position // 8} batches)")


# --- pinned behaviour (passes) ---------------------------------------------------------------


def test_one_key_twice_in_one_batch_with_another_body_is_409(
    sql_store: SqlStore, catalog: Catalog
) -> None:
    ledger = _grouped(sql_store, catalog)
    ledger.grant(SEED, 1000, reason="seed")
    results = ledger.record_usage_batch([
        {"wallet_id": SEED, "feature": "api_call", "quantity": 1, "idempotency_key": "k"},
        {"wallet_id": SEED, "feature": "api_call", "quantity": 2, "idempotency_key": "k"},
        {"wallet_id": SEED, "feature": "api_call", "quantity": 1, "idempotency_key": "k"},
        {"wallet_id": SEED, "feature": "api_call", "quantity": 10**9, "idempotency_key": "big"},
        {"wallet_id": SEED, "feature": "api_call", "quantity": 3, "idempotency_key": "big"},
        {"wallet_id": SEED, "feature": "nope", "quantity": 1, "idempotency_key": "x"},
        {"wallet_id": SEED, "feature": "api_call", "quantity": 1},
    ])
    by_index = {r["index"]: r for r in results}
    assert by_index[0]["status"] == 201 and not by_index[0]["replayed"]
    assert by_index[1]["status"] == 409
    assert by_index[2]["replayed"] and by_index[2]["result"] == by_index[0]["result"]
    assert by_index[3]["status"] == 402  # refused: the key stays free for a corrected retry
    assert by_index[4]["status"] == 201 and not by_index[4]["replayed"]
    assert by_index[5]["status"] == 422  # unknown feature, refused before any write
    assert by_index[6]["status"] == 201
    with pytest.raises(IdempotencyConflict):
        ledger.record_usage(SEED, "api_call", 2, idempotency_key="k")
    assert ledger.get_wallet(SEED)["balance"] == 1000 - 1 - 3 - 1
    assert verify_ledger(sql_store) == {}


def test_empty_run_many_is_empty(sql_store: SqlStore) -> None:
    runner = GroupCommitRunner(sql_store)
    assert runner.run_many([]) == []
    assert not runner.leading and runner.queued == 0


def _crossing_batches(url: str, wallets: list[str], rounds: int, out: Any) -> None:
    """One 'process': its own engine and runner, batches of usage over wallets in its order."""
    from app.domain.catalog import load_catalog
    from app.settings import DEFAULT_CATALOG

    store = SqlStore(make_engine(url, pool_size=4))
    ledger = _grouped(store, load_catalog(DEFAULT_CATALOG))
    statuses: dict[int, int] = {}
    for round_ in range(rounds):
        records = [{"wallet_id": w, "feature": "api_call", "quantity": 1,
                    "idempotency_key": f"{os.getpid()}-{round_}-{w}"} for w in wallets]
        for result in ledger.record_usage_batch(records):
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    out.put(statuses)
    store.engine.dispose()


def test_crossing_batches_of_two_processes_lose_nothing(
    db_url: str, sql_store: SqlStore, catalog: Catalog
) -> None:
    wallets = [f"kp_cross{n}" for n in range(6)]
    ledger = LedgerService(sql_store, catalog)
    for wallet in wallets:
        ledger.grant(wallet, 1000, reason="seed")
    context = mp.get_context("spawn")
    out = context.Queue()
    rounds = 15
    procs = [context.Process(target=_crossing_batches, args=(db_url, order, rounds, out))
             for order in (wallets, list(reversed(wallets)))]
    for proc in procs:
        proc.start()
    statuses = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert all(s == {201: rounds * len(wallets)} for s in statuses), statuses
    for wallet in wallets:
        assert ledger.get_wallet(wallet)["balance"] == 1000 - 2 * rounds
    assert verify_ledger(sql_store) == {}


def _hold_gate_then_die(url: str, ready: Any) -> None:
    store = SqlStore(make_engine(url, pool_size=1))
    with store(True):
        ready.set()
        time.sleep(600)  # killed here, holding the flock and the SQLite write lock


def test_a_killed_writer_releases_the_sqlite_gate(sqlite_url: str, catalog: Catalog) -> None:
    context = mp.get_context("spawn")
    ready = context.Event()
    proc = context.Process(target=_hold_gate_then_die, args=(sqlite_url, ready))
    proc.start()
    assert ready.wait(120)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    store = SqlStore(make_engine(sqlite_url))
    ledger = _grouped(store, catalog)
    assert ledger.grant(SEED, 5, reason="after the kill").body["balance"] == 5
    store.engine.dispose()


def test_one_key_on_two_processes_never_fails_a_valid_write(
    db_url: str, catalog: Catalog
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("row and key locks of PostgreSQL; SQLite has one writer")
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    seed_store = SqlStore(make_engine(db_url, pool_size=2))
    LedgerService(seed_store, catalog).grant("kp_w1", 1000, reason="seed")
    def engine_for(name: str, deadlock_timeout: str) -> Any:
        # Named, so that the wait below finds this very backend (the database is shared).
        # Deadlock timeouts chosen so that the lone write's check runs once the cycle exists
        # (seconds after the batch resumes) and before the batch's: the lone write is the
        # victim, as it is whenever it has waited longer.
        return make_engine(make_url(db_url).update_query_dict({
            "application_name": name, "options": f"-c deadlock_timeout={deadlock_timeout}",
        }).render_as_string(hide_password=False), pool_size=2)

    store_x = SqlStore(engine_for("attack_batch_x", "60s"))
    store_z = SqlStore(engine_for("attack_lone_z", "3s"))
    x, z = _grouped(store_x, catalog), _grouped(store_z, catalog)
    runner_x = x.writer.runner
    assert isinstance(runner_x, GroupCommitRunner)
    paused, resume = threading.Event(), threading.Event()

    def pause(uow: UnitOfWork) -> None:
        paused.set()
        resume.wait(30)

    def usage(key: str) -> tuple[Callable[[UnitOfWork], Outcome], str]:
        return x.usage._usage_work("kp_w1", "api_call", 1, None, key, None)

    results: dict[str, Any] = {}

    def batch() -> None:
        work1, scope = usage("K1")
        work2, _ = usage("K2")
        results["x"] = runner_x.run_many([(work1, scope), (pause, scope), (work2, scope)])

    def lone() -> None:
        try:
            results["z"] = z.record_usage("kp_w1", "api_call", 1, idempotency_key="K2")
        except Exception as exc:
            results["z"] = exc

    tx = threading.Thread(target=batch, daemon=True)
    tx.start()
    assert paused.wait(30)
    tz = threading.Thread(target=lone, daemon=True)
    tz.start()

    def z_waits_for_the_wallet() -> bool:
        with seed_store.engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'attack_lone_z'")).scalar())

    _wait_until(z_waits_for_the_wallet, "the lone write to wait for the batch's wallet lock")
    resume.set()
    tx.join(60)
    tz.join(60)
    store_x.engine.dispose()
    store_z.engine.dispose()

    assert isinstance(results["z"], Outcome), f"the lone write failed: {results['z']!r}"
    first, paused_piece, second = results["x"]
    assert isinstance(first, Outcome) and isinstance(second, Outcome), results["x"]
    balance = LedgerService(seed_store, catalog).get_wallet("kp_w1")["balance"]
    seed_store.engine.dispose()
    assert balance == 1000 - 2  # K1 and K2 once each
