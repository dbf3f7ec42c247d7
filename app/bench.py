"""`kinde-credits bench`: throughput figures, each beside a baseline measured in the same run.

A baseline is the least work the figure needs on the same machine, settings and schema, so
the ratio says how much our code costs on top of the unavoidable, whatever the hardware:
- store debits: raw `sqlite3` doing only the conditional UPDATE and one ledger INSERT per
  transaction, with the same PRAGMAs (WAL, synchronous=FULL, BEGIN IMMEDIATE);
- store debits on PostgreSQL: pgbench's TPC-B-like script with the same number of clients;
- HTTP usage (app/bench_http.py): a trivial endpoint under the same server configuration.
Never used by tests as a timing assertion: speed is reported, not asserted.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Figure = dict[str, Any]
FigureFn = Callable[[bool, Path], Figure | None]
FIGURES: dict[str, FigureFn] = {}


def figure(name: str) -> Callable[[FigureFn], FigureFn]:
    def register(fn: FigureFn) -> FigureFn:
        FIGURES[name] = fn
        return fn

    return register


def make_figure(
    name: str, value: float, unit: str, baseline_name: str, baseline_value: float, goal: float
) -> Figure:
    return {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "baseline": {"name": baseline_name, "value": round(baseline_value, 1)},
        "ratio": round(value / baseline_value, 3) if baseline_value else 0.0,
        "goal": goal,
    }


def _fresh_sqlite(workdir: Path, name: str) -> str:
    import uuid

    from adapters.sql.migrate import upgrade

    path = workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"
    upgrade(f"sqlite:///{path}")
    return str(path)


@figure("store_debits_sqlite")
def store_debits_sqlite(quick: bool, workdir: Path) -> Figure:
    """Sequential usage debits through LedgerService + SqlStore vs raw sqlite3."""
    from adapters.sql.engine import make_engine
    from adapters.sql.store import SqlStore
    from app.domain.catalog import load_catalog
    from app.services.ledger import LedgerService
    from app.settings import DEFAULT_CATALOG

    n = 2000 if quick else 10000
    rounds = 2 if quick else 3

    def ours() -> float:
        path = _fresh_sqlite(workdir, "ours")
        store = SqlStore(make_engine(f"sqlite:///{path}", pool_size=1))
        ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
        ledger.grant("kp_bench", n * 10, "bench")
        for _ in range(50):  # warm caches (compiled statements, pool)
            ledger.record_usage("kp_bench", "api_call", 1)
        started = time.perf_counter()
        for _ in range(n):
            ledger.record_usage("kp_bench", "api_call", 1)
        took = time.perf_counter() - started
        store.engine.dispose()
        return n / took

    def raw() -> float:
        path = _fresh_sqlite(workdir, "raw")
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       "busy_timeout=30000"):
            conn.execute(f"PRAGMA {pragma}")
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        conn.execute(
            "INSERT INTO wallets (id, owner_type, balance, held, arrears, overdraft_limit, "
            "reference_balance, auto_recharge_enabled, created_at, updated_at) "
            "VALUES ('kp_bench', 'user', ?, 0, 0, 0, 0, 0, ?, ?)",
            (n * 10, now, now),
        )

        def one() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE wallets SET balance = balance - ? WHERE id = ? AND balance >= ?",
                (1, "kp_bench", 1),
            )
            conn.execute(
                "INSERT INTO entries (wallet_id, kind, amount, balance_after, reason, "
                "description, created_at) VALUES (?, 'usage', -1, 0, 'api:api_call', ?, ?)",
                ("kp_bench", "-1 credit for API Call (1 API call)", now),
            )
            conn.execute("COMMIT")

        for _ in range(50):
            one()
        started = time.perf_counter()
        for _ in range(n):
            one()
        took = time.perf_counter() - started
        conn.close()
        return n / took

    # Interleave and keep the best of each, so a noisy neighbour hurts both equally.
    best_ours = best_raw = 0.0
    for _ in range(rounds):
        best_raw = max(best_raw, raw())
        best_ours = max(best_ours, ours())
    return make_figure(
        "store_debits_sqlite", best_ours, "debits/s", "raw sqlite3 update+insert", best_raw, 0.25
    )


def _postgres_url() -> str | None:
    import os

    for name in ("BENCH_POSTGRES_URL", "TEST_POSTGRES_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgresql", "postgres://")):
            return url
    return None


@figure("store_debits_postgres")
def store_debits_postgres(quick: bool, workdir: Path) -> Figure | None:
    """Concurrent usage debits on PostgreSQL vs pgbench's TPC-B-like script, same clients.

    Both run CLIENTS connections at once on a scratch database. TPC-B-like is five statements
    per transaction (three updates, a select, an insert); a debit is about as many. Skipped
    when no PostgreSQL URL is configured (BENCH_POSTGRES_URL, TEST_POSTGRES_URL or
    DATABASE_URL) or pgbench is not installed.
    """
    import os
    import shutil as _shutil
    import subprocess
    import threading
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from adapters.sql.engine import make_engine
    from adapters.sql.migrate import upgrade
    from adapters.sql.store import SqlStore
    from app.domain.catalog import load_catalog
    from app.services.ledger import LedgerService
    from app.settings import DEFAULT_CATALOG

    base = _postgres_url()
    if base is None or _shutil.which("pgbench") is None:
        return None
    clients, seconds = 4, (5 if quick else 15)
    url = make_url(base.replace("postgres://", "postgresql://", 1))
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = f"kc_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = url.set(database=name)
    try:
        upgrade(scratch.render_as_string(hide_password=False))
        store = SqlStore(make_engine(scratch.render_as_string(hide_password=False),
                                     pool_size=clients))
        ledger = LedgerService(store, load_catalog(DEFAULT_CATALOG))
        wallets = [f"kp_bench{i}" for i in range(clients)]
        for w in wallets:
            ledger.grant(w, 10**9, "bench")
        done = [0] * clients
        stop = time.perf_counter() + seconds

        def run(i: int) -> None:
            while time.perf_counter() < stop:
                ledger.record_usage(wallets[i], "api_call", 1)
                done[i] += 1

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ours = sum(done) / (time.perf_counter() - started)
        store.engine.dispose()

        env = {"PGPASSWORD": url.password or ""}
        conn_args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                     "-U", url.username or "postgres", name]
        subprocess.run(["pgbench", "-i", "-q", "-s", "1", *conn_args], check=True,
                       capture_output=True, env={**os.environ, **env})
        out = subprocess.run(
            ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), *conn_args],
            check=True, capture_output=True, text=True,
            env={**os.environ, **env},
        ).stdout
        tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines()
                   if line.startswith("tps ="))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return make_figure("store_debits_postgres", ours, "debits/s",
                       f"pgbench TPC-B-like, {clients} clients", tps, 0.25)


def run_bench(*, quick: bool = False, only: set[str] | None = None,
              progress: bool = True) -> dict[str, Any]:
    # Figures defined in other modules register on import.
    for module in ("app.bench_http",):
        with contextlib.suppress(ImportError):
            __import__(module)
    unknown = (only or set()) - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figure(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(FIGURES)}")
    figures = []
    workdir = Path(tempfile.mkdtemp(prefix="kc-bench-"))
    try:
        for name, fn in FIGURES.items():
            if only and name not in only:
                continue
            if progress:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
            result = fn(quick, workdir)
            if result is None:
                if progress:
                    print(f"  skipped {name}: not available here", file=sys.stderr)
                continue
            figures.append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"figures": figures, "quick": quick}
