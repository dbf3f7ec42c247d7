"""Migration 0006: purchases made before it keep being counted on the pack's sale code."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.migrate import alembic_config, upgrade


def test_existing_purchases_stay_on_the_sale_meter(db_url: str) -> None:
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    rendered = url.render_as_string(hide_password=False)
    command.downgrade(alembic_config(rendered), "0005")
    engine = create_engine(url)
    now = datetime(2026, 11, 24, tzinfo=UTC).replace(tzinfo=None)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO wallets (id, owner_type, balance, held, arrears, overdraft_limit, "
                "reference_balance, auto_recharge_enabled, created_at, updated_at) "
                "VALUES ('kp_a', 'user', 0, 0, 0, 0, 0, false, :t, :t)"), {"t": now})
            for rid, auto in (("rch_1", True), ("rch_2", False)):
                conn.execute(text(
                    "INSERT INTO recharges (id, wallet_id, bundle, auto, credits, price, "
                    "currency, status, day, created_at) VALUES (:id, 'kp_a', 'starter', :auto, "
                    "5000, '44.10', 'USD', 'invoiced', '2026-11-24', :t)"),
                    {"id": rid, "auto": auto, "t": now})
        upgrade(rendered)
        with engine.connect() as conn:
            meters = dict(conn.execute(text("SELECT id, meter FROM recharges")).all())
            conn.execute(text("SELECT failed_version FROM outbox")).all()
    finally:
        engine.dispose()
    # Both were invoiced on credit_pack_starter before the upgrade, so they are counted there.
    assert meters == {"rch_1": "bundle:starter", "rch_2": "bundle:starter"}
