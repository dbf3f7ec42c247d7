"""Wallet, ledger, usage, batch and top-up endpoints over the Flask test client, on SQLite and
PostgreSQL: the contract's shapes, 402/409/422 answers, idempotency, and nothing written on
any error."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, count_rows, table_counts

USAGE = {"feature": "report_generation", "quantity": 2}  # 2 x 50 credits


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def writer(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:write"))


def grant(client: FlaskClient, admin: dict[str, str], wallet: str, credits: int) -> None:
    response = client.post(f"/v1/wallets/{wallet}/top-ups",
                           json={"credits": credits, "reason": "welcome"}, headers=admin)
    assert response.status_code == 201, response.json


# -- wallet --------------------------------------------------------------------------------


def test_wallet_shape_with_value_in_use_terms(
    client: FlaskClient, admin: dict[str, str], tokens: Tokens
) -> None:
    grant(client, admin, "kp_alice", 2500)
    response = client.get("/v1/wallets/kp_alice", headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 200
    wallet = response.json
    assert {"wallet_id", "owner_type", "balance", "available", "held", "holds", "blocks",
            "value"} <= set(wallet)
    assert wallet["wallet_id"] == "kp_alice" and wallet["owner_type"] == "user"
    assert wallet["balance"] == wallet["available"] == 2500 and wallet["held"] == 0
    reports = next(v for v in wallet["value"] if v["feature"] == "report_generation")
    assert reports["units_left"] == 50 and reports["text"] == "about 50 reports left"
    assert wallet["blocks"][0]["remaining"] == 2500


def test_org_wallet_owner_type(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.get("/v1/wallets/org_acme", headers=admin)
    assert response.status_code == 200 and response.json["owner_type"] == "org"


@pytest.mark.parametrize("wallet", ["acct_1", "kp_", "kp_" + "x" * 62, "kp_a%20b"])
def test_malformed_wallet_id_is_404(
    client: FlaskClient, admin: dict[str, str], wallet: str
) -> None:
    # Not a Kinde owner id, so there is no such wallet (the route does not match).
    response = client.get(f"/v1/wallets/{wallet}", headers=admin)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


# -- ledger --------------------------------------------------------------------------------


def test_ledger_newest_first_with_keyset_cursor(
    client: FlaskClient, admin: dict[str, str]
) -> None:
    grant(client, admin, "kp_alice", 1000)
    for quantity in (1, 2, 3, 4):
        response = client.post("/v1/wallets/kp_alice/usage",
                               json={"feature": "api_call", "quantity": quantity}, headers=admin)
        assert response.status_code == 201
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/wallets/kp_alice/ledger", query_string=query, headers=admin)
        assert page.status_code == 200, page.json
        assert set(page.json) == {"entries", "next_cursor"}
        seen.extend(page.json["entries"])
        pages += 1
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [e["amount"] for e in seen] == [-4, -3, -2, -1, 1000]
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids, reverse=True)
    for entry in seen:
        assert {"id", "kind", "amount", "balance_after", "description", "created_at"} <= set(entry)
    assert seen[0]["description"] == "-4 credits for API Call (4 API calls)"


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"limit": "x"},
                                   {"cursor": "abc"}, {"cursor": "-5"}])
def test_ledger_bad_query_is_422(
    client: FlaskClient, admin: dict[str, str], query: dict[str, Any]
) -> None:
    response = client.get("/v1/wallets/kp_alice/ledger", query_string=query, headers=admin)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_request"


def test_ledger_limit_is_capped_at_200(client: FlaskClient, admin: dict[str, str]) -> None:
    ok = client.get("/v1/wallets/kp_alice/ledger?limit=200", headers=admin)
    assert ok.status_code == 200 and ok.json == {"entries": [], "next_cursor": None}


# -- usage ---------------------------------------------------------------------------------


def test_usage_201_shape(client: FlaskClient, admin: dict[str, str], db_url: str) -> None:
    grant(client, admin, "kp_alice", 1000)
    response = client.post("/v1/wallets/kp_alice/usage", json=USAGE, headers=admin)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["balance"] == 900 and body["available"] == 900
    assert body["entry"]["kind"] == "usage" and body["entry"]["amount"] == -100
    assert body["entry"]["balance_after"] == 900
    assert body["entry"]["description"] == "-100 credits for Report Generation (2 reports)"
    assert body["value"] == "about 18 reports left"
    assert "Idempotent-Replayed" not in response.headers
    assert count_rows(db_url, "entries") == 2


def test_usage_with_occurred_at(client: FlaskClient, admin: dict[str, str]) -> None:
    grant(client, admin, "kp_alice", 1000)
    response = client.post(
        "/v1/wallets/kp_alice/usage",
        json={"feature": "api_call", "quantity": 1, "occurred_at": "2026-11-24T10:00:00+01:00"},
        headers=admin,
    )
    assert response.status_code == 201
    assert response.json["entry"]["occurred_at"].startswith("2026-11-24T09:00:00")
    assert response.json["entry"]["occurred_at"].endswith("Z")


def test_insufficient_credits_is_402_with_numbers_and_nothing_written(
    client: FlaskClient, admin: dict[str, str], db_url: str
) -> None:
    grant(client, admin, "kp_alice", 120)
    before = table_counts(db_url)
    response = client.post("/v1/wallets/kp_alice/usage",
                           json={"feature": "report_generation", "quantity": 3},
                           headers={**admin, "Idempotency-Key": "k-402"})
    assert response.status_code == 402
    error = response.json["error"]
    assert error["code"] == "insufficient_credits"
    assert error["needed"] == 150 and error["available"] == 120
    assert "150" in error["message"]
    assert table_counts(db_url) == before
    # The failed request left its key unused: after a top-up the same key succeeds.
    grant(client, admin, "kp_alice", 100)
    retry = client.post("/v1/wallets/kp_alice/usage",
                        json={"feature": "report_generation", "quantity": 3},
                        headers={**admin, "Idempotency-Key": "k-402"})
    assert retry.status_code == 201 and retry.json["balance"] == 70


def test_usage_on_wallet_never_credited_is_402(
    client: FlaskClient, admin: dict[str, str], db_url: str
) -> None:
    response = client.post("/v1/wallets/kp_new/usage", json=USAGE, headers=admin)
    assert response.status_code == 402
    assert response.json["error"]["available"] == 0
    assert count_rows(db_url, "wallets") == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"feature": "teleport", "quantity": 1}, "unknown_feature"),
        ({"feature": "api_call", "quantity": 0}, "invalid_request"),
        ({"feature": "api_call", "quantity": -3}, "invalid_request"),
        ({"feature": "api_call", "quantity": 1.5}, "invalid_request"),
        ({"feature": "api_call", "quantity": "2"}, "invalid_request"),
        ({"feature": "api_call", "quantity": True}, "invalid_request"),
        ({"feature": "api_call", "quantity": 10**12}, "invalid_request"),
        ({"feature": "api_call"}, "invalid_request"),
        ({"quantity": 1}, "invalid_request"),
        ({"feature": "api_call", "quantity": 1, "extra": 1}, "invalid_request"),
        ({"feature": "api_call", "quantity": 1, "occurred_at": "yesterday"}, "invalid_request"),
        ([{"feature": "api_call", "quantity": 1}], "invalid_request"),
        ("just a string", "invalid_request"),
    ],
)
def test_usage_422_and_nothing_written(
    client: FlaskClient, admin: dict[str, str], db_url: str, body: Any, code: str
) -> None:
    grant(client, admin, "kp_alice", 1000)
    before = table_counts(db_url)
    response = client.post("/v1/wallets/kp_alice/usage", json=body,
                           headers={**admin, "Idempotency-Key": "k-422"})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert table_counts(db_url) == before


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"", b"null"])
def test_malformed_json_body_is_422(
    client: FlaskClient, admin: dict[str, str], db_url: str, raw: bytes
) -> None:
    before = table_counts(db_url)
    response = client.post("/v1/wallets/kp_alice/usage", data=raw,
                           content_type="application/json", headers=admin)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_request"
    assert table_counts(db_url) == before


def test_idempotent_replay_and_conflict(
    client: FlaskClient, admin: dict[str, str], db_url: str
) -> None:
    grant(client, admin, "kp_alice", 1000)
    headers = {**admin, "Idempotency-Key": "order-42"}
    first = client.post("/v1/wallets/kp_alice/usage", json=USAGE, headers=headers)
    assert first.status_code == 201
    entries = count_rows(db_url, "entries")
    replay = client.post("/v1/wallets/kp_alice/usage", json=USAGE, headers=headers)
    assert replay.status_code == 201
    assert replay.json == first.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert count_rows(db_url, "entries") == entries  # debited once
    before = table_counts(db_url)
    conflict = client.post("/v1/wallets/kp_alice/usage",
                           json={"feature": "report_generation", "quantity": 3}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json["error"]["code"] == "idempotency_conflict"
    assert table_counts(db_url) == before
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["balance"] == 900


def test_idempotency_key_too_long_is_422(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/wallets/kp_alice/usage", json=USAGE,
                           headers={**admin, "Idempotency-Key": "k" * 256})
    assert response.status_code == 422


# -- batch ---------------------------------------------------------------------------------


def test_batch_per_record_results(
    client: FlaskClient, admin: dict[str, str], tokens: Tokens, db_url: str
) -> None:
    grant(client, admin, "org_acme", 100)
    grant(client, admin, "kp_bob", 100)
    token = bearer(tokens.m2m("credits:write", org="org_acme"), Idempotency_Key="batch-1")
    records = [
        {"wallet_id": "org_acme", "feature": "api_call", "quantity": 10},
        {"wallet_id": "org_acme", "feature": "report_generation", "quantity": 5},  # 250 > 90
        {"wallet_id": "kp_bob", "feature": "api_call", "quantity": 1},  # out of reach
        {"wallet_id": "org_acme", "feature": "teleport", "quantity": 1},
        {"wallet_id": "org_acme", "feature": "api_call", "quantity": 5},
    ]
    response = client.post("/v1/usage/batch", json={"records": records}, headers=token)
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [201, 402, 404, 422, 201]
    assert results[0]["result"]["balance"] == 90
    assert results[1]["error"]["code"] == "insufficient_credits"
    assert results[1]["error"]["needed"] == 250 and results[1]["error"]["available"] == 90
    assert results[2]["error"]["code"] == "not_found"
    assert results[3]["error"]["code"] == "unknown_feature"
    assert results[4]["result"]["balance"] == 85
    assert "Idempotent-Replayed" not in response.headers
    # Bob's wallet was not touched.
    assert client.get("/v1/wallets/kp_bob", headers=admin).json["balance"] == 100

    # Retrying the batch with the same header replays the successes, debiting nothing again.
    entries = count_rows(db_url, "entries")
    retry = client.post("/v1/usage/batch", json={"records": records}, headers=token)
    assert [r["status"] for r in retry.json["results"]] == [201, 402, 404, 422, 201]
    assert [r.get("replayed") for r in retry.json["results"]] == [True, None, None, None, True]
    assert count_rows(db_url, "entries") == entries
    # Keys follow positions: another record at a used position is a conflict, not a debit.
    swapped = client.post("/v1/usage/batch", json={"records": [records[4]]}, headers=token)
    assert [r["status"] for r in swapped.json["results"]] == [409]
    assert swapped.json["results"][0]["error"]["code"] == "idempotency_conflict"
    assert count_rows(db_url, "entries") == entries


def test_batch_all_replayed_sets_header(client: FlaskClient, admin: dict[str, str]) -> None:
    grant(client, admin, "kp_alice", 100)
    body = {"records": [{"wallet_id": "kp_alice", "feature": "api_call", "quantity": 1}]}
    headers = {**admin, "Idempotency-Key": "b-2"}
    assert "Idempotent-Replayed" not in client.post(
        "/v1/usage/batch", json=body, headers=headers).headers
    replay = client.post("/v1/usage/batch", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("body", [{}, {"records": []}, {"records": [{"wallet_id": "kp_a"}]},
                                  {"records": "x"}])
def test_batch_invalid_is_422(client: FlaskClient, admin: dict[str, str], body: Any) -> None:
    response = client.post("/v1/usage/batch", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_request"


def test_batch_needs_write_scope(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post(
        "/v1/usage/batch",
        json={"records": [{"wallet_id": "kp_alice", "feature": "api_call", "quantity": 1}]},
        headers=bearer(tokens.user("kp_alice")),
    )
    assert response.status_code == 403


# -- top-ups -------------------------------------------------------------------------------


def test_bundle_top_up_creates_wallet(
    client: FlaskClient, admin: dict[str, str], db_url: str
) -> None:
    response = client.post("/v1/wallets/org_acme/top-ups", json={"bundle": "starter"},
                           headers={**admin, "Idempotency-Key": "buy-1"})
    assert response.status_code == 201, response.json
    assert response.json["balance"] == 5000
    assert response.json["entry"]["kind"] == "purchase"
    assert response.json["entry"]["description"].startswith("+5,000 credits: Starter pack")
    replay = client.post("/v1/wallets/org_acme/top-ups", json={"bundle": "starter"},
                         headers={**admin, "Idempotency-Key": "buy-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json == response.json
    assert count_rows(db_url, "blocks") == 1


def test_grant_top_up(client: FlaskClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/wallets/kp_alice/top-ups",
                           json={"credits": 250, "reason": "goodwill", "expires_after_days": 30},
                           headers=admin)
    assert response.status_code == 201
    assert response.json["entry"]["kind"] == "grant"
    assert response.json["entry"]["description"] == "+250 credits: goodwill"
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["blocks"][0]["expires_at"] is not None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"bundle": "platinum"}, "unknown_bundle"),
        ({}, "invalid_request"),
        ({"bundle": "starter", "credits": 5, "reason": "x"}, "invalid_request"),
        ({"credits": 5}, "invalid_request"),
        ({"credits": 5, "reason": "   "}, "invalid_request"),
        ({"credits": 0, "reason": "x"}, "invalid_request"),
        ({"credits": 2.5, "reason": "x"}, "invalid_request"),
        ({"bundle": "starter", "reason": "x"}, "invalid_request"),
    ],
)
def test_top_up_422_and_nothing_written(
    client: FlaskClient, admin: dict[str, str], db_url: str, body: Any, code: str
) -> None:
    before = table_counts(db_url)
    response = client.post("/v1/wallets/kp_alice/top-ups", json=body, headers=admin)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == code
    assert table_counts(db_url) == before


def test_sale_not_invoiced_needs_admin(
    client: FlaskClient, tokens: Tokens, writer: dict[str, str], admin: dict[str, str],
    db_url: str,
) -> None:
    """SALES_PAID_ELSEWHERE (these tests' setting): nothing invoices the pack, so a write token
    (an M2M app, or a user's own token) would get it for free and book revenue never received."""
    user_writer = bearer(tokens.user("kp_alice", scopes=("credits:write",)))
    before = table_counts(db_url)
    for wallet, headers in (("kp_alice", writer), ("kp_alice", user_writer)):
        response = client.post(f"/v1/wallets/{wallet}/top-ups", json={"bundle": "starter"},
                               headers={**headers, "Idempotency-Key": "free-pack"})
        assert response.status_code == 403, response.json
        assert response.json["error"]["code"] == "forbidden"
        assert "credits:admin" in response.json["error"]["message"]
    assert table_counts(db_url) == before
    # An admin records the sale the product was paid for elsewhere; the key stayed free.
    ok = client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                     headers={**admin, "Idempotency-Key": "free-pack"})
    assert ok.status_code == 201 and ok.json["balance"] == 5000


def test_sale_invoiced_through_kinde_needs_write(
    client: FlaskClient, tokens: Tokens, writer: dict[str, str], api_app: Any, db_url: str
) -> None:
    """When Kinde invoices the pack, the write scope may buy it, and so may the wallet's own
    user (Kinde invoices that user's billing customer), with or without a scope: a user's own
    wallet is theirs to buy for (DESIGN, "Who may spend the customer's money"; this used to
    need credits:write). A member buying for an org wallet needs credits:write."""
    from app.services.payments import KindeInvoicing

    ledger = api_app.extensions["kinde_credits"].ledger
    ledger.payments = KindeInvoicing()
    for wallet, customer in (("kp_alice", "customer_alice"), ("org_acme", "customer_acme")):
        ledger.grant(wallet, 1, "creates the wallet")
        with ledger.uow(True) as uow:
            uow.wallets.update_profile(wallet, billing_customer_id=customer)
            uow.commit()
    own = bearer(tokens.user("kp_alice", scopes=("credits:write",)))
    assert client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                       headers=own).status_code == 201
    assert client.post("/v1/wallets/org_acme/top-ups", json={"bundle": "starter"},
                       headers=writer).status_code == 201
    # Not for someone else's wallet, and not without the write scope.
    assert client.post("/v1/wallets/kp_bob/top-ups", json={"bundle": "starter"},
                       headers=own).status_code == 404
    reader = bearer(tokens.user("kp_alice"))
    assert client.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                       headers=reader).status_code == 201
    member = bearer(tokens.user("kp_alice", org="org_acme"))
    assert client.post("/v1/wallets/org_acme/top-ups", json={"bundle": "starter"},
                       headers=member).status_code == 403
    assert count_rows(db_url, "recharges") == 3  # every sale is invoiced


# -- catalog -------------------------------------------------------------------------------


def test_catalog_with_value_guidance(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get("/v1/catalog", headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 200
    features = {f["key"]: f for f in response.json["features"]}
    assert features["report_generation"]["credits_per_unit"] == 50
    starter = next(b for b in response.json["bundles"] if b["key"] == "starter")
    assert starter["price"] == "49.00" and starter["currency"] == "USD"
    conversions = next(v for v in starter["value"] if v["feature"] == "file_conversion")
    assert conversions == {"feature": "file_conversion", "units": 2500,
                           "text": "about 2,500 file conversions"}
