"""Migration 0005 moves customer-keyed absolute meter readings to their wallet."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.sql.migrate import upgrade


def test_readings_rekeyed_keeping_the_higher_total(db_url: str) -> None:
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    now = datetime(2026, 11, 24, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0004')"))
        for wallet, customer in (("kp_a", "customer_a"), ("kp_b", "customer_b")):
            conn.execute(text(
                "INSERT INTO wallets (id, owner_type, balance, held, arrears, overdraft_limit, "
                "reference_balance, auto_recharge_enabled, billing_customer_id, created_at, "
                "updated_at) VALUES (:w, 'user', 0, 0, 0, 0, 0, false, :c, :t, :t)"),
                {"w": wallet, "c": customer, "t": now})
        rows = [("customer_a", 7), ("customer_b", 3), ("kp_b", 5), ("customer_zz", 9)]
        for key, value in rows:
            conn.execute(text(
                "INSERT INTO meter_readings VALUES (:k, 'storage_gb', 'p1', :v, :t)"),
                {"k": key, "v": value, "t": now})
    upgrade(url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT customer_id, last_value FROM meter_readings")).all())
    engine.dispose()
    # a -> moved; b -> merged with the higher total; an unknown customer stays as it was.
    assert got == {"kp_a": 7, "kp_b": 5, "customer_zz": 9}
