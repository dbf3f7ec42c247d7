"""Adjustments, refunds and the forecast over HTTP, on SQLite and PostgreSQL: the contract's
shapes, who may call them, 402/409/422 answers, idempotency, and the reason in the history
(API, CSV)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


def adjust(client: FlaskClient, headers: dict[str, str], body: dict[str, object],
           wallet: str = "kp_alice") -> tuple[int, dict[str, object]]:
    response = client.post(f"/v1/wallets/{wallet}/adjustments", json=body, headers=headers)
    return response.status_code, response.json


def test_positive_adjustment_is_a_block_with_its_reason_in_the_history(
        client: FlaskClient, admin: dict[str, str]) -> None:
    status, body = adjust(client, admin, {"credits": 300, "reason": "outage credit, ticket 42",
                                          "expires_at": "2099-01-01T00:00:00Z"})
    assert status == 201, body
    assert body["balance"] == 300 and body["entry"]["kind"] == "adjustment"  # type: ignore[index]
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["blocks"][0]["expires_at"].startswith("2099-01-01")
    entry = client.get("/v1/wallets/kp_alice/ledger", headers=admin).json["entries"][0]
    assert entry["reason"] == "outage credit, ticket 42"
    assert "outage credit, ticket 42" in entry["description"]


def test_negative_adjustment_draws_and_answers_402_rather_than_go_below_zero(
        client: FlaskClient, admin: dict[str, str], db_url: str) -> None:
    adjust(client, admin, {"credits": 100, "reason": "start"})
    status, body = adjust(client, admin, {"credits": -40, "reason": "double-counted import"})
    assert status == 201 and body["balance"] == 60
    before = table_counts(db_url)
    status, body = adjust(client, admin, {"credits": -61, "reason": "too much"})
    assert status == 402 and body["error"]["code"] == "insufficient_credits"  # type: ignore
    assert table_counts(db_url) == before


def test_same_key_with_another_body_is_409(client: FlaskClient,
                                           admin: dict[str, str]) -> None:
    keyed = {**admin, "Idempotency-Key": "adj-1"}
    first = adjust(client, keyed, {"credits": 10, "reason": "one"})
    assert first[0] == 201
    assert adjust(client, keyed, {"credits": 10, "reason": "one"}) == first  # a replay
    status, body = adjust(client, keyed, {"credits": 11, "reason": "one"})
    assert status == 409 and body["error"]["code"] == "idempotency_conflict"  # type: ignore


@pytest.mark.parametrize("body", [
    {"credits": 0, "reason": "zero"},
    {"credits": 5},
    {"credits": 5, "reason": ""},
    {"credits": 5, "reason": "x" * 501},
    {"credits": -5, "reason": "no", "expires_at": "2099-01-01T00:00:00Z"},
    {"credits": 5, "reason": "past", "expires_at": "2001-01-01T00:00:00Z"},
])
def test_bad_adjustments_are_422(client: FlaskClient, admin: dict[str, str],
                                 body: dict[str, object]) -> None:
    adjust(client, admin, {"credits": 100, "reason": "start"})
    status, answer = adjust(client, admin, body)
    assert status == 422, answer


def test_adjustments_and_refunds_need_admin(client: FlaskClient, tokens: Tokens) -> None:
    for headers in (bearer(tokens.m2m("credits:write")), bearer(tokens.user("kp_alice"))):
        assert adjust(client, headers, {"credits": 5, "reason": "x"})[0] == 403
        response = client.post("/v1/wallets/kp_alice/purchases/1/refund",
                               json={"reason": "x"}, headers=headers)
        assert response.status_code == 403


def test_refund_of_a_sale_and_refusals(client: FlaskClient, admin: dict[str, str]) -> None:
    sale = client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                       headers=admin).json["entry"]["id"]
    grant = client.post("/v1/wallets/kp_alice/top-ups", json={"credits": 5, "reason": "hi"},
                        headers=admin).json["entry"]["id"]
    url = "/v1/wallets/kp_alice/purchases/{}/refund"
    refused = client.post(url.format(grant), json={"reason": "no"}, headers=admin)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "not_refundable"
    done = client.post(url.format(sale), json={"reason": "bought by mistake"}, headers=admin)
    assert done.status_code == 201, done.json
    assert {k: done.json[k] for k in ("refunded_credits", "refunded_amount", "currency",
                                      "invoice")} == {
        "refunded_credits": 5000, "refunded_amount": "49.00", "currency": "USD",
        # Paid elsewhere (no Kinde invoice to lower): the operator refunds the money.
        "invoice": "credit_note_due"}
    again = client.post(url.format(sale), json={"reason": "again"}, headers=admin)
    assert again.status_code == 409 and again.json["error"]["code"] == "already_refunded"
    missing = client.post(url.format(999999), json={"reason": "x"}, headers=admin)
    assert missing.status_code == 404


def test_forecast_for_the_own_user_and_readers(client: FlaskClient, admin: dict[str, str],
                                               tokens: Tokens) -> None:
    adjust(client, admin, {"credits": 1000, "reason": "start"})
    for _ in range(3):
        client.post("/v1/wallets/kp_alice/usage", json={"feature": "report_generation",
                                                         "quantity": 1}, headers=admin)
    for headers in (bearer(tokens.user("kp_alice")), bearer(tokens.m2m("credits:read"))):
        response = client.get("/v1/wallets/kp_alice/forecast", headers=headers)
        assert response.status_code == 200, response.json
        f = response.json
        # 150 credits, all of them today (one active day of the last 7, so the 30-day window;
        # but the wallet only began today): paced over that one day, never over-promised.
        assert (f["available"], f["window_days"], f["credits_per_day"]) == (850, 1, 150.0)
        assert f["days_left"] == 5 and f["runs_out_at"] is not None
        assert f["by_feature"] == [{"feature": "report_generation", "credits_per_day": 150.0}]
        assert f["suggested_bundle"]["bundle"] == "starter"
    other = client.get("/v1/wallets/kp_bob/forecast", headers=bearer(tokens.user("kp_alice")))
    assert other.status_code == 404
