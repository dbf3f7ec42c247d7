"""Engines for SQLite and PostgreSQL with the settings the ledger's correctness depends on, and
the SQLite writer gate that serialises write transactions without SQLite's long sleeps.

- SQLite: WAL, `synchronous=FULL` (a committed debit survives power loss), and every write
  transaction starts with `BEGIN IMMEDIATE`, which takes the single writer lock up front, so
  read-then-update inside a unit of work is race-free across threads and processes.
- PostgreSQL: READ COMMITTED with `SELECT ... FOR UPDATE` on the wallet row; all changes to a
  wallet happen under that lock. The level is pinned on the engine (and REPEATABLE READ on
  read-only units of work), never left to the server's `default_transaction_isolation`: under
  SERIALIZABLE or REPEATABLE READ, writers racing for one wallet would fail with serialization
  errors instead of waiting for the lock and seeing the committed row.

Why the writer gate: SQLite lets a second writer wait only through its busy handler, which
sleeps 1 to 100 ms between tries; with many threads in several processes on one database the
writers spend their time asleep while the lock is free, throughput collapses and the tail
explodes. So a write unit of work first takes, in this order, a `threading.Lock` per database
(threads of one process queue on it and wake at once) and an exclusive `flock` on a lock file
beside the database (`<db>.write-lock`; a process polls it every 0.1 to 2 ms, and gives up
after the busy timeout like SQLite would), and only then runs `BEGIN IMMEDIATE`, which then
never waits. With group commit one leader per process takes the gate for a whole batch. The
busy timeout stays as the safety net for writers outside the gate (migrations, other tools).
Read units of work take neither: WAL readers never wait for the writer.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

# Execution option that makes the SQLite `begin` listener emit BEGIN IMMEDIATE.
IMMEDIATE = "kc_begin_immediate"

# PostgreSQL levels the code is written for (see the module docstring); pinned, because a server
# or database may set another default.
WRITE_ISOLATION = "READ COMMITTED"
READ_ISOLATION = "REPEATABLE READ"

# Seconds SQLite's busy handler retries before failing: only writers outside the gate wait.
BUSY_TIMEOUT_SECONDS = 30
log = logging.getLogger("kinde_credits.sql")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine with the settings the ledger's correctness depends on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if _sqlite_file(url) is None:
            # Each pooled connection would open its own empty database: money would vanish.
            raise ValueError(
                "DATABASE_URL: an in-memory SQLite database cannot hold the ledger (every "
                "connection would see its own empty database); give a file, e.g. "
                "sqlite:///var/credits.db")
        _make_sqlite_dir(url)
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            isolation_level=WRITE_ISOLATION,
        )
    raise ValueError(f"DATABASE_URL must be sqlite:// or postgresql://, got {parsed.drivername}")


def make_single_use_engine(url: str) -> Engine:
    """An engine without pooling, for CLI commands and child processes."""
    if make_url(url).get_backend_name() == "sqlite":
        _make_sqlite_dir(url)
    postgres = make_url(url).get_backend_name() == "postgresql"
    engine = create_engine(
        url, poolclass=NullPool, **({"isolation_level": WRITE_ISOLATION} if postgres else {})
    )
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return database


def _make_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (./var on a fresh checkout)."""
    database = _sqlite_file(url)
    if database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module: we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class NestedWriteError(RuntimeError):
    """A write unit of work was opened while this thread already holds one on the same
    database: it would wait for itself for ever, so it is refused at once."""


class WriterGateTimeout(TimeoutError):
    """Waited as long as SQLite's busy timeout for another write unit of work to end."""


class SqliteWriterGate:
    """Admits one write transaction at a time to one SQLite database, across the threads of
    this process (a lock) and across processes (`flock` on `<db>.write-lock`)."""

    def __init__(self, lock_path: str | None) -> None:
        self.lock_path = lock_path
        self._threads = threading.Lock()
        self._owner = threading.local()
        # The lock file while held: opened per entry, so no descriptor outlives its use (tests
        # make many databases) and none is shared with a forked child.
        self._fd: int | None = None

    def enter(self) -> None:
        if getattr(self._owner, "inside", False):
            raise NestedWriteError(
                "a write unit of work was opened inside another on the same SQLite database "
                "in the same thread; commit the first before starting the next"
            )
        # Bounded like SQLite's own wait: a writer stuck in this process (or a test holding a
        # write open while it waits for another thread's write) fails as "database is locked"
        # would, instead of hanging for ever.
        if not self._threads.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise WriterGateTimeout(
                f"no write transaction on this SQLite database for {BUSY_TIMEOUT_SECONDS}s: "
                "another unit of work in this process kept it open"
            )
        try:
            if self.lock_path is not None:
                self._fd = self._lock_file(self.lock_path)
        except BaseException:
            self._threads.release()
            raise
        self._owner.inside = True

    @staticmethod
    def _lock_file(path: str) -> int | None:
        """Take the cross-process lock, waiting at most the busy timeout.

        Waits on a non-blocking `flock` with short sleeps (0.1 ms doubling to 2 ms), so a
        process stuck while holding it makes this fail like SQLite's busy timeout instead of
        hanging. A lock file this process may not open (made by another user) is skipped with
        a warning: SQLite's own locking still keeps writers apart, only less smoothly.
        """
        try:
            # Read-only is enough for flock; 0o644 lets other users' processes open it too.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except PermissionError:
            log.warning("cannot open the SQLite writer lock %s; relying on SQLite's locking",
                        path)
            return None
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        pause = 0.0001
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WriterGateTimeout(
                            f"no write transaction on this SQLite database for "
                            f"{BUSY_TIMEOUT_SECONDS}s: another process kept it open") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.002)
        except BaseException:
            os.close(fd)
            raise

    def leave(self) -> None:
        self._owner.inside = False
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.close(fd)  # closing the only descriptor releases the flock
        finally:
            self._threads.release()


# One gate per (process, database): a forked worker must not share its parent's lock file
# description (flock would then not exclude the two) nor a thread lock held at the fork.
_gates: dict[tuple[int, str], SqliteWriterGate] = {}
_gates_lock = threading.Lock()


def sqlite_writer_gate(engine: Engine) -> SqliteWriterGate:
    """The gate for the engine's SQLite database (an in-memory one has its own per engine)."""
    database = _sqlite_file(str(engine.url))
    key = (os.getpid(), os.path.realpath(database) if database else f"memory:{id(engine)}")
    gate = _gates.get(key)
    if gate is None:
        with _gates_lock:
            gate = _gates.setdefault(
                key, SqliteWriterGate(f"{key[1]}.write-lock" if database else None)
            )
    return gate


# SQLSTATEs of errors that say "this transaction lost a race; run it again": deadlock detected,
# serialization failure (PostgreSQL). Nothing of the failed statement was applied.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient_error(exc: BaseException) -> bool:
    """True for a database error that running the same work again may not repeat."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES


# SQLite result codes that say "the COMMIT did not happen" (busy, locked): a definite answer.
_SQLITE_NOT_COMMITTED = frozenset({5, 6})


def is_lost_commit(exc: BaseException) -> bool:
    """True for an error raised by COMMIT itself whose outcome is unknown: the connection was
    lost (or the driver failed) after COMMIT may have reached the server.

    An error the server answered with (a SQLSTATE outside class 08, connection exception: a
    serialization failure, a deferred constraint) is a definite "rolled back", as is SQLite's
    busy or locked; anything else from COMMIT (closed connection, I/O error) may have landed.
    """
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if exc.connection_invalidated:
        return True
    cause = exc.orig
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith("08")
    code = getattr(cause, "sqlite_errorcode", None)
    return code is None or (code & 0xFF) not in _SQLITE_NOT_COMMITTED
