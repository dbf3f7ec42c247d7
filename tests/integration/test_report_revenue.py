"""The revenue roll-forward on a real database (both): a hand-computed history, the CLI in its
three formats, and `GET /v1/reports/revenue`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from flask.testing import FlaskClient

from app.bootstrap import Container, build_container
from app.cli import main
from app.services.revenue import revenue_report
from app.settings import Settings
from tests.conftest import FakeClock
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer
from tests.integration.plan_fixtures import plan_catalog


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def history(c: Container, clock: FakeClock) -> None:
    """By hand:
    Jan 1   buy pack: 5,000 credits for 50.00 USD (expires in 365 days); grant 500 (free)
    Jan 10  use 1,200: from the pack (it expires; the grant never does)
    Jan 20  buy odd: 3 credits for 1.00 EUR, expiring Jan 25
    Jan 21  use 1: from odd (expires soonest)        -> 1/3 of 1.00 = 0.33 recognised
    Jan 25  odd's last 2 credits expire              -> 1.00 - 0.33 = 0.67 breakage
    Feb 5   use 3,800: the rest of the pack          -> 38.00 recognised
    Feb 6   use 500: the free grant
    """
    clock.now = at(1, 1)
    c.ledger.top_up_bundle("org_r", "pack")
    c.ledger.grant("org_r", 500, "welcome")
    clock.now = at(1, 10)
    c.ledger.record_usage("org_r", "api", 1200)
    clock.now = at(1, 20)
    c.ledger.top_up_bundle("org_r", "odd")
    clock.now = at(1, 21)
    c.ledger.record_usage("org_r", "api", 1)
    clock.now = at(2, 5)
    c.ledger.record_usage("org_r", "api", 3800)  # the sweep first books odd's expiry (Jan 25)
    clock.now = at(2, 6)
    c.ledger.record_usage("org_r", "api", 500)


def test_hand_computed_roll_forward(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), catalog=plan_catalog(), clock=clock)
    try:
        history(c, clock)
        january = revenue_report(c.store, at(1, 1, 0), at(2, 1, 0))
        february = revenue_report(c.store, at(2, 1, 0), at(3, 1, 0))
        mid = revenue_report(c.store, at(1, 15, 0), at(2, 1, 0))
    finally:
        c.close()
    assert january["currencies"] == {
        "EUR": {"opening_deferred": "0.00", "sales": "1.00", "refunds": "0.00",
                "recognised": "0.33", "breakage": "0.67", "closing_deferred": "0.00",
                "credits": {"opening": 0, "added": 3, "refunded": 0, "used": 1, "expired": 2,
                            "closing": 0}},
        "USD": {"opening_deferred": "0.00", "sales": "50.00", "refunds": "0.00",
                "recognised": "12.00", "breakage": "0.00", "closing_deferred": "38.00",
                "credits": {"opening": 0, "added": 5000, "refunded": 0, "used": 1200,
                            "expired": 0, "closing": 3800}},
    }
    assert january["uncosted_credits"] == {"opening": 0, "added": 500, "refunded": 0,
                                           "used": 0, "expired": 0, "closing": 500}
    # February: the EUR block was used up before it, so only USD moves.
    assert february["currencies"] == {
        "USD": {"opening_deferred": "38.00", "sales": "0.00", "refunds": "0.00",
                "recognised": "38.00", "breakage": "0.00", "closing_deferred": "0.00",
                "credits": {"opening": 3800, "added": 0, "refunded": 0, "used": 3800,
                            "expired": 0, "closing": 0}},
    }
    assert february["uncosted_credits"] == {"opening": 500, "added": 0, "refunded": 0,
                                            "used": 500, "expired": 0, "closing": 0}
    # Any past period, not only "to date": the second half of January.
    assert mid["currencies"]["USD"]["opening_deferred"] == "38.00"
    assert mid["currencies"]["USD"]["recognised"] == "0.00"
    assert (mid["currencies"]["EUR"]["sales"], mid["currencies"]["EUR"]["breakage"]) == (
        "1.00", "0.67")


def test_cli_json_csv_and_text(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), clock=clock)
    try:
        clock.now = at(3, 1)
        c.ledger.top_up_bundle("kp_a", "starter")               # 5,000 credits for 49.00 USD
        c.ledger.record_usage("kp_a", "report_generation", 30)  # 1,500 credits
    finally:
        c.close()
    args = ["report", "revenue", "--since", "2026-03-01", "--until", "2026-04-01T00:00:00Z"]
    data = json.loads(CliRunner().invoke(main, [*args, "--json"], env=env).output)
    usd = data["currencies"]["USD"]
    assert (usd["opening_deferred"], usd["sales"], usd["recognised"], usd["breakage"],
            usd["closing_deferred"]) == ("0.00", "49.00", "14.70", "0.00", "34.30")
    rows = list(csv.DictReader(io.StringIO(
        CliRunner().invoke(main, [*args, "--csv"], env=env).output)))
    assert rows[0]["currency"] == "USD" and rows[0]["recognised"] == "14.70"
    assert rows[0]["credits_used"] == "1500"
    text = CliRunner().invoke(main, args, env=env).output
    assert "recognised 14.70" in text and "closing deferred 34.30" in text
    bad = CliRunner().invoke(main, ["report", "revenue", "--since", "March"], env=env)
    assert bad.exit_code != 0 and "since must be a date" in bad.output
    backwards = CliRunner().invoke(main, ["report", "revenue", "--since", "2026-04-01",
                                          "--until", "2026-03-01"], env=env)
    assert backwards.exit_code != 0 and "until must be after since" in backwards.output


def test_refunds_in_the_roll_forward_and_in_report_refunds(db_url: str,
                                                           tmp_path: Path) -> None:
    clock = FakeClock()
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), clock=clock)
    try:
        clock.now = at(3, 1)
        entry = c.ledger.top_up_bundle("kp_a", "starter").body["entry"]["id"]  # 49.00 USD
        c.ledger.record_usage("kp_a", "report_generation", 30)  # 1,500 credits: 14.70
        clock.now = at(3, 2)
        c.ledger.refund("kp_a", entry, "customer asked, ticket 7")  # 3,500 back: 34.30
    finally:
        c.close()
    args = ["report", "revenue", "--since", "2026-03-01", "--until", "2026-04-01"]
    usd = json.loads(CliRunner().invoke(main, [*args, "--json"], env=env).output)[
        "currencies"]["USD"]
    assert (usd["sales"], usd["refunds"], usd["recognised"], usd["closing_deferred"]) == (
        "49.00", "34.30", "14.70", "0.00")
    assert usd["credits"]["refunded"] == 3500
    row, _uncosted = csv.DictReader(io.StringIO(CliRunner().invoke(main, [*args, "--csv"],
                                                                   env=env).output))
    assert (row["refunds"], row["credits_refunded"]) == ("34.30", "3500")
    assert "- refunds 34.30" in CliRunner().invoke(main, args, env=env).output
    refunds = ["report", "refunds", "--since", "2026-03-01", "--until", "2026-04-01"]
    data = json.loads(CliRunner().invoke(main, [*refunds, "--json"], env=env).output)
    [refund] = data["refunds"]
    assert (refund["wallet_id"], refund["credits"], refund["amount"], refund["invoice"],
            refund["reason"]) == ("kp_a", 3500, "34.30", "credit_note_due",
                                  "customer asked, ticket 7")
    assert data["totals"] == {"USD": {"credit_note_due": "34.30", "reduced": "0.00"}}
    [line] = csv.DictReader(io.StringIO(CliRunner().invoke(main, [*refunds, "--csv"],
                                                           env=env).output))
    assert (line["amount"], line["invoice"]) == ("34.30", "credit_note_due")
    text = CliRunner().invoke(main, refunds, env=env).output
    assert "credit note due" in text and "34.30 USD" in text
    empty = CliRunner().invoke(main, ["report", "refunds", "--since", "2026-04-01",
                                      "--until", "2026-05-01"], env=env).output
    assert "none" in empty


def test_http_report_is_the_cli_json(client: FlaskClient, tokens: Tokens,
                                     api_container: Container) -> None:
    api_container.ledger.top_up_bundle("kp_h", "starter")
    api_container.ledger.record_usage("kp_h", "report_generation", 10)  # 500 credits
    admin = bearer(tokens.m2m("credits:admin"))
    response = client.get("/v1/reports/revenue?since=2020-01-01&until=2100-01-01",
                          headers=admin)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    usd = body["currencies"]["USD"]
    assert Decimal(usd["opening_deferred"]) + Decimal(usd["sales"]) - Decimal(
        usd["refunds"]) - Decimal(usd["recognised"]) - Decimal(usd["breakage"]) == Decimal(
        usd["closing_deferred"])
    assert (usd["sales"], usd["recognised"]) == ("49.00", "4.90")
    assert body == revenue_report(api_container.store, datetime(2020, 1, 1, tzinfo=UTC),
                                  datetime(2100, 1, 1, tzinfo=UTC))
    assert client.get("/v1/reports/revenue", headers=admin).status_code == 200
    writer = bearer(tokens.m2m("credits:write"))
    assert client.get("/v1/reports/revenue", headers=writer).status_code == 403
    for query in ("since=yesterday", "since=2026-02-01&until=2026-01-01", "until=2026-13-01",
                  "until=9999-12-31T23:00:00-05:00", "since=0001-01-01T00:00:00%2B01:00"):
        bad = client.get(f"/v1/reports/revenue?{query}", headers=admin)
        assert bad.status_code == 422, query
        assert bad.get_json()["error"]["code"] == "invalid_request"
