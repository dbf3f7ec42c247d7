"""SQL store: the unit of work (one transaction) with every repository bound to its connection.

Concurrency model (engine settings and the SQLite writer gate: adapters.sql.engine):
- SQLite: a write unit of work passes the writer gate (one writer per database, across threads
  and processes, without SQLite's busy-handler sleeps) and then runs `BEGIN IMMEDIATE`, so
  read-then-update inside it is race-free. Read units of work take no lock.
- PostgreSQL: READ COMMITTED with `SELECT ... FOR UPDATE` on the wallet row; read units of work
  run at REPEATABLE READ so that wallet, blocks and holds come from one snapshot.
Repositories are made on first use, so a unit of work costs only what it touches.
"""

from __future__ import annotations

import logging
from functools import cached_property
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, NestedTransaction
from sqlalchemy.exc import DBAPIError

from adapters.sql.access import (
    SqlHoldPlacerRepository,
    SqlLinkSessionRepository,
    SqlPaymentStandingRepository,
)
from adapters.sql.billing import SqlBillingRepository
from adapters.sql.budgets import SqlBudgetRepository
from adapters.sql.dashboard import SqlDashboardRepository
from adapters.sql.engine import (
    IMMEDIATE,
    READ_ISOLATION,
    SqliteWriterGate,
    is_lost_commit,
    sqlite_writer_gate,
)
from adapters.sql.idempotency import SqlIdempotencyRepository
from adapters.sql.inbox import SqlInboxRepository
from adapters.sql.meters import SqlMeterReadingRepository
from adapters.sql.outbox import SqlOutboxRepository
from adapters.sql.plans import SqlPlanRepository
from adapters.sql.recharges import SqlRechargeRepository
from adapters.sql.refunds import SqlRefundRepository
from adapters.sql.revenue import SqlRevenueRepository
from adapters.sql.wallets import SqlWalletRepository
from app.services.ports import CommitOutcomeUnknown

log = logging.getLogger("kinde_credits.sql")


class SqlUnitOfWork:
    """One database transaction with the repositories bound to its connection."""

    def __init__(self, engine: Engine, write: bool) -> None:
        self.engine = engine
        self.write = write
        self.conn: Connection | None = None
        self._gate: SqliteWriterGate | None = None

    def _forget_repositories(self) -> None:
        # Repositories hold the transaction's connection: none outlives it.
        for name in _REPOSITORIES:
            self.__dict__.pop(name, None)  # where cached_property keeps them

    def __enter__(self) -> Self:
        sqlite = self.engine.dialect.name == "sqlite"
        if self.write and sqlite:
            gate = sqlite_writer_gate(self.engine)
            gate.enter()  # raises NestedWriteError for a write unit inside another
            self._gate = gate
        try:
            conn = self.engine.connect()
            try:
                if self.write and sqlite:
                    conn = conn.execution_options(**{IMMEDIATE: True})
                elif not self.write and not sqlite:
                    # Reads see one snapshot (wallet, blocks and holds agree); read-only
                    # REPEATABLE READ transactions never fail with serialization errors.
                    conn = conn.execution_options(isolation_level=READ_ISOLATION)
                conn.begin()
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._leave_gate()
            raise
        self.conn = conn
        return self

    @property
    def connection(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("the unit of work is not open: use it in a `with` block")
        return self.conn

    @cached_property
    def wallets(self) -> SqlWalletRepository:
        return SqlWalletRepository(self.connection)

    @cached_property
    def idempotency(self) -> SqlIdempotencyRepository:
        return SqlIdempotencyRepository(self.connection)

    @cached_property
    def outbox(self) -> SqlOutboxRepository:
        return SqlOutboxRepository(self.connection)

    @cached_property
    def billing(self) -> SqlBillingRepository:
        return SqlBillingRepository(self.connection)

    @cached_property
    def recharges(self) -> SqlRechargeRepository:
        return SqlRechargeRepository(self.connection)

    @cached_property
    def inbox(self) -> SqlInboxRepository:
        return SqlInboxRepository(self.connection)

    @cached_property
    def meters(self) -> SqlMeterReadingRepository:
        return SqlMeterReadingRepository(self.connection)

    @cached_property
    def plans(self) -> SqlPlanRepository:
        return SqlPlanRepository(self.connection)

    @cached_property
    def budgets(self) -> SqlBudgetRepository:
        return SqlBudgetRepository(self.connection)

    @cached_property
    def revenue(self) -> SqlRevenueRepository:
        return SqlRevenueRepository(self.connection)

    @cached_property
    def refunds(self) -> SqlRefundRepository:
        return SqlRefundRepository(self.connection)

    @cached_property
    def dashboard(self) -> SqlDashboardRepository:
        return SqlDashboardRepository(self.connection)

    @cached_property
    def link_sessions(self) -> SqlLinkSessionRepository:
        return SqlLinkSessionRepository(self.connection)

    @cached_property
    def payment_standing(self) -> SqlPaymentStandingRepository:
        return SqlPaymentStandingRepository(self.connection)

    @cached_property
    def hold_placers(self) -> SqlHoldPlacerRepository:
        return SqlHoldPlacerRepository(self.connection)

    def savepoint(self) -> _Savepoint:
        """A SAVEPOINT (SQLAlchemy's nested transaction: `rollback()` undoes, `commit()` keeps).

        Both databases support them inside the write transaction; group commit
        (app.services.group_commit) runs each request's work in one.
        """
        return _Savepoint(self.connection.begin_nested())

    def commit(self) -> None:
        """COMMIT; an error from COMMIT itself whose outcome is unknown (the connection was
        lost: it may have been applied) is `CommitOutcomeUnknown`, never "not applied"."""
        try:
            self.connection.commit()
        except DBAPIError as exc:
            if is_lost_commit(exc):
                raise CommitOutcomeUnknown(
                    f"the database connection failed during COMMIT: {type(exc.orig).__name__}"
                ) from exc
            raise

    def rollback(self) -> None:
        if self.conn is not None:
            self.conn.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self.connection
        try:
            # Anything not committed explicitly is rolled back: a unit of work is all or nothing.
            conn.rollback()
        except DBAPIError:
            if exc is None:
                raise
            # The connection is gone (e.g. it dropped during COMMIT): the error the caller
            # must see is the one already on its way, not this rollback's.
            log.warning("rollback after a failed unit of work failed too", exc_info=True)
        finally:
            try:
                conn.close()
            finally:
                self.conn = None
                self._forget_repositories()
                self._leave_gate()

    def _leave_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.leave()


# The repositories a unit of work offers: made on first use, at most once per transaction.
_REPOSITORIES = tuple(
    name for name, member in vars(SqlUnitOfWork).items() if isinstance(member, cached_property)
)


class SqlStore:
    """Factory of units of work over one engine; the composition root owns one per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, write: bool) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, write)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


class _Savepoint:
    """One SAVEPOINT of a unit of work, named as the port says (`release` keeps its work)."""

    def __init__(self, nested: NestedTransaction) -> None:
        self._nested = nested

    def rollback(self) -> None:
        self._nested.rollback()

    def release(self) -> None:
        self._nested.commit()
