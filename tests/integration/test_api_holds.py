"""Holds over the Flask test client (SQLite and PostgreSQL): place, capture, release, expiry,
reach checks on the hold's wallet, idempotency and nothing written on errors."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def funded(client: FlaskClient, admin: dict[str, str]) -> str:
    response = client.post("/v1/wallets/kp_alice/top-ups",
                           json={"credits": 1000, "reason": "test"}, headers=admin)
    assert response.status_code == 201
    return "kp_alice"


def place(client: FlaskClient, headers: dict[str, str], body: dict[str, Any],
          wallet: str = "kp_alice") -> Any:
    return client.post(f"/v1/wallets/{wallet}/holds", json=body, headers=headers)


def test_place_and_capture_part(client: FlaskClient, admin: dict[str, str], funded: str) -> None:
    hold = place(client, admin, {"feature": "report_generation", "quantity": 4})
    assert hold.status_code == 201, hold.json
    assert hold.json["amount"] == 200 and hold.json["status"] == "open"
    assert hold.json["balance"] == 1000 and hold.json["available"] == 800
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["held"] == 200 and [h["hold_id"] for h in wallet["holds"]] == [
        hold.json["hold_id"]]

    capture = client.post(f"/v1/holds/{hold.json['hold_id']}/capture", json={"credits": 150},
                          headers=admin)
    assert capture.status_code == 200, capture.json
    assert capture.json["status"] == "captured" and capture.json["entry_kind"] == "capture"
    assert capture.json["balance"] == 850 and capture.json["available"] == 850
    again = client.post(f"/v1/holds/{hold.json['hold_id']}/release", headers=admin)
    assert again.status_code == 409 and again.json["error"]["code"] == "hold_not_open"


def test_capture_without_body_takes_all(
    client: FlaskClient, admin: dict[str, str], funded: str
) -> None:
    hold = place(client, admin, {"credits": 30}).json
    capture = client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=admin)
    assert capture.status_code == 200 and capture.json["balance"] == 970


def test_release_frees_credits(client: FlaskClient, admin: dict[str, str], funded: str) -> None:
    hold = place(client, admin, {"credits": 300}).json
    release = client.post(f"/v1/holds/{hold['hold_id']}/release", json={}, headers=admin)
    assert release.status_code == 200
    assert release.json["status"] == "released" and release.json["available"] == 1000


def test_hold_beyond_available_is_402(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str
) -> None:
    before = table_counts(db_url)
    response = place(client, admin, {"credits": 1001})
    assert response.status_code == 402
    assert response.json["error"]["needed"] == 1001
    assert table_counts(db_url) == before


def test_hold_expires_by_itself(
    client: FlaskClient, admin: dict[str, str], funded: str, api_app: Flask
) -> None:
    from tests.conftest import FakeClock

    clock = FakeClock()
    api_app.extensions["kinde_credits"].ledger.clock = clock
    hold = place(client, admin, {"credits": 100, "expires_in_seconds": 60}).json
    assert client.get("/v1/wallets/kp_alice", headers=admin).json["available"] == 900
    clock.advance(seconds=61)
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["available"] == 1000 and wallet["holds"] == []
    late = client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=admin)
    assert late.status_code == 409 and late.json["error"]["code"] == "hold_not_open"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"credits": 5, "feature": "api_call"},
        {"quantity": 2},
        {"credits": 0},
        {"credits": 5, "expires_in_seconds": 0},
        {"credits": 5, "expires_in_seconds": 8 * 24 * 3600},
        {"feature": "api_call", "quantity": 1.5},
    ],
)
def test_bad_hold_is_422(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str, body: dict[str, Any]
) -> None:
    before = table_counts(db_url)
    response = place(client, admin, body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert table_counts(db_url) == before


def test_unknown_feature_hold_is_422(
    client: FlaskClient, admin: dict[str, str], funded: str
) -> None:
    response = place(client, admin, {"feature": "teleport"})
    assert response.status_code == 422 and response.json["error"]["code"] == "unknown_feature"


def test_other_users_hold_is_404_and_untouched(
    client: FlaskClient, admin: dict[str, str], funded: str, tokens: Tokens, db_url: str
) -> None:
    hold = place(client, admin, {"credits": 100}).json
    mallory = bearer(tokens.user("kp_mallory", scopes=("credits:write",)))
    before = table_counts(db_url)
    for action in ("capture", "release"):
        response = client.post(f"/v1/holds/{hold['hold_id']}/{action}", headers=mallory)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "not_found"
    missing = client.post("/v1/holds/hold_doesnotexist/capture", headers=mallory)
    assert missing.status_code == 404
    assert table_counts(db_url) == before
    # A user token settles only holds it placed (DESIGN, "Who may spend the customer's
    # money"): even the wallet's owner cannot settle the backend's hold; the backend can.
    owner = bearer(tokens.user("kp_alice", scopes=("credits:write",)))
    assert client.post(f"/v1/holds/{hold['hold_id']}/release", headers=owner).status_code == 404
    own = place(client, owner, {"credits": 10}).json
    assert client.post(f"/v1/holds/{own['hold_id']}/release", headers=owner).status_code == 200
    assert client.post(f"/v1/holds/{hold['hold_id']}/release", headers=admin).status_code == 200


def test_hold_needs_write_scope(client: FlaskClient, tokens: Tokens, funded: str) -> None:
    reader = bearer(tokens.m2m("credits:read"))
    assert place(client, reader, {"credits": 5}).status_code == 403
    assert client.post("/v1/holds/hold_x/capture", headers=reader).status_code == 403


def test_hold_idempotency(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str
) -> None:
    headers = {**admin, "Idempotency-Key": "job-7"}
    first = place(client, headers, {"credits": 40})
    replay = place(client, headers, {"credits": 40})
    assert replay.status_code == 201 and replay.json == first.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert client.get("/v1/wallets/kp_alice", headers=admin).json["held"] == 40
    assert place(client, headers, {"credits": 41}).status_code == 409
    path = f"/v1/holds/{first.json['hold_id']}/capture"
    cap = client.post(path, json={"credits": 10}, headers={**admin, "Idempotency-Key": "cap-1"})
    cap2 = client.post(path, json={"credits": 10}, headers={**admin, "Idempotency-Key": "cap-1"})
    assert cap.status_code == cap2.status_code == 200
    assert cap2.headers["Idempotent-Replayed"] == "true" and cap2.json == cap.json


def test_capture_after_the_credits_expired_over_http(
    client: FlaskClient, admin: dict[str, str], api_app: Flask, db_url: str
) -> None:
    """The hold keeps its credits past their expiry: capturing them never leaves the wallet
    below zero, and `verify` stays clean."""
    from app.services.ledger import verify_ledger
    from tests.conftest import FakeClock

    clock = FakeClock()
    container = api_app.extensions["kinde_credits"]
    container.ledger.clock = clock
    grant = client.post("/v1/wallets/kp_alice/top-ups",
                        json={"credits": 500, "reason": "trial", "expires_after_days": 1},
                        headers=admin)
    assert grant.status_code == 201
    hold = place(client, admin, {"credits": 500, "expires_in_seconds": 3 * 24 * 3600}).json
    clock.advance(days=2)
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert (wallet["balance"], wallet["held"], wallet["available"]) == (500, 500, 0)
    capture = client.post(f"/v1/holds/{hold['hold_id']}/capture", json={"credits": 400},
                          headers=admin)
    assert capture.status_code == 200, capture.json
    assert (capture.json["balance"], capture.json["available"]) == (0, 0)
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert (wallet["balance"], wallet["held"], wallet["arrears"]) == (0, 0, 0)
    kinds = [e["kind"] for e in client.get("/v1/wallets/kp_alice/ledger",
                                           headers=admin).json["entries"]]
    assert kinds[:2] == ["expiry", "capture"]  # the 100 not captured expired right after
    assert verify_ledger(container.store) == {}


def test_hold_expiry_after_the_credits_expired_over_http(
    client: FlaskClient, admin: dict[str, str], api_app: Flask
) -> None:
    """Credits kept for an open hold expire once the hold itself expires unused."""
    from app.services.ledger import verify_ledger
    from tests.conftest import FakeClock

    clock = FakeClock()
    container = api_app.extensions["kinde_credits"]
    container.ledger.clock = clock
    client.post("/v1/wallets/kp_alice/top-ups",
                json={"credits": 500, "reason": "trial", "expires_after_days": 1}, headers=admin)
    hold = place(client, admin, {"credits": 300, "expires_in_seconds": 2 * 24 * 3600}).json
    clock.advance(days=1, hours=1)  # the credits are past their expiry, the hold is open
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert (wallet["balance"], wallet["held"], wallet["available"]) == (300, 300, 0)
    clock.advance(days=1)  # now the hold has expired as well
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert (wallet["balance"], wallet["held"], wallet["holds"]) == (0, 0, [])
    late = client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=admin)
    assert late.status_code == 409 and late.json["error"]["code"] == "hold_not_open"
    kinds = [(e["kind"], e["amount"]) for e in client.get(
        "/v1/wallets/kp_alice/ledger", headers=admin).json["entries"]]
    assert kinds[:3] == [("expiry", -300), ("release", 0), ("expiry", -200)]
    assert verify_ledger(container.store) == {}


def test_capture_more_than_held_is_refused_and_nothing_changes(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str
) -> None:
    hold = place(client, admin, {"credits": 100}).json
    before = table_counts(db_url)
    response = client.post(f"/v1/holds/{hold['hold_id']}/capture", json={"credits": 700},
                           headers={**admin, "Idempotency-Key": "cap-too-much"})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "capture_exceeds_hold"
    assert "at most 100" in response.json["error"]["message"]
    assert table_counts(db_url) == before
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert (wallet["balance"], wallet["held"]) == (1000, 100)
    # The key stayed free, and the hold is still open for what it holds.
    ok = client.post(f"/v1/holds/{hold['hold_id']}/capture", json={"credits": 100},
                     headers={**admin, "Idempotency-Key": "cap-too-much"})
    assert ok.status_code == 200 and ok.json["balance"] == 900


def test_capture_documents_the_refusal(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    capture = spec["paths"]["/v1/holds/{hold_id}/capture"]["post"]
    assert "422" in capture["responses"]
    assert "capture_exceeds_hold" in capture["summary"] + capture.get("description", "")
