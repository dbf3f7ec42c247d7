"""The least-work handlers `kinde-credits bench` compares the service with.

Each is the minimum a request of its kind must do, written by hand, served by the same gunicorn
options as the service (`app.wsgi_server.run_gunicorn`):
- `POST /v1/wallets/<id>/usage`: a minimal Flask view that parses the same JSON body, runs
  only the raw conditional `UPDATE wallets SET balance = balance - ? WHERE id = ? AND
  balance >= ?`, one ledger `INSERT` and a durable commit (402 when the update matched nothing);
- `POST /webhooks/kinde`: verifies the same RS256 JWT with PyJWT (key from the same JWKS,
  fetched once at start) and does the same raw debit for the event's customer;
- `GET /bench/noop`: nothing, so the server itself can be told apart from the handlers.
SQLite uses `sqlite3` with the store's PRAGMAs (WAL, synchronous=FULL, busy_timeout) and
`BEGIN IMMEDIATE`; PostgreSQL uses psycopg with its default (durable) commit. One connection
per serving thread, opened on first use. Settings come from the environment, since gunicorn
builds the app in each worker: BENCH_BASELINE_DATABASE (a SQLAlchemy-style URL),
BENCH_BASELINE_JWKS_URL and BENCH_BASELINE_CREDITS_PER_UNIT (a JSON object: feature -> credits).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

Debit = Callable[[str, str, int, str], bool]

_UPDATE = "UPDATE wallets SET balance = balance - {p} WHERE id = {p} AND balance >= {p}"
_UPDATE_BY_CUSTOMER = ("UPDATE wallets SET balance = balance - {p} "
                       "WHERE billing_customer_id = {p} AND balance >= {p} RETURNING id")
_INSERT = ("INSERT INTO entries (wallet_id, kind, amount, balance_after, reason, description, "
           "created_at) VALUES ({p}, 'usage', {p}, 0, {p}, '', {p})")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sqlite_debit(path: str) -> tuple[Debit, Debit]:
    """Debits by wallet id and by billing customer id on a thread-local `sqlite3` connection."""
    local = threading.local()

    def conn() -> sqlite3.Connection:
        found: sqlite3.Connection | None = getattr(local, "conn", None)
        if found is None:
            found = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                           "busy_timeout=30000"):
                found.execute(f"PRAGMA {pragma}")
            local.conn = found
        return found

    def by_id(wallet_id: str, _: str, credits: int, reason: str) -> bool:
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute(_UPDATE.format(p="?"), (credits, wallet_id, credits)).rowcount != 1:
                c.execute("ROLLBACK")
                return False
            c.execute(_INSERT.format(p="?"), (wallet_id, -credits, reason, _now()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return True

    def by_customer(_: str, customer_id: str, credits: int, reason: str) -> bool:
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(_UPDATE_BY_CUSTOMER.format(p="?"),
                            (credits, customer_id, credits)).fetchone()
            if row is None:
                c.execute("ROLLBACK")
                return False
            c.execute(_INSERT.format(p="?"), (row[0], -credits, reason, _now()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return True

    return by_id, by_customer


def postgres_debit(url: str) -> tuple[Debit, Debit]:
    """The same two debits through psycopg, one connection per thread."""
    import psycopg

    local = threading.local()

    def conn() -> psycopg.Connection[Any]:
        found: psycopg.Connection[Any] | None = getattr(local, "conn", None)
        if found is None:
            found = psycopg.connect(url)
            local.conn = found
        return found

    def by_id(wallet_id: str, _: str, credits: int, reason: str) -> bool:
        c = conn()
        with c.transaction():
            if c.execute(_UPDATE.format(p="%s"), (credits, wallet_id, credits)).rowcount != 1:
                return False
            c.execute(_INSERT.format(p="%s"), (wallet_id, -credits, reason, _now()))
        return True

    def by_customer(_: str, customer_id: str, credits: int, reason: str) -> bool:
        c = conn()
        with c.transaction():
            row = c.execute(_UPDATE_BY_CUSTOMER.format(p="%s"),
                            (credits, customer_id, credits)).fetchone()
            if row is None:
                return False
            c.execute(_INSERT.format(p="%s"), (row[0], -credits, reason, _now()))
        return True

    return by_id, by_customer


def psycopg_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as libpq takes it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def create_baseline_app() -> Flask:
    """The least-work app, configured from the environment (see the module docstring)."""
    import jwt

    database = os.environ["BENCH_BASELINE_DATABASE"]
    if database.startswith("sqlite"):
        debit_by_id, debit_by_customer = sqlite_debit(database.split(":///", 1)[1])
    else:
        debit_by_id, debit_by_customer = postgres_debit(psycopg_url(database))
    credits_per_unit: dict[str, int] = json.loads(
        os.environ.get("BENCH_BASELINE_CREDITS_PER_UNIT", "{}"))
    keys: dict[str, Any] = {}
    jwks_url = os.environ.get("BENCH_BASELINE_JWKS_URL")
    if jwks_url:
        for jwk in jwt.PyJWKClient(jwks_url).get_signing_keys():
            keys[jwk.key_id or ""] = jwk.key

    app = Flask(__name__)

    @app.post("/v1/wallets/<wallet_id>/usage")
    def usage(wallet_id: str) -> tuple[Response, int]:
        body = request.get_json()
        feature = body["feature"]
        credits = int(body["quantity"]) * credits_per_unit.get(feature, 1)
        if not debit_by_id(wallet_id, "", credits, f"api:{feature}"):
            return jsonify(error={"code": "insufficient_credits"}), 402
        return jsonify(wallet_id=wallet_id, credits=credits), 200

    @app.post("/webhooks/kinde")
    def webhook() -> tuple[Response, int]:
        token = request.get_data()
        kid = jwt.get_unverified_header(token).get("kid", "")
        claims = jwt.decode(token, keys[kid], algorithms=["RS256"])
        data = claims["data"]
        credits = int(data["meter_value"]) * credits_per_unit.get(data["feature_code"], 1)
        debit_by_customer("", data["customer_id"], credits, f"kinde:{data['feature_code']}")
        return jsonify(status="processed"), 200

    @app.get("/bench/noop")
    def noop() -> Response:
        return jsonify(ok=True)

    return app
