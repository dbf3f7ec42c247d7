"""Group commit: concurrent write units of work share one database transaction and one commit.

Why: a durable commit (an fsync of SQLite's WAL, a WAL flush on PostgreSQL) costs more than the
ledger work of a debit, and concurrent debits of one wallet queue on its lock anyway. So the
writes that arrive while one batch is being applied are applied together, one after another, in
the next transaction, and made durable by one commit. No caller waits on purpose: a batch is
whatever queued up while the previous one ran.

Guarantees (pinned by tests on SQLite and PostgreSQL):
- Every piece of work runs alone in its own savepoint of the shared transaction, one at a time;
  it sees every earlier piece's writes exactly as if they had committed before it. Pieces are
  applied in the order of their `order` key (the wallet), so two batches take wallet locks in
  one order and never wait on each other in a cycle.
- A piece that raises is rolled back to its savepoint: its caller gets the exception, the other
  pieces are unaffected. A piece that fails with a transient database error (deadlock,
  serialization failure: `is_transient`) is run again in its own transaction after the batch.
- A caller gets its result only after the commit that made its work durable succeeded. If the
  batch fails before its commit is sent, nothing of it was written, so each piece is run again
  in its own transaction. If the commit itself fails, its outcome is unknown, so nothing is run
  again: every caller gets the error, exactly as the caller of a lone transaction would (a lost
  connection during COMMIT is `CommitOutcomeUnknown`: the HTTP answer is 503 `outcome_unknown`).
- No background thread: the first caller to find no batch running leads one batch (its own
  piece is in it), then hands the lead to the next waiting caller. A caller waits for the
  batch in flight and the pieces queued ahead of it; a large submission (`run_many`) queues
  one batch's worth at a time, so it never holds others back by more than that.
- A caller that stops while waiting (an interrupt) takes its queued pieces out and passes on
  a lead handed to it, so no other caller waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.services.ports import UnitOfWork, UnitOfWorkFactory

T = TypeVar("T")
log = logging.getLogger("kinde_credits.group_commit")

# Pieces per shared transaction: bounds how long one batch holds the write lock (the wait of
# the next batch's callers) while still sharing the commit among many. Each piece is a
# savepoint, a PostgreSQL subtransaction; staying well under the 64 a backend caches per
# transaction keeps snapshots cheap for every session (an overflow slows the whole server).
DEFAULT_MAX_BATCH = 32
# Tries for a piece run alone that keeps losing transient races (deadlocks) before its caller
# gets the error.
ALONE_ATTEMPTS = 3


class LeaderStopped(RuntimeError):
    """The thread leading a batch stopped before this piece's outcome was known."""


class _CommitFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class _Pending(Generic[T]):
    work: Callable[[UnitOfWork], T]
    order: str
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    result: tuple[T] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def outcome(self) -> T:
        if self.result is not None:
            return self.result[0]
        raise self.error if self.error is not None else LeaderStopped("no outcome")


def _never_transient(_exc: BaseException) -> bool:
    return False


class OwnTransactionRunner:
    """Each piece of work in its own write transaction: the plain, ungrouped way."""

    def __init__(self, factory: UnitOfWorkFactory) -> None:
        self.factory = factory

    def run(self, work: Callable[[UnitOfWork], T], order: str = "") -> T:
        with self.factory(True) as uow:
            value = work(uow)
            uow.commit()
            return value

    def run_many(
        self, works: list[tuple[Callable[[UnitOfWork], T], str]]
    ) -> list[T | Exception]:
        results: list[T | Exception] = []
        for work, order in works:
            try:
                results.append(self.run(work, order))
            except Exception as exc:
                results.append(exc)
        return results


class GroupCommitRunner:
    """Runs pieces of write work so that concurrent ones share a transaction and its commit."""

    def __init__(
        self,
        factory: UnitOfWorkFactory,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        is_transient: Callable[[BaseException], bool] = _never_transient,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.factory = factory
        self.max_batch = max_batch
        self.is_transient = is_transient
        self._alone = OwnTransactionRunner(factory)
        self._mutex = threading.Lock()
        self._queue: list[_Pending[Any]] = []
        self._leading = False  # invariant: a non-empty queue always has a leader

    @property
    def queued(self) -> int:
        """Pieces waiting for a batch (not counting the batch being applied)."""
        with self._mutex:
            return len(self._queue)

    @property
    def leading(self) -> bool:
        """Whether a batch is being applied (or about to be)."""
        return self._leading

    def run(self, work: Callable[[UnitOfWork], T], order: str = "") -> T:
        """Apply `work(uow)` in a shared write transaction; its result once committed."""
        [pending] = self._submit([(work, order)])
        return pending.outcome()

    def run_many(
        self, works: list[tuple[Callable[[UnitOfWork], T], str]]
    ) -> list[T | Exception]:
        results: list[T | Exception] = []
        # Submitted a batch's worth at a time, so other callers' pieces queue between the
        # chunks of a large submission instead of waiting behind all of it.
        for start in range(0, len(works), self.max_batch):
            for pending in self._submit(works[start:start + self.max_batch]):
                try:
                    results.append(pending.outcome())
                except Exception as exc:
                    results.append(exc)
        return results

    def _submit(self, works: list[tuple[Callable[[UnitOfWork], T], str]]) -> list[_Pending[T]]:
        """Queue the pieces and wait until each is done, leading batches when asked to."""
        pendings: list[_Pending[T]] = [_Pending(work, order) for work, order in works]
        if not pendings:
            return pendings
        with self._mutex:
            self._queue.extend(pendings)
            if not self._leading:
                # The queue was empty (invariant), so the first piece is at its head.
                self._leading = pendings[0].leads = True
        try:
            for pending in pendings:
                if not pending.leads and not pending.done:
                    pending.wake.wait()
                if pending.leads and not pending.done:
                    # At the head of the queue: the batch this thread now leads contains it.
                    self._lead()
        except BaseException:
            self._abandon(pendings)
            raise
        return pendings

    def _abandon(self, pendings: list[_Pending[T]]) -> None:
        """This thread is stopping (interrupted): its queued pieces leave the queue unrun, and
        a lead handed to one of them passes on, so no other caller waits for it for ever."""
        mine = set(pendings)
        with self._mutex:
            queued = [p for p in self._queue if p in mine]
            self._queue = [p for p in self._queue if p not in mine]
            if any(p.leads for p in queued):
                self._pass_lead()
        for pending in queued:
            pending.error = LeaderStopped("the caller stopped before this work ran")

    def _lead(self) -> None:
        with self._mutex:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            self._apply(batch)
        finally:
            for item in batch:
                if not item.done:
                    item.error = LeaderStopped("the batch stopped before this work finished")
            with self._mutex:
                self._pass_lead()
            for item in batch:
                item.wake.set()

    def _pass_lead(self) -> None:
        """Hand the lead to the head of the queue, or end it (the mutex is held)."""
        if self._queue:
            following = self._queue[0]
            following.leads = True
            following.wake.set()
        else:
            self._leading = False

    def _apply(self, batch: list[_Pending[Any]]) -> None:
        if len(batch) == 1:
            self._alone_each(batch)
            return
        ordered = sorted(batch, key=lambda item: item.order)
        try:
            self._together(ordered)
        except _CommitFailed as failed:
            for item in ordered:
                item.result, item.error = None, failed.cause
            return
        except Exception:
            # Failed before the commit was sent: nothing of the batch was written.
            for item in ordered:
                item.result = item.error = None
            self._alone_each(ordered)
            return
        self._alone_each([item for item in ordered
                          if item.error is not None and self.is_transient(item.error)])

    def _together(self, ordered: list[_Pending[Any]]) -> None:
        """Apply the pieces in one transaction; publish their outcomes only once committed."""
        outcomes: list[tuple[_Pending[Any], tuple[Any] | None, Exception | None]] = []
        commit_error: Exception | None = None
        committed = False
        try:
            with self.factory(True) as uow:
                for item in ordered:
                    savepoint = uow.savepoint()
                    try:
                        value = item.work(uow)
                    except Exception as exc:
                        savepoint.rollback()
                        outcomes.append((item, None, exc))
                    else:
                        savepoint.release()
                        outcomes.append((item, (value,), None))
                try:
                    uow.commit()
                except Exception as exc:
                    commit_error = exc
                    raise
                committed = True
        except Exception as exc:
            if commit_error is not None:
                # COMMIT was sent: whatever closing the unit of work raised after it, the
                # commit's own error is the answer and nothing may run again.
                raise _CommitFailed(commit_error) from exc
            if not committed:
                raise
            # Closing the connection failed after the commit: the work is durable and the
            # answers stand (running it again would apply it twice).
            log.warning("closing a committed batch failed", exc_info=True)
        finally:
            if committed:
                for item, result, error in outcomes:
                    item.result, item.error = result, error

    def _alone_each(self, items: list[_Pending[Any]]) -> None:
        for item in items:
            for attempt in range(1, ALONE_ATTEMPTS + 1):
                try:
                    item.result, item.error = (self._alone.run(item.work),), None
                    break
                except Exception as exc:
                    item.result, item.error = None, exc
                    # A deadlock victim's transaction was rolled back whole: run it again.
                    if attempt == ALONE_ATTEMPTS or not self.is_transient(exc):
                        break
