"""`kinde-credits bench`: figures, each beside the least work it needs, measured in the same run.

A baseline is the least work a figure needs on the same machine, settings and schema, so the
ratio says how much our code costs on top of the unavoidable, whatever the hardware:
- store debits: raw `sqlite3` doing only the conditional UPDATE and one ledger INSERT per
  transaction, with the same PRAGMAs (WAL, synchronous=FULL, BEGIN IMMEDIATE);
- store debits on PostgreSQL: pgbench's TPC-B-like script with the same number of clients;
- HTTP figures (app/bench_http.py): least-work handlers (app/bench_baseline.py) under the same
  gunicorn options, driven by the same load (app/bench_load.py).
Never used by tests as a timing assertion: speed is reported, not asserted.

Shape (DESIGN.md "Benchmarks"): `{"figures": [{"name", "value", "unit", "baseline": {"name",
"value"}, "ratio", "goal", ...}]}`. Added fields: `better` ("higher": ratio >= goal is met;
"lower": ratio <= goal is met), `goal_met`, `database`, `note`, and for HTTP figures `p50_ms`,
`p99_ms`, `baseline_p50_ms`, `baseline_p99_ms`; `skipped` lists figures that could not run here
(no PostgreSQL, ...) and `failed` those that broke (the command then exits 1).
With `--runs N` every number is the median of N runs (ratios: the median of the runs' ratios).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Figure = dict[str, Any]


class FigureSkipped(Exception):  # noqa: N818  (a reason, not an error)
    """A figure that cannot run here (no PostgreSQL, ...); the message says why."""


@dataclass
class BenchContext:
    """What one run's figures share: options, a scratch directory, and resources (servers,
    databases) started by the first figure that needs them and closed when the run ends."""

    quick: bool
    workdir: Path
    seconds: float | None = None  # load duration per measurement; None: by quick
    # gunicorn workers/threads for both sides of the HTTP figures; None: server_defaults
    workers: int | None = None
    threads: int | None = None
    stack: ExitStack = field(default_factory=ExitStack)
    _resources: dict[str, Any] = field(default_factory=dict)

    @property
    def load_seconds(self) -> float:
        if self.seconds is not None:
            return self.seconds
        return 1.0 if self.quick else 5.0

    def resource(self, key: str, make: Callable[[BenchContext], Any]) -> Any:
        if key not in self._resources:
            self._resources[key] = make(self)
        return self._resources[key]

    def sqlite_database(self, label: str) -> str:
        """A fresh SQLite file at the schema head (a copy of one migrated once per run)."""
        import uuid

        from adapters.sql.migrate import upgrade

        template = self.workdir / "template.db"
        if not template.exists():
            upgrade(f"sqlite:///{template}")
        path = self.workdir / f"{label}-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(template, path)
        return str(path)

    def postgres_database(self, label: str) -> str:
        """A fresh database at the schema head on the bench's PostgreSQL server (a copy of a
        template migrated once per run), dropped when the run ends. FigureSkipped without one."""
        import uuid

        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        from adapters.sql.migrate import upgrade

        base = postgres_url()
        if base is None:
            raise FigureSkipped("no PostgreSQL answers (set TEST_POSTGRES_URL)")
        url = make_url(base)

        def make_admin(c: BenchContext) -> Any:
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            c.stack.callback(engine.dispose)  # registered first, so it runs after the drops
            return engine

        admin = self.resource("pg-admin", make_admin)
        run_id = self.resource("pg-run-id", lambda c: uuid.uuid4().hex[:8])

        def create(name: str, template: str | None) -> str:
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'
                                      + (f' TEMPLATE "{template}"' if template else "")))
            except Exception as exc:
                raise FigureSkipped(f"cannot create a PostgreSQL database: {exc}") from None

            def drop() -> None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

            self.stack.callback(drop)
            return str(url.set(database=name).render_as_string(hide_password=False))

        def make_template(c: BenchContext) -> str:
            name = f"kc_bench_{run_id}_template"
            upgrade(create(name, None))
            return name

        template = self.resource("pg-template", make_template)
        return create(f"kc_bench_{run_id}_{label}", template)


FigureFn = Callable[[BenchContext], Figure | None]
FIGURES: dict[str, FigureFn] = {}
# Modules whose figures register on import, in the order they run.
FIGURE_MODULES = ("app.bench_http",)


def figure(name: str) -> Callable[[FigureFn], FigureFn]:
    def register(fn: FigureFn) -> FigureFn:
        FIGURES[name] = fn
        return fn

    return register


def make_figure(
    name: str, value: float, unit: str, baseline_name: str, baseline_value: float,
    goal: float | None, *, better: str = "higher", **extra: Any,
) -> Figure:
    """A figure in the DESIGN.md shape. `goal` None: reported only (no goal to meet)."""
    ratio = round(value / baseline_value, 3) if baseline_value else 0.0
    fig: Figure = {
        "name": name,
        "value": _round(value),
        "unit": unit,
        "baseline": {"name": baseline_name, "value": _round(baseline_value)},
        "ratio": ratio,
        "goal": goal,
        "better": better,
        "goal_met": _goal_met(ratio, goal, better),
    }
    return with_fields(fig, extra)


def with_fields(fig: Figure, fields: dict[str, object]) -> Figure:
    """`fig` with added fields (latencies, notes); floats rounded like the figure's own."""
    fig.update({k: (_round(v) if isinstance(v, float) else v) for k, v in fields.items()})
    return fig


def _round(value: float) -> float:
    """One decimal for large numbers, three for small ones (ms per read, ratios of them)."""
    return round(value, 1) if abs(value) >= 100 else round(value, 3)


def _goal_met(ratio: float, goal: float | None, better: str) -> bool | None:
    if goal is None:
        return None
    return ratio <= goal if better == "lower" else ratio >= goal


def postgres_url() -> str | None:
    """The PostgreSQL server to bench against, as a SQLAlchemy psycopg URL, or None.

    BENCH_POSTGRES_URL, TEST_POSTGRES_URL or DATABASE_URL when one names PostgreSQL; otherwise
    postgres@127.0.0.1:5432 (database `postgres`) when something listens there."""
    for name in ("BENCH_POSTGRES_URL", "TEST_POSTGRES_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgresql", "postgres://")):
            scheme, rest = url.split("://", 1)
            return f"postgresql+psycopg://{rest}" if "+" not in scheme else url
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), 0.5):
        return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    return None


@figure("store_debits_sqlite")
def store_debits_sqlite(ctx: BenchContext) -> Figure:
    """Sequential usage debits through LedgerService + SqlStore vs raw sqlite3."""
    from adapters.sql.engine import make_engine
    from adapters.sql.store import SqlStore
    from app.domain.catalog import load_catalog
    from app.services.ledger import LedgerService
    from app.settings import DEFAULT_CATALOG

    quick = ctx.quick
    n = 500 if quick else 5000
    rounds = 1 if quick else 2

    def ours() -> float:
        path = ctx.sqlite_database("ours")
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
        path = ctx.sqlite_database("raw")
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


@figure("store_debits_postgres")
def store_debits_postgres(ctx: BenchContext) -> Figure | None:
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

    from sqlalchemy.engine import make_url

    from adapters.sql.engine import make_engine
    from adapters.sql.store import SqlStore
    from app.domain.catalog import load_catalog
    from app.services.ledger import LedgerService
    from app.settings import DEFAULT_CATALOG

    if _shutil.which("pgbench") is None:
        raise FigureSkipped("pgbench is not installed")
    clients, seconds = 4, (2 if ctx.quick else 10)
    scratch = ctx.postgres_database("store")
    url = make_url(scratch)
    store = SqlStore(make_engine(scratch, pool_size=clients))
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
                 "-U", url.username or "postgres", str(url.database)]
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", *conn_args], check=True,
                   capture_output=True, env={**os.environ, **env})
    out = subprocess.run(
        ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), *conn_args],
        check=True, capture_output=True, text=True,
        env={**os.environ, **env},
    ).stdout
    tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines()
               if line.startswith("tps ="))
    return make_figure("store_debits_postgres", ours, "debits/s",
                       f"pgbench TPC-B-like, {clients} clients", tps, 0.25)


def _run_once(only: set[str] | None, quick: bool, seconds: float | None,
              server: tuple[int | None, int | None],
              progress: bool) -> tuple[list[Figure], list[dict[str, str]]]:
    figures: list[Figure] = []
    skipped: list[dict[str, str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="kc-bench-"))
    ctx = BenchContext(quick=quick, workdir=workdir, seconds=seconds, workers=server[0],
                       threads=server[1])
    run_started = time.monotonic()
    try:
        with ctx.stack:
            for name, fn in FIGURES.items():
                if only and name not in only:
                    continue
                if progress:
                    print(f"measuring {name} ...", file=sys.stderr, flush=True)
                figure_started = time.monotonic()
                try:
                    result = fn(ctx)
                except FigureSkipped as exc:
                    result, reason = None, str(exc)
                except Exception as exc:  # one broken figure must not hide the others
                    import traceback

                    if progress:
                        traceback.print_exc(file=sys.stderr)
                    result, reason = None, f"FAILED: {type(exc).__name__}: {exc}"[:500]
                else:
                    reason = "not available here"
                if result is None:
                    if progress:
                        print(f"  skipped {name}: {reason}", file=sys.stderr)
                    skipped.append({"name": name, "reason": reason})
                    continue
                figures.append(result)
                if progress:
                    print(f"  {time.monotonic() - figure_started:.1f} s", file=sys.stderr)
            if progress:
                print(f"stopping servers ({time.monotonic() - run_started:.0f} s in)",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures, skipped


def _median_figure(runs: list[Figure]) -> Figure:
    """One figure from several runs of it: the median of every number."""
    fig = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            median = statistics.median(float(r[key]) for r in runs)
            fig[key] = round(median, 3) if key == "ratio" else _round(median)
    fig["baseline"] = {"name": runs[0]["baseline"]["name"],
                       "value": _round(statistics.median(r["baseline"]["value"] for r in runs))}
    fig["goal_met"] = _goal_met(fig["ratio"], fig["goal"], fig.get("better", "higher"))
    fig["runs"] = len(runs)
    return fig


def load_figures() -> None:
    for module in FIGURE_MODULES:
        __import__(module)


def run_bench(*, quick: bool = False, only: set[str] | None = None, runs: int = 1,
              seconds: float | None = None, workers: int | None = None,
              threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    load_figures()
    unknown = (only or set()) - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figure(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(FIGURES)}")
    started = time.monotonic()
    per_name: dict[str, list[Figure]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for n in range(max(1, runs)):
        if progress and runs > 1:
            print(f"run {n + 1} of {runs}", file=sys.stderr, flush=True)
        figures, missing = _run_once(only, quick, seconds, (workers, threads), progress)
        for fig in figures:
            per_name.setdefault(fig["name"], []).append(fig)
        for item in missing:
            skipped.setdefault(item["name"], item)
    result = [_median_figure(f) if len(f) > 1 else f[0] for f in per_name.values()]
    missing = [item for name, item in skipped.items() if name not in per_name]
    return {
        "figures": result,
        "skipped": [item for item in missing if not item["reason"].startswith("FAILED")],
        "failed": [item for item in missing if item["reason"].startswith("FAILED")],
        "quick": quick,
        "runs": max(1, runs),
        "machine": machine(),
        "took_seconds": round(time.monotonic() - started, 1),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from app.bench_load import wrk_path

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "sqlite": sqlite3.sqlite_version, "system": platform.platform(terse=True),
            "load_generator": "wrk" if wrk_path() else "python",
            "date": datetime.now(UTC).strftime("%Y-%m-%d")}


def as_text(report: dict[str, Any]) -> str:
    lines = []
    for fig in report["figures"]:
        base = fig["baseline"]
        mark = {True: "met", False: "BELOW GOAL", None: "reported"}[fig["goal_met"]]
        sign = "<=" if fig["better"] == "lower" else ">="
        goal = "" if fig["goal"] is None else f" (goal {sign} {fig['goal']}: {mark})"
        ours, theirs = _latency(fig, ""), _latency(fig, "baseline_")
        latency = (f"  p50/p99 {ours} ms" if ours else "") + (f" vs {theirs} ms" if theirs
                                                               else "")
        lines.append(f"{fig['name']:<34} {_fmt(fig['value']):>10} {fig['unit']:<12} baseline "
                     f"{base['name']} {_fmt(base['value'])}  ratio {fig['ratio']:.2f}{goal}"
                     f"{latency}")
    for item in report.get("skipped", []) + report.get("failed", []):
        lines.append(f"{item['name']:<34} skipped: {item['reason']}")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _latency(fig: Figure, prefix: str) -> str:
    """ "p50 / p99" in ms, "-" for a percentile the figure does not have."""
    if f"{prefix}p50_ms" not in fig and f"{prefix}p99_ms" not in fig:
        return ""
    return " / ".join(f"{fig[key]:.1f}" if key in fig else "-"
                      for key in (f"{prefix}p50_ms", f"{prefix}p99_ms"))


def as_markdown(report: dict[str, Any]) -> str:
    """docs/benchmarks.md: the machine, the table, and how to reproduce it."""
    m = report["machine"]
    out = [
        "# Benchmarks",
        "",
        f"Measured {m['date']} with `kinde-credits bench --runs {report['runs']}"
        f"{' --quick' if report['quick'] else ''} --markdown` (each number the median of "
        f"{report['runs']} run(s); the whole run took {report['took_seconds']:.0f} s).",
        "",
        f"Machine: {m['cpus']} CPU(s) {m['cpu']}; {m['system']}; Python {m['python']}; "
        f"SQLite {m['sqlite']}; load from {m['load_generator']} (16 keep-alive connections); "
        f"load average when the run started {m.get('load_average', '?')}.",
        "",
        "Every figure is measured beside its baseline - the least work it needs - in the same "
        "run, on the same server options; the ratio is figure / baseline. `better: lower` "
        "figures meet their goal at or below it.",
        "",
        "| Figure | Value | p50 / p99 ms | Baseline (same run) | Baseline p50 / p99 ms | "
        "Ratio | Goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for fig in report["figures"]:
        base = fig["baseline"]
        lat, base_lat = _latency(fig, ""), _latency(fig, "baseline_")
        if fig["goal"] is None:
            goal = "reported"
        else:
            sign = "<=" if fig["better"] == "lower" else ">="
            goal = f"{sign} {fig['goal']} {'✓' if fig['goal_met'] else '✗'}"
        out.append(f"| `{fig['name']}` | {_fmt(fig['value'])} {fig['unit']} | {lat} | "
                   f"{base['name']}: {_fmt(base['value'])} | {base_lat} | {fig['ratio']:.2f} | "
                   f"{goal} |")
    for item in report.get("skipped", []) + report.get("failed", []):
        out.append(f"| `{item['name']}` | skipped: {item['reason']} | | | | | |")
    notes = [f"- `{fig['name']}`: {fig['note']}" for fig in report["figures"] if fig.get("note")]
    if notes:
        out += ["", "Notes from the run:", "", *notes]
    out += [
        "",
        "## What each figure measures",
        "",
        "- `http_usage_*`: `POST /v1/wallets/{id}/usage` (auth, validation, debit, entry, "
        "outbox, alerts) with a real Kinde-style RS256 access token and its own "
        "`Idempotency-Key` per request, on one wallet and spread over 16, from 16 keep-alive "
        "connections. The service runs in Kinde mode against a tiny local Kinde "
        "(`app/bench_kinde.py`: JWKS, M2M tokens, an API sink) with `kinde-credits worker` "
        "delivering the outbox to it. Baseline: a minimal Flask view that parses the same body "
        "and does only the raw conditional `UPDATE wallets SET balance = balance - ? WHERE id = "
        "? AND balance >= ?`, one ledger `INSERT` and a durable commit (`sqlite3`, or psycopg "
        "on PostgreSQL), under the same gunicorn options.",
        "- `webhook_usage_sqlite`: signed `customer.meter_usage_updated` deliveries, each with "
        "its own event id, vs a handler that verifies the same JWT with PyJWT and does the "
        "same raw debit.",
        "- `batch_usage_1000_sqlite`: `POST /v1/usage/batch` with 1,000 records, one request "
        "at a time, vs raw `sqlite3` doing the same 1,000 conditional updates and inserts in "
        "one transaction.",
        "- `http_wallet_read_sqlite`: `GET /v1/wallets/{id}` vs `GET /bench/noop` on the same "
        "server (a route only the bench's server process has).",
        "- `balance_read_1m_entries_sqlite`: the same read of a wallet with 1,000,000 ledger "
        "entries (bulk-inserted with raw SQL, invariants kept: balance = entries = blocks) vs "
        "one with 1,000; server time per read, lower is better (`--quick`: 100,000).",
        "- `worker_peak_rss_sqlite`: peak resident memory (VmHWM) of the largest serving "
        "gunicorn worker after the load, beside the least-work app's; reported, no goal.",
        "- `store_debits_*`: debits through `LedgerService` without HTTP, vs raw `sqlite3` "
        "(sequential) and `pgbench`'s TPC-B-like script (4 clients).",
        "",
        "Server settings: `app/wsgi_server.py` `SERVER_DEFAULTS` (what `kinde-credits serve` "
        "uses without `--workers`/`--threads`), the same for the service and its baseline.",
        "",
        "## How to reproduce",
        "",
        "```",
        "source .venv/bin/activate",
        "export TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test  "
        "# optional: PostgreSQL figures",
        "kinde-credits bench --runs 3 --markdown > docs/benchmarks.md",
        "```",
        "",
        "`kinde-credits bench --json` gives the same figures for machines; `--only NAME` runs "
        "some of them; `--quick` keeps a run under a minute.",
        "",
    ]
    return "\n".join(out)
