"""Migration 0013 backfills block draws for ledgers written before it: replaying the entries
with the ledger's rules gives exactly the draws the ledger records live."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.migrate import upgrade
from app.bootstrap import build_container
from app.settings import Settings
from tests.conftest import FakeClock
from tests.integration.plan_fixtures import T0, plan_catalog
from tests.integration.test_revenue_identity import _unrefusable_debit

MIGRATION = (Path(__file__).parents[2] / "adapters" / "sql" / "migrations" / "versions"
             / "0013_plan_allotments_and_block_draws.py")
DRAWS = "SELECT entry_id, block_id, credits, kind FROM block_draws ORDER BY entry_id, block_id"


def test_backfill_replays_the_ledger_exactly(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), catalog=plan_catalog(), clock=clock)
    try:
        led = c.ledger
        led.grant("org_m", 100, "welcome")                 # never expires
        led.top_up_bundle("org_m", "odd")                  # 3 credits, expire in 5 days
        led.top_up_bundle("org_m", "pack")                 # 5,000, expire in 365 days
        clock.advance(hours=1)
        led.record_usage("org_m", "api", 2)                # odd first (soonest)
        hold = led.place_hold("org_m", credits=50).body["hold_id"]
        led.capture_hold(hold, 40)                         # odd's last credit, then the pack
        clock.advance(days=6)
        led.sweep_due()
        led.record_usage("org_m", "api", 4960)             # rest of the pack, then the grant
        _unrefusable_debit(c, "org_m", 300)                # 199 in arrears
        led.grant("org_m", 250, "sorry")                   # pays the arrears first
        led.top_up_bundle("org_n", "odd")
        clock.advance(days=6)
        led.sweep_due()                                    # org_n's odd expires untouched
        url = make_url(db_url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url)
        with engine.connect() as conn:
            live = conn.execute(text(DRAWS)).all()
        assert len(live) >= 8
        # Back to a database from before 0013 (no draw records), then upgrade.
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE block_draws"))
            conn.execute(text("DROP TABLE plan_allotments"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                         {"v": _revision_before_0013()})
        upgrade(url.render_as_string(hide_password=False))
        with engine.connect() as conn:
            backfilled = conn.execute(text(DRAWS)).all()
        engine.dispose()
    finally:
        c.close()
    assert backfilled == live


def _revision_before_0013() -> str:
    spec = importlib.util.spec_from_file_location("migration_0013", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.down_revision)
