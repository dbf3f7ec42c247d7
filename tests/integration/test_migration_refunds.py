"""Migration 0017: purchases made before it can be refunded: their entries and Kinde purchase
rows are linked to the block each sold."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.migrate import alembic_config, upgrade


def test_existing_purchases_are_linked_to_their_blocks(db_url: str) -> None:
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    rendered = url.render_as_string(hide_password=False)
    command.downgrade(alembic_config(rendered), "0016")
    engine = create_engine(url)
    t = datetime(2026, 11, 24, tzinfo=UTC).replace(tzinfo=None)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO wallets (id, owner_type, balance, held, arrears, overdraft_limit, "
                "reference_balance, auto_recharge_enabled, created_at, updated_at) "
                "VALUES ('kp_a', 'user', 5100, 0, 0, 0, 0, false, :t, :t)"), {"t": t})
            for block, kind, amount, reason in (("blk_p", "purchase", 5000, "bundle:starter"),
                                                ("blk_g", "grant", 100, "welcome")):
                conn.execute(text(
                    "INSERT INTO blocks (id, wallet_id, kind, original, remaining, created_at, "
                    "reason) VALUES (:b, 'kp_a', :k, :n, :n, :t, :r)"),
                    {"b": block, "k": kind, "n": amount, "t": t, "r": reason})
                conn.execute(text(
                    "INSERT INTO entries (wallet_id, kind, amount, balance_after, reason, "
                    "description, created_at) VALUES ('kp_a', :k, :n, :n, :r, 'x', :t)"),
                    {"k": kind, "n": amount, "t": t, "r": reason})
            conn.execute(text(
                "INSERT INTO recharges (id, wallet_id, bundle, auto, credits, price, currency, "
                "status, day, created_at, meter) VALUES ('rch_1', 'kp_a', 'starter', false, "
                "5000, '49.00', 'USD', 'invoiced', '2026-11-24', :t, 'bundle:starter')"),
                {"t": t})
        upgrade(rendered)
        with engine.connect() as conn:
            entries = dict(conn.execute(text("SELECT kind, block_id FROM entries")).all())
            sale = conn.execute(text("SELECT block_id, refunded_at FROM recharges")).one()
            refunds = conn.execute(text("SELECT COUNT(*) FROM refunds")).scalar_one()
    finally:
        engine.dispose()
    assert entries == {"purchase": "blk_p", "grant": "blk_g"}
    assert tuple(sale) == ("blk_p", None) and refunds == 0
