"""Shared fixtures: catalog, a controllable clock, and migrated databases (SQLite, PostgreSQL).

`db_url` is parametrised over both databases. PostgreSQL is used when TEST_POSTGRES_URL is set
(scripts/test sets it when a server answers on 127.0.0.1:5432); under CI (REQUIRE_POSTGRES=true)
a missing PostgreSQL fails the PostgreSQL tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.store import SqlStore
from app.domain.catalog import Catalog, load_catalog
from app.services.ledger import LedgerService
from app.settings import DEFAULT_CATALOG
from tests.fakes.memory_store import MemoryStore

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES", "").lower() == "true"


class FakeClock:
    """A clock tests move by hand; thread-safe so concurrent tests can share it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **kwargs: float) -> None:
        with self._lock:
            self.now += timedelta(**kwargs)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def memory_ledger(memory_store: MemoryStore, catalog: Catalog, clock: FakeClock) -> LedgerService:
    return LedgerService(memory_store, catalog, clock)


# -- databases -----------------------------------------------------------------------------

_TABLES = (
    "entries", "blocks", "holds", "idempotency_keys", "webhook_events", "meter_readings",
    "outbox", "usage_reports", "billing_agreements", "recharges", "block_draws",
    "plan_allotments", "member_budgets", "member_spend", "member_holds", "refunds",
    "dashboard_link_sessions", "payment_standing", "hold_placers",
)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL is required under CI but TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL not available (set TEST_POSTGRES_URL)")
    admin_url = make_url(POSTGRES_URL)
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    name = f"kc_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required under CI but is not usable: {exc}")
        pytest.skip(f"PostgreSQL not usable: {exc}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _fresh_postgres(url: str) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(_TABLES)}, wallets RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: one per test on SQLite, truncated on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "credits.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    return _fresh_postgres(request.getfixturevalue("_postgres_database"))


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    path = tmp_path / "credits.db"
    shutil.copy(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sql_store(db_url: str) -> Iterator[SqlStore]:
    store = SqlStore(make_engine(db_url, pool_size=20))
    yield store
    store.engine.dispose()


@pytest.fixture
def sql_ledger(sql_store: SqlStore, catalog: Catalog, clock: FakeClock) -> LedgerService:
    return LedgerService(sql_store, catalog, clock)
