"""`GET /metrics` and the operator commands that read the same store-wide figures.

The Prometheus text is pinned exactly: dashboards and alert rules are written against it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import create_engine, insert, update

from adapters.sql import schema as t
from app.bootstrap import Container
from app.cli import main
from tests.http_fixtures import *  # noqa: F403

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(container: Container, db_url: str) -> None:
    container.ledger.grant("kp_alice", 100, "welcome")
    container.ledger.grant("kp_bob", 20, "welcome")
    with container.store(True) as uow:
        uow.outbox.enqueue("notify:log", "alert:kp_bob", "kp_bob", {"n": 1}, WHEN)
        uow.outbox.enqueue("notify:log", "alert:kp_alice", "kp_alice", {"n": 2}, WHEN)
        uow.commit()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(update(t.wallets).where(t.wallets.c.id == "kp_bob")
                     .values(arrears=7, billing_customer_id="customer_bob"))
        conn.execute(update(t.outbox).where(t.outbox.c.topic == "alert:kp_bob")
                     .values(status="dead"))
        conn.execute(insert(t.webhook_events).values(
            event_id="event_1", type="user.created", status="parked", payload="{}",
            raw_body="x", park_reason="waiting", attempts=1, received_at=WHEN))
    engine.dispose()


def test_metrics_text_is_stable(client: FlaskClient, api_container: Container,
                                db_url: str) -> None:
    _seed(api_container, db_url)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    lines = [line for line in response.get_data(as_text=True).splitlines()
             if not line.startswith("#")]
    oldest = next(line for line in lines
                  if line.startswith("kinde_credits_outbox_oldest_pending_seconds "))
    assert float(oldest.split()[1]) > 0  # the pending row was queued in the past
    assert [line for line in lines if line != oldest] == [
        'kinde_credits_outbox_rows{status="pending"} 1.0',
        'kinde_credits_outbox_rows{status="sent"} 0.0',
        'kinde_credits_outbox_rows{status="dead"} 1.0',
        "kinde_credits_outbox_dead_rows 1.0",
        "kinde_credits_wallets 2.0",
        "kinde_credits_balance_total 120.0",
        "kinde_credits_arrears_total 7.0",
        "kinde_credits_webhooks_parked 1.0",
    ]
    text = response.get_data(as_text=True)
    assert "# HELP kinde_credits_balance_total Sum of all wallet balances (credits)\n" in text
    assert "# TYPE kinde_credits_webhooks_parked gauge\n" in text


def test_outbox_command_lists_and_requeues(api_container: Container, db_url: str,
                                           tmp_path: Path) -> None:
    _seed(api_container, db_url)
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    listed = CliRunner().invoke(main, ["outbox", "--status", "dead", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert data["counts"] == {"pending": 1, "sent": 0, "dead": 1}
    assert [row["topic"] for row in data["rows"]] == ["alert:kp_bob"]
    requeued = CliRunner().invoke(main, ["outbox", "--requeue-dead"], env=env)
    assert requeued.exit_code == 0, requeued.output
    assert "requeued 1 dead row(s)" in requeued.output
    assert "pending 2  sent 0  dead 0" in requeued.output


def test_healthz_answers_with_the_database(client: FlaskClient, db_url: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["database"] == ("sqlite" if db_url.startswith("sqlite")
                                               else "postgresql")


def test_healthz_is_503_when_the_database_does_not_answer(
    client: FlaskClient, api_container: Container, tmp_path: Path
) -> None:
    # A database file in a folder that is not there: every connection fails.
    dead = create_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite'}")
    api_container.operations._reader.engine = dead  # type: ignore[attr-defined]
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable"}
