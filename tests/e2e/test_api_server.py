"""The API through the real server (gunicorn, 2 workers) over loopback HTTP, with tokens checked
against the test JWKS served over HTTP. SQLite; the Flask-client tests cover PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.http_fixtures import LiveServer, Tokens, bearer

pytestmark = pytest.mark.slow


@pytest.fixture
def http() -> requests.Session:
    return requests.Session()


def test_every_endpoint_over_http(
    live_server: LiveServer, tokens: Tokens, http: requests.Session
) -> None:
    base = live_server.url
    admin = bearer(tokens.m2m("credits:admin"))
    alice = bearer(tokens.user("kp_e2e_alice"))

    assert http.get(f"{base}/healthz").json()["status"] == "ok"
    assert "/v1/usage/batch" in http.get(f"{base}/openapi.json").json()["paths"]
    assert http.get(f"{base}/docs").status_code == 200
    assert http.get(f"{base}/v1/catalog", headers=alice).status_code == 200

    grant = http.post(f"{base}/v1/wallets/kp_e2e_alice/top-ups",
                      json={"credits": 500, "reason": "e2e"}, headers=admin)
    assert grant.status_code == 201, grant.text
    bundle = http.post(f"{base}/v1/wallets/kp_e2e_alice/top-ups", json={"bundle": "starter"},
                       headers=admin)
    assert bundle.status_code == 201 and bundle.json()["balance"] == 5500

    usage = http.post(f"{base}/v1/wallets/kp_e2e_alice/usage",
                      json={"feature": "report_generation", "quantity": 1},
                      headers={**admin, "Idempotency-Key": "e2e-1"})
    assert usage.status_code == 201 and usage.json()["balance"] == 5450
    replay = http.post(f"{base}/v1/wallets/kp_e2e_alice/usage",
                       json={"feature": "report_generation", "quantity": 1},
                       headers={**admin, "Idempotency-Key": "e2e-1"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == usage.json()
    conflict = http.post(f"{base}/v1/wallets/kp_e2e_alice/usage",
                         json={"feature": "report_generation", "quantity": 2},
                         headers={**admin, "Idempotency-Key": "e2e-1"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"

    short = http.post(f"{base}/v1/wallets/kp_e2e_alice/usage",
                      json={"feature": "report_generation", "quantity": 1000}, headers=admin)
    assert short.status_code == 402
    assert short.json()["error"] | {"message": ""} == {
        "code": "insufficient_credits", "message": "", "needed": 50000, "available": 5450}

    bad = http.post(f"{base}/v1/wallets/kp_e2e_alice/usage", data="{oops",
                    headers={**admin, "Content-Type": "application/json"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"

    hold = http.post(f"{base}/v1/wallets/kp_e2e_alice/holds", json={"credits": 100},
                     headers=admin).json()
    captured = http.post(f"{base}/v1/holds/{hold['hold_id']}/capture", json={"credits": 60},
                         headers=admin)
    assert captured.status_code == 200 and captured.json()["balance"] == 5390
    hold2 = http.post(f"{base}/v1/wallets/kp_e2e_alice/holds", json={"credits": 10},
                      headers=admin).json()
    released = http.post(f"{base}/v1/holds/{hold2['hold_id']}/release", headers=admin)
    assert released.status_code == 200 and released.json()["available"] == 5390

    batch = http.post(f"{base}/v1/usage/batch", headers=admin, json={"records": [
        {"wallet_id": "kp_e2e_alice", "feature": "api_call", "quantity": 1},
        {"wallet_id": "kp_e2e_alice", "feature": "nope", "quantity": 1},
    ]})
    assert [r["status"] for r in batch.json()["results"]] == [201, 422]

    wallet = http.get(f"{base}/v1/wallets/kp_e2e_alice", headers=alice).json()
    assert wallet["balance"] == 5389 and wallet["held"] == 0
    page = http.get(f"{base}/v1/wallets/kp_e2e_alice/ledger", params={"limit": 3},
                    headers=alice).json()
    assert len(page["entries"]) == 3 and page["next_cursor"]
    assert page["entries"][0]["description"] == "-1 credit for API Call (1 API call)"


@pytest.mark.parametrize(
    "make", [Tokens.forged, Tokens.expired, Tokens.wrong_audience, Tokens.wrong_issuer,
             Tokens.alg_none, Tokens.hs256_with_public_key, Tokens.unknown_kid],
)
def test_bad_tokens_refused_over_http(
    live_server: LiveServer, tokens: Tokens, http: requests.Session, make: object
) -> None:
    token = make(tokens)  # type: ignore[operator]
    response = http.post(f"{live_server.url}/v1/wallets/kp_e2e_mallory/top-ups",
                         json={"credits": 10**6, "reason": "free money"}, headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
    check = http.get(f"{live_server.url}/v1/wallets/kp_e2e_mallory",
                     headers=bearer(tokens.m2m("credits:read")))
    assert check.json()["balance"] == 0


def test_user_isolation_over_http(
    live_server: LiveServer, tokens: Tokens, http: requests.Session
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    http.post(f"{live_server.url}/v1/wallets/kp_e2e_bob/top-ups",
              json={"credits": 100, "reason": "e2e"}, headers=admin)
    alice = bearer(tokens.user("kp_e2e_alice2", scopes=("credits:write",)))
    assert http.get(f"{live_server.url}/v1/wallets/kp_e2e_bob",
                    headers=alice).status_code == 404
    spend = http.post(f"{live_server.url}/v1/wallets/kp_e2e_bob/usage",
                      json={"feature": "api_call", "quantity": 1}, headers=alice)
    assert spend.status_code == 404
    bob = http.get(f"{live_server.url}/v1/wallets/kp_e2e_bob",
                   headers=bearer(tokens.user("kp_e2e_bob"))).json()
    assert bob["balance"] == 100


def test_errors_are_json_over_http(live_server: LiveServer, http: requests.Session) -> None:
    missing = http.get(f"{live_server.url}/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = http.put(f"{live_server.url}/v1/catalog")
    assert wrong.status_code == 405
    big = http.post(f"{live_server.url}/v1/usage/batch", data=b"x" * (2 * 1024 * 1024),
                    headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
    assert big.status_code in (401, 413)  # auth runs first; either way JSON
    assert "error" in big.json()


def test_concurrent_usage_debits_exactly(
    live_server: LiveServer, tokens: Tokens
) -> None:
    """40 parallel debits of 10 against 300 credits: exactly 30 succeed, the rest are 402."""
    admin = bearer(tokens.m2m("credits:admin"))
    requests.post(f"{live_server.url}/v1/wallets/org_e2e_race/top-ups",
                  json={"credits": 300, "reason": "race"}, headers=admin)

    def spend(i: int) -> int:
        with requests.Session() as session:
            return session.post(
                f"{live_server.url}/v1/wallets/org_e2e_race/usage",
                json={"feature": "api_call", "quantity": 10},
                headers={**admin, "Idempotency-Key": f"race-{i}"},
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(spend, range(40)))
    assert statuses.count(201) == 30 and statuses.count(402) == 10
    wallet = requests.get(f"{live_server.url}/v1/wallets/org_e2e_race", headers=admin).json()
    assert wallet["balance"] == 0
