"""The HTTP figures of `kinde-credits bench`: the real server beside least-work handlers.

For each database (SQLite always; PostgreSQL when one answers, see `app.bench.postgres_url`)
the first figure that needs it starts a *stack*:
- the service under gunicorn (`app.bench_servers service`, the `serve` options from
  `app.wsgi_server.server_defaults`) in Kinde mode against a tiny local Kinde
  (`app.bench_kinde`: JWKS, M2M tokens, an API sink), with `kinde-credits worker` running
  beside it, on a fresh database; 16 user wallets with credits, each mapped to a billing
  customer and agreement by a signed `customer.agreement_created` delivery, so usage also
  writes the outbox the worker delivers to the fake Kinde;
- the least-work app (`app.bench_baseline`) under the same gunicorn options, on its own fresh
  database with the same 16 wallets.
Each figure measures its side and its baseline back to back with the same load
(`app.bench_load`: wrk with 16 keep-alive connections, or the Python fallback).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.bench import (
    BenchContext,
    Figure,
    figure,
    make_figure,
    with_fields,
)
from app.bench_load import Load, LoadResult, run_load
from app.bench_servers import NOOP_PATH, ServerProcess, WorkerProcess, stop_all

WALLETS = 16
START_CREDITS = 10**12
USAGE_BODY = json.dumps({"feature": "api_call", "quantity": 1})
BATCH_SIZE = 1000


@dataclass
class Stack:
    """The service and its least-work twin for one database, with what the figures need."""

    database: str  # "sqlite" or "postgres"
    service: ServerProcess
    baseline: ServerProcess
    service_db: str
    baseline_db: str
    write_auth: str
    read_auth: str
    wallets: list[str]
    note: str
    warmed: set[str] = field(default_factory=set)

    def usage_load(self, wallets: list[str]) -> Load:
        return Load("POST", [f"/v1/wallets/{w}/usage" for w in wallets], body=USAGE_BODY,
                    headers={"Authorization": self.write_auth,
                             "Content-Type": "application/json"},
                    idempotency_keys=True)


def _kinde(ctx: BenchContext) -> object:
    from app.bench_kinde import BenchKinde

    return ctx.resource("kinde", lambda c: c.stack.enter_context(BenchKinde(c.workdir)))


def _seed_baseline(url: str, wallets: list[str]) -> None:
    from sqlalchemy import create_engine, text

    now = datetime.now(UTC).replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as conn:
        for n, wallet in enumerate(wallets):
            conn.execute(text(
                "INSERT INTO wallets (id, owner_type, balance, held, arrears, overdraft_limit, "
                "reference_balance, auto_recharge_enabled, billing_customer_id, created_at, "
                "updated_at) VALUES (:id, 'user', :balance, 0, 0, 0, :balance, false, "
                ":customer, :now, :now)"),
                {"id": wallet, "balance": START_CREDITS, "customer": f"customer_bench{n}",
                 "now": now})
    engine.dispose()


def own_environment() -> dict[str, str]:
    """The environment for the bench's servers and worker, before the bench adds its own
    settings: the caller's, less every service setting (`app.settings.SETTING_NAMES`) and
    `KINDE_*` / `BENCH_BASELINE_*` variable. Each setting is present but empty, which reads
    as unset and also shadows a `.env` file in the working directory, so the bench runs the
    same whatever `CREDITS_CATALOG`, `DATABASE_URL` or the rest say."""
    import os

    from app.settings import SETTING_NAMES

    env = {k: v for k, v in os.environ.items()
           if k not in SETTING_NAMES and not k.startswith(("KINDE_", "BENCH_BASELINE_"))}
    return {**env, **dict.fromkeys(SETTING_NAMES, "")}


def _make_stack(ctx: BenchContext, database: str) -> Stack:

    import requests

    from app.bench_kinde import BenchKinde
    from app.domain.catalog import load_catalog
    from app.settings import DEFAULT_CATALOG
    from app.wsgi_server import server_defaults

    kinde = _kinde(ctx)
    assert isinstance(kinde, BenchKinde)
    if database == "sqlite":
        service_db = f"sqlite:///{ctx.sqlite_database('service')}"
        baseline_db = f"sqlite:///{ctx.sqlite_database('baseline')}"
    else:
        service_db = ctx.postgres_database("service")
        baseline_db = ctx.postgres_database("baseline")
    wallets = [f"kp_bench{n}" for n in range(WALLETS)]
    _seed_baseline(baseline_db, wallets)

    catalog = load_catalog(DEFAULT_CATALOG)
    credits_per_unit: dict[str, int] = {}
    for name, feature in catalog.features.items():
        credits_per_unit[name] = feature.credits_per_unit
        credits_per_unit[feature.kinde_feature_code] = feature.credits_per_unit

    base_env = own_environment()
    var = ctx.workdir / f"var-{database}"
    var.mkdir(exist_ok=True)
    service_env = {**base_env, **kinde.env(), "DATABASE_URL": service_db,
                   "CREDITS_CATALOG": str(DEFAULT_CATALOG),
                   "KINDE_CREDITS_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"}
    baseline_env = {**base_env, "BENCH_BASELINE_DATABASE": baseline_db,
                    "BENCH_BASELINE_JWKS_URL": f"{kinde.url}/.well-known/jwks.json",
                    "BENCH_BASELINE_CREDITS_PER_UNIT": json.dumps(credits_per_unit)}
    defaults = server_defaults(service_db)
    workers, threads = ctx.workers or defaults.workers, ctx.threads or defaults.threads
    service = ServerProcess("service", service_env, workers, threads,
                            ctx.workdir / f"service-{database}.log")
    baseline = ServerProcess("baseline", baseline_env, workers, threads,
                             ctx.workdir / f"baseline-{database}.log")
    worker = WorkerProcess(service_env, ctx.workdir / f"worker-{database}.log")
    ctx.stack.callback(stop_all, [service, baseline, worker])
    service.wait_ready()
    baseline.wait_ready()

    admin = {"Authorization": f"Bearer {kinde.access_token(['credits:admin'])}"}
    with requests.Session() as http:
        for n, wallet in enumerate(wallets):
            answer = http.post(f"{service.url}/v1/wallets/{wallet}/top-ups", headers=admin,
                               json={"credits": START_CREDITS, "reason": "bench"}, timeout=30)
            answer.raise_for_status()
            mapped = http.post(
                f"{service.url}/webhooks/kinde",
                data=kinde.webhook("customer.agreement_created", {
                    "customer_id": f"customer_bench{n}", "agreement_id": f"agreement_bench{n}",
                    "user_id": wallet, "plan_code": "pro"}),
                headers={"Content-Type": "application/jwt"}, timeout=30)
            mapped.raise_for_status()
    note = (f"Kinde mode against a local fake Kinde, worker running; gunicorn {workers} "
            f"workers x {threads} threads")
    return Stack(database=database, service=service, baseline=baseline, service_db=service_db,
                 baseline_db=baseline_db,
                 write_auth=f"Bearer {kinde.access_token(['credits:write'])}",
                 read_auth=f"Bearer {kinde.access_token(['credits:read'])}",
                 wallets=wallets, note=note)


def _stack(ctx: BenchContext, database: str) -> Stack:
    stack = ctx.resource(f"stack-{database}", lambda c: _make_stack(c, database))
    assert isinstance(stack, Stack)
    return stack


def _warm(ctx: BenchContext, stack: Stack) -> None:
    """One short round on both servers first: every worker, thread and connection pool warm."""
    if "usage" in stack.warmed:
        return
    load = stack.usage_load(stack.wallets)
    run_load(stack.service.url, load, 1.0)
    run_load(stack.baseline.url, load, 1.0)
    stack.warmed.add("usage")


def _pair(ours: LoadResult, base: LoadResult) -> dict[str, object]:
    return {"p50_ms": ours.p50_ms, "p99_ms": ours.p99_ms, "baseline_p50_ms": base.p50_ms,
            "baseline_p99_ms": base.p99_ms, "requests": ours.requests,
            "baseline_requests": base.requests, "errors": ours.errors,
            "baseline_errors": base.errors, "generator": ours.generator}


def _usage_figure(ctx: BenchContext, database: str, spread: bool) -> Figure:
    stack = _stack(ctx, database)
    _warm(ctx, stack)
    load = stack.usage_load(stack.wallets if spread else stack.wallets[:1])
    base = run_load(stack.baseline.url, load, ctx.load_seconds)
    ours = run_load(stack.service.url, load, ctx.load_seconds)
    from app.bench_kinde import BenchKinde

    kinde = _kinde(ctx)
    assert isinstance(kinde, BenchKinde)
    where = "16 wallets" if spread else "one wallet"
    name = f"http_usage_{'16_wallets' if spread else 'one_wallet'}_{database}"
    return with_fields(make_figure(
        name, ours.requests_per_second, "requests/s",
        f"least-work Flask handler (raw conditional UPDATE + INSERT + commit), {where}",
        base.requests_per_second, 1.0, database=database,
        note=f"POST /v1/wallets/{{id}}/usage, own Idempotency-Key each, {where}; {stack.note}"),
        {**_pair(ours, base), "kinde_api_calls_so_far": kinde.api_calls})


@figure("http_usage_one_wallet_sqlite")
def http_usage_one_wallet_sqlite(ctx: BenchContext) -> Figure:
    return _usage_figure(ctx, "sqlite", spread=False)


@figure("http_usage_16_wallets_sqlite")
def http_usage_16_wallets_sqlite(ctx: BenchContext) -> Figure:
    return _usage_figure(ctx, "sqlite", spread=True)


# -- webhooks ------------------------------------------------------------------------------


def _sign_deliveries(ctx: BenchContext, count: int, path: Path) -> Path:
    from app.bench_kinde import BenchKinde

    kinde = _kinde(ctx)
    assert isinstance(kinde, BenchKinde)
    with path.open("w") as out:
        for n in range(count):
            out.write(kinde.webhook("customer.meter_usage_updated", {
                "customer_id": f"customer_bench{n % WALLETS}", "feature_code": "storage_gb",
                "meter_value": "1"}) + "\n")
    return path


@figure("webhook_usage_sqlite")
def webhook_usage_sqlite(ctx: BenchContext) -> Figure:
    """Signed `customer.meter_usage_updated` deliveries, each with its own event id.

    Each delivery may be used once on the service (a second one would be a cheap duplicate),
    so enough are signed for the measured seconds: a one-second probe with its own deliveries
    estimates the rate first. The least-work handler keeps no event ids, so it cycles through
    the same deliveries."""
    stack = _stack(ctx, "sqlite")
    _warm(ctx, stack)
    import requests

    headers = {"Content-Type": "application/jwt"}
    check = _sign_deliveries(ctx, 1, ctx.workdir / "webhook-check.txt").read_text().strip()
    answer = requests.post(f"{stack.service.url}/webhooks/kinde", data=check, headers=headers,
                           timeout=30)
    if answer.status_code != 200 or answer.json().get("status") != "processed":
        # Measuring parked or refused deliveries would flatter the figure: refuse instead.
        raise RuntimeError(f"a bench delivery was not processed: {answer.status_code} "
                           f"{answer.text[:300]}")
    probe = _sign_deliveries(ctx, 600, ctx.workdir / "webhooks-probe.txt")
    probed = run_load(stack.service.url, Load("POST", ["/webhooks/kinde"], bodies_file=probe,
                                              headers=headers), 1.0)
    needed = int(max(probed.requests_per_second, 100) * ctx.load_seconds * 1.5) + 200
    bodies = _sign_deliveries(ctx, needed, ctx.workdir / "webhooks.txt")
    once = Load("POST", ["/webhooks/kinde"], bodies_file=bodies, headers=headers)
    cycled = Load("POST", ["/webhooks/kinde"], bodies_file=bodies, headers=headers,
                  cycle_bodies=True)
    base = run_load(stack.baseline.url, cycled, ctx.load_seconds)
    ours = run_load(stack.service.url, once, ctx.load_seconds)
    note = "customer.meter_usage_updated, RS256, unique event ids; " + stack.note
    if ours.requests >= needed - 16:
        note += "; ran out of unique deliveries, so the rate is understated"
    return with_fields(make_figure(
        "webhook_usage_sqlite", ours.requests_per_second, "deliveries/s",
        "least-work handler: PyJWT RS256 verify + raw conditional UPDATE + INSERT + commit",
        base.requests_per_second, 0.5, database="sqlite", note=note), _pair(ours, base))


# -- batch ---------------------------------------------------------------------------------


def _raw_batches(path: str, wallets: list[str], batches: int) -> float:
    """Records/s of raw sqlite3: BATCH_SIZE conditional updates and inserts per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                   "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    started = time.perf_counter()
    for _ in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        for n in range(BATCH_SIZE):
            wallet = wallets[n % len(wallets)]
            if conn.execute("UPDATE wallets SET balance = balance - ? WHERE id = ? "
                            "AND balance >= ?", (1, wallet, 1)).rowcount == 1:
                conn.execute(
                    "INSERT INTO entries (wallet_id, kind, amount, balance_after, reason, "
                    "description, created_at) VALUES (?, 'usage', -1, 0, 'api:api_call', '', ?)",
                    (wallet, now))
        conn.execute("COMMIT")
    took = time.perf_counter() - started
    conn.close()
    return batches * BATCH_SIZE / took


@figure("batch_usage_1000_sqlite")
def batch_usage_1000_sqlite(ctx: BenchContext) -> Figure:
    """`POST /v1/usage/batch` with 1,000 records (16 wallets), one request at a time, vs raw
    sqlite3 doing the same conditional updates and inserts for 1,000 records in one
    transaction (its own database with the same schema and PRAGMAs)."""
    import uuid

    import requests

    stack = _stack(ctx, "sqlite")
    batches = 1 if ctx.quick else 3
    records = [{"wallet_id": stack.wallets[n % WALLETS], "feature": "api_call", "quantity": 1}
               for n in range(BATCH_SIZE)]
    raw_path = ctx.sqlite_database("batch-raw")
    _seed_baseline(f"sqlite:///{raw_path}", stack.wallets)
    raw = _raw_batches(raw_path, stack.wallets, batches)
    took: list[float] = []
    with requests.Session() as http:
        headers = {"Authorization": stack.write_auth}
        for n in range(batches + 1):  # the first, of 16 records, is a warm-up
            started = time.perf_counter()
            answer = http.post(f"{stack.service.url}/v1/usage/batch",
                               json={"records": records if n else records[:WALLETS]},
                               headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                               timeout=120)
            if n:
                took.append(time.perf_counter() - started)
            answer.raise_for_status()
            failed = [r for r in answer.json()["results"] if not 200 <= r["status"] < 300]
            if failed:
                raise RuntimeError(f"batch records failed: {failed[:3]}")
    ours = batches * BATCH_SIZE / sum(took)
    return with_fields(make_figure(
        "batch_usage_1000_sqlite", ours, "records/s",
        "raw sqlite3: 1,000 conditional UPDATE + INSERT in one transaction", raw, 0.25,
        database="sqlite", p50_ms=statistics.median(took) * 1000,
        note=f"{batches} batches of 1,000 records over 16 wallets, one at a time; "
             f"{stack.note}"), {})


# -- reads ---------------------------------------------------------------------------------


@figure("http_wallet_read_sqlite")
def http_wallet_read_sqlite(ctx: BenchContext) -> Figure:
    stack = _stack(ctx, "sqlite")
    _warm(ctx, stack)
    auth = {"Authorization": stack.read_auth}
    noop = run_load(stack.service.url, Load("GET", [NOOP_PATH]), ctx.load_seconds)
    ours = run_load(stack.service.url,
                    Load("GET", [f"/v1/wallets/{w}" for w in stack.wallets], headers=auth),
                    ctx.load_seconds)
    return with_fields(make_figure(
        "http_wallet_read_sqlite", ours.requests_per_second, "requests/s",
        "GET /bench/noop on the same server", noop.requests_per_second, 0.5,
        database="sqlite", note="GET /v1/wallets/{id} over 16 wallets; " + stack.note),
        _pair(ours, noop))


def _bulk_usage_entries(db_url: str, wallet: str, count: int) -> None:
    """Append `count` one-credit usage entries (and their block draws) to `wallet` with raw
    SQL, keeping the ledger's invariants: balance = sum of entries = blocks' remaining."""
    path = db_url.split(":///", 1)[1]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    conn.execute("BEGIN IMMEDIATE")
    balance, = conn.execute("SELECT balance FROM wallets WHERE id = ?", (wallet,)).fetchone()
    block, = conn.execute("SELECT id FROM blocks WHERE wallet_id = ? AND remaining >= ?",
                          (wallet, count)).fetchone()
    first, = conn.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO entries (wallet_id, kind, amount, balance_after, reason, description, "
        "feature, quantity, created_at) SELECT ?, 'usage', -1, ? - i, 'api:api_call', "
        "'-1 credit for API Call (1 API call)', 'api_call', 1, ? FROM n",
        (count, wallet, balance, now))
    conn.execute(
        "INSERT INTO block_draws (entry_id, block_id, credits, kind, created_at) "
        "SELECT id, ?, 1, 'usage', created_at FROM entries WHERE id > ? AND wallet_id = ?",
        (block, first, wallet))
    conn.execute("UPDATE blocks SET remaining = remaining - ? WHERE id = ?", (count, block))
    conn.execute("UPDATE wallets SET balance = balance - ? WHERE id = ?", (count, wallet))
    conn.execute("COMMIT")
    conn.close()


@figure("balance_read_1m_entries_sqlite")
def balance_read_1m_entries_sqlite(ctx: BenchContext) -> Figure:
    """`GET /v1/wallets/{id}` of a wallet with 1,000,000 ledger entries vs one with 1,000, on
    the same server: server time per read (1 / throughput at 16 connections), lower is better.
    `--quick` uses 100,000 entries (said in the figure's note)."""
    import requests

    stack = _stack(ctx, "sqlite")
    _warm(ctx, stack)
    big_count = 100_000 if ctx.quick else 1_000_000
    small, big = "kp_bench_small", "kp_bench_big"
    from app.bench_kinde import BenchKinde

    kinde_admin = _kinde(ctx)
    assert isinstance(kinde_admin, BenchKinde)
    admin = {"Authorization": f"Bearer {kinde_admin.access_token(['credits:admin'])}"}
    with requests.Session() as http:
        for wallet, count in ((small, 1_000), (big, big_count)):
            http.post(f"{stack.service.url}/v1/wallets/{wallet}/top-ups", headers=admin,
                      json={"credits": count + 1_000_000, "reason": "bench"},
                      timeout=30).raise_for_status()
            _bulk_usage_entries(stack.service_db, wallet, count - 1)  # + the grant entry
    auth = {"Authorization": stack.read_auth}
    small_load = run_load(stack.service.url, Load("GET", [f"/v1/wallets/{small}"], headers=auth),
                          ctx.load_seconds)
    big_load = run_load(stack.service.url, Load("GET", [f"/v1/wallets/{big}"], headers=auth),
                        ctx.load_seconds)

    def ms_per_read(result: LoadResult) -> float:
        return 1000.0 / result.requests_per_second if result.requests_per_second else 0.0

    label = f"{big_count:,}"
    return with_fields(make_figure(
        "balance_read_1m_entries_sqlite", ms_per_read(big_load), "ms/read",
        "the same read at 1,000 entries", ms_per_read(small_load), 1.2, better="lower",
        database="sqlite",
        note=f"GET /v1/wallets/{{id}} at {label} entries vs 1,000; server time per read "
             f"(1 / throughput, 16 connections); lower is better"),
        _pair(big_load, small_load))


@figure("worker_peak_rss_sqlite")
def worker_peak_rss_sqlite(ctx: BenchContext) -> Figure:
    """Peak resident memory (VmHWM) of a serving gunicorn worker after the load, beside the
    least-work app's worker. Reported, no goal."""
    stack = _stack(ctx, "sqlite")
    _warm(ctx, stack)  # at least one round of load, even with --only
    return with_fields(make_figure(
        "worker_peak_rss_sqlite", stack.service.peak_rss_mb(), "MiB",
        "least-work handler's worker", stack.baseline.peak_rss_mb(), None, better="lower",
        database="sqlite", note="VmHWM of the largest serving worker after the figures above"), {})


@figure("http_usage_one_wallet_postgres")
def http_usage_one_wallet_postgres(ctx: BenchContext) -> Figure:
    return _usage_figure(ctx, "postgres", spread=False)


@figure("http_usage_16_wallets_postgres")
def http_usage_16_wallets_postgres(ctx: BenchContext) -> Figure:
    return _usage_figure(ctx, "postgres", spread=True)
