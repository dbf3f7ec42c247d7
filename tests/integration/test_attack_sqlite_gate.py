"""Attack on the SQLite writer gate (adapters.sql.engine.SqliteWriterGate).

Findings are `xfail(strict=True)`; the passing tests pin what a fix must keep.
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import signal
import threading
from typing import Any

import pytest

from adapters.sql import engine as engine_module
from adapters.sql.engine import NestedWriteError, make_engine, sqlite_writer_gate
from adapters.sql.store import SqlStore
from app.domain.catalog import Catalog
from app.services.group_commit import GroupCommitRunner
from app.services.ledger import LedgerService
from app.services.ports import UnitOfWork


def _hold_flock(lock_path: str, ready: Any) -> None:
    """Another process inside a write (or stopped there: SIGSTOP, a debugger, a hung NFS)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    signal.pause()


def test_a_writer_waiting_on_another_process_gives_up_like_sqlite_would(
    sqlite_url: str, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_SECONDS", 1)
    store = SqlStore(make_engine(sqlite_url))
    lock_path = sqlite_writer_gate(store.engine).lock_path
    assert lock_path is not None
    context = mp.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_flock, args=(lock_path, ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(120)
        outcome: list[BaseException | str] = []

        def write() -> None:
            try:
                with store(True) as uow:
                    uow.commit()
                outcome.append("written")
            except Exception as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        # 15 times the (patched) busy timeout: a bounded wait has long given up by then.
        writer.join(15)
        assert not writer.is_alive(), "the writer still waits for the other process's flock"
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        store.engine.dispose()


def test_an_in_memory_database_is_served_or_refused_clearly() -> None:
    try:
        engine = make_engine("sqlite://")
    except ValueError:
        return
    engine.dispose()


def test_a_nested_write_from_a_hook_fails_fast_under_group_commit(
    sqlite_url: str, catalog: Catalog
) -> None:
    """A hook that opens its own write inside a grouped batch must fail its own piece, not
    hang on the gate the batch holds, and not take the rest of the batch with it."""
    store = SqlStore(make_engine(sqlite_url))
    ledger = LedgerService(store, catalog)
    runner = GroupCommitRunner(store)
    ledger.writer.runner = runner
    ledger.grant("kp_a", 10, reason="seed")

    def nested(uow: UnitOfWork) -> None:
        with store(True):
            pass

    ok = runner.run_many([(nested, "wallet:a"),
                          (lambda uow: uow.idempotency.get("s", "k"), "wallet:b")])
    assert isinstance(ok[0], NestedWriteError)
    assert ok[1] is None
    # The gate was left: the next write goes through.
    assert ledger.grant("kp_a", 1, reason="after").body["balance"] == 11
    store.engine.dispose()


def _write_as_nobody(url: str, out: Any) -> None:
    import sqlite3  # noqa: F401 - loaded while the interpreter's files are still readable

    store = SqlStore(make_engine(url))
    try:
        os.setgid(65534)
        os.setuid(65534)
        with store(True) as uow:
            uow.idempotency.put("attack", "nobody", "-", 200, {}, _now())
            uow.commit()
        out.put("written")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_lock_file_made_by_another_user_does_not_stop_writes(
    _sqlite_template: Any,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="kc-attack-")
    try:
        os.chmod(folder, 0o777)
        database = os.path.join(folder, "shared.db")
        shutil.copy(_sqlite_template, database)
        os.chmod(database, 0o666)
        url = f"sqlite:///{database}"
        store = SqlStore(make_engine(url))
        with store(True) as uow:  # root writes first: WAL files and the lock file appear
            uow.commit()
        store.engine.dispose()
        for name in os.listdir(folder):
            if not name.endswith(".write-lock"):
                os.chmod(os.path.join(folder, name), 0o666)
        context = mp.get_context("spawn")
        out = context.Queue()
        child = context.Process(target=_write_as_nobody, args=(url, out))
        child.start()
        answer = out.get(timeout=120)
        child.join(60)
        assert answer == "written"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
