"""Group commit on the in-memory store: batching, isolation of failures, and what a failed
commit means. Batches are made deterministic by holding the leader's own work until the
followers have queued (`GroupCommitRunner.queued`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from app.domain.catalog import Catalog
from app.domain.ledger import InsufficientCredits
from app.services.group_commit import GroupCommitRunner, OwnTransactionRunner
from app.services.ledger import LedgerService, verify_ledger
from app.services.ports import UnitOfWork
from tests.fakes.memory_store import MemoryStore, MemoryUnitOfWork

WALLET = "kp_group"


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class HeldBatch:
    """Starts a leader whose work waits on `release`, then queues followers behind it."""

    def __init__(self, runner: GroupCommitRunner) -> None:
        self.runner = runner
        self.release = threading.Event()
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

        def leader(uow: UnitOfWork) -> str:
            self.release.wait(10)
            return "leader"

        self._start("leader", lambda: runner.run(leader))
        _wait_until(lambda: self.runner.leading, "the leader to start")

    def _start(self, name: str, call: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                self.results[name] = call()
            except Exception as exc:
                self.results[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        self.threads.append(thread)

    def follow(self, name: str, call: Callable[[], Any]) -> None:
        """Queue one follower, in order: it waits until the leader's batch is done."""
        before = self.runner.queued
        self._start(name, call)
        _wait_until(lambda: self.runner.queued == before + 1, f"{name} to queue")

    def finish(self) -> dict[str, Any]:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
        return self.results


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def ledger(store: MemoryStore, catalog: Catalog) -> LedgerService:
    service = LedgerService(store, catalog)
    service.writer.runner = GroupCommitRunner(store)
    return service


def test_followers_share_one_commit_and_each_gets_its_own_answer(
    store: MemoryStore, ledger: LedgerService
) -> None:
    ledger.grant(WALLET, 10, reason="test")
    runner = ledger.writer.runner
    assert isinstance(runner, GroupCommitRunner)
    commits_before = store.commits
    held = HeldBatch(runner)
    for n, quantity in enumerate([4, 7, 5]):  # 4 fits, 7 does not (6 left), 5 fits
        held.follow(f"debit{n}", lambda q=quantity, n=n: ledger.record_usage(
            WALLET, "api_call", q, idempotency_key=f"k{n}"))
    results = held.finish()

    assert results["leader"] == "leader"
    assert results["debit0"].status == 201 and results["debit0"].body["balance"] == 6
    assert isinstance(results["debit1"], InsufficientCredits)
    assert results["debit1"].available == 6
    assert results["debit2"].status == 201 and results["debit2"].body["balance"] == 1
    # The leader alone, then the three followers together: two commits, not four.
    assert store.commits - commits_before == 2
    assert ledger.get_wallet(WALLET)["balance"] == 1
    assert verify_ledger(store) == {}
    # The refused request stored no answer: its key is free for a corrected retry.
    assert ledger.record_usage(WALLET, "api_call", 1, idempotency_key="k1").status == 201


def test_a_failing_piece_leaves_the_rest_of_its_batch(store: MemoryStore,
                                                       ledger: LedgerService) -> None:
    ledger.grant(WALLET, 10, reason="test")
    runner = ledger.writer.runner
    assert isinstance(runner, GroupCommitRunner)

    def broken(uow: UnitOfWork) -> None:
        wallet = uow.wallets.lock(WALLET)
        assert wallet is not None
        wallet.debit(3, reason="half-done", description="half-done", now=ledger.clock())
        uow.wallets.save(wallet, ledger.clock())
        raise RuntimeError("boom")

    held = HeldBatch(runner)
    held.follow("first", lambda: ledger.record_usage(WALLET, "api_call", 2))
    held.follow("broken", lambda: runner.run(broken, f"wallet:{WALLET}"))
    held.follow("last", lambda: ledger.record_usage(WALLET, "api_call", 1))
    results = held.finish()

    assert isinstance(results["broken"], RuntimeError)
    assert results["first"].body["balance"] == 8
    assert results["last"].body["balance"] == 7  # the broken piece's debit was undone
    assert ledger.get_wallet(WALLET)["balance"] == 7
    assert verify_ledger(store) == {}


class FailingCommits(MemoryStore):
    """A store whose commits fail while `fail` is set (after the work was applied)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def __call__(self, write: bool) -> MemoryUnitOfWork:
        uow = super().__call__(write)
        original = uow.commit

        def commit() -> None:
            if self.fail:
                raise ConnectionError("connection lost during COMMIT")
            original()

        uow.commit = commit  # type: ignore[method-assign]
        return uow


def test_a_failed_commit_fails_every_caller_and_runs_nothing_again() -> None:
    store = FailingCommits()
    runner = GroupCommitRunner(store)
    calls: list[str] = []

    def piece(name: str) -> Callable[[UnitOfWork], str]:
        def work(uow: UnitOfWork) -> str:
            calls.append(name)
            return name
        return work

    held = HeldBatch(runner)
    for name in ("a", "b", "c"):
        held.follow(name, lambda name=name: runner.run(piece(name)))
    store.fail = True
    results = held.finish()

    # The leader's lone commit and the batch's commit both failed: the outcome of a failed
    # COMMIT is unknown, so nothing is run a second time (that could apply it twice).
    assert all(isinstance(results[name], ConnectionError) for name in ("leader", "a", "b", "c"))
    assert calls == ["a", "b", "c"]


class BrokenSavepoints(MemoryStore):
    """Savepoints fail to start: the batch fails before its commit is ever sent."""

    def __call__(self, write: bool) -> MemoryUnitOfWork:
        uow = super().__call__(write)

        def savepoint() -> Any:
            raise ConnectionError("server closed the connection")

        uow.savepoint = savepoint  # type: ignore[method-assign]
        return uow


def test_a_batch_that_fails_before_its_commit_runs_each_piece_alone() -> None:
    store = BrokenSavepoints()
    runner = GroupCommitRunner(store)
    held = HeldBatch(runner)
    for name in ("a", "b"):
        held.follow(name, lambda name=name: runner.run(lambda uow, name=name: name))
    results = held.finish()
    assert results == {"leader": "leader", "a": "a", "b": "b"}


class Transient(Exception):
    pass


def test_a_transient_failure_is_run_again_alone_after_the_batch(store: MemoryStore) -> None:
    runner = GroupCommitRunner(store, is_transient=lambda exc: isinstance(exc, Transient))
    attempts = {"racy": 0}

    def racy(uow: UnitOfWork) -> str:
        attempts["racy"] += 1
        if attempts["racy"] == 1:
            raise Transient("deadlock detected")
        return "racy done"

    held = HeldBatch(runner)
    held.follow("racy", lambda: runner.run(racy))
    held.follow("other", lambda: runner.run(lambda uow: "other done"))
    results = held.finish()
    assert results["racy"] == "racy done" and results["other"] == "other done"
    assert attempts["racy"] == 2


def test_run_many_answers_each_piece_in_order(store: MemoryStore) -> None:
    runner = GroupCommitRunner(store, max_batch=3)

    def piece(n: int) -> Callable[[UnitOfWork], int]:
        def work(uow: UnitOfWork) -> int:
            if n % 4 == 3:
                raise ValueError(n)
            return n * n
        return work

    results = runner.run_many([(piece(n), f"w{n % 2}") for n in range(10)])
    for n, result in enumerate(results):
        if n % 4 == 3:
            assert isinstance(result, ValueError)
        else:
            assert result == n * n
    assert store.commits == 4  # ten pieces, batches of three
    assert runner.queued == 0 and not runner.leading


def test_the_plain_runner_commits_each_piece_alone(store: MemoryStore) -> None:
    runner = OwnTransactionRunner(store)
    assert runner.run_many([(lambda uow: 1, ""), (lambda uow: 2, "")]) == [1, 2]
    assert store.commits == 2


def test_many_threads_on_one_wallet_keep_every_rule(store: MemoryStore,
                                                     ledger: LedgerService) -> None:
    threads, per_thread = 16, 25
    ledger.grant(WALLET, threads * per_thread - 1, reason="test")  # one request cannot fit
    refused: list[Exception] = []
    answers: dict[str, int] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(per_thread):
            key = f"t{n}-{i}"
            try:
                outcome = ledger.record_usage(WALLET, "api_call", 1, idempotency_key=key)
            except InsufficientCredits as exc:
                with lock:
                    refused.append(exc)
                continue
            with lock:
                answers[key] = outcome.body["entry"]["id"]

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(refused) == 1
    assert len(answers) == threads * per_thread - 1
    assert len(set(answers.values())) == len(answers)  # one entry per answered request
    assert ledger.get_wallet(WALLET)["balance"] == 0
    assert verify_ledger(store) == {}
