"""`POST /webhooks/kinde` over SQLite and PostgreSQL with real RS256 tokens and a JWKS served
over real HTTP: what is accepted, what is refused (and that a refusal writes nothing)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from app.http.webhooks import MAX_BODY_BYTES
from tests.fakes.jwks_server import JwksServer
from tests.webhook_fixtures import (
    SigningKey,
    WebhookEnv,
    b64url,
    event,
    json_wrapped,
    sign,
)

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]

EMPTY = dict.fromkeys(
    ("webhook_events", "entries", "wallets", "blocks", "meter_readings", "idempotency_keys"), 0
)


def user_created(user: str = "kp_alice") -> dict[str, Any]:
    return event("user.created", {"user": {"id": user, "email": f"{user}@example.com"}})


def test_user_created_is_processed_and_stored_with_raw_body(webhook_env: WebhookEnv) -> None:
    payload = user_created()
    token = webhook_env.sign(payload)
    r = webhook_env.post(token, webhook_id="msg_1")
    assert r.status_code == 200
    assert r.get_json() == {"status": "processed", "event_id": payload["event_id"]}
    assert webhook_env.balance("kp_alice") == 500
    row = webhook_env.inbox_row(payload["event_id"])
    assert (row.type, row.status, row.webhook_id, row.wallet_id) == (
        "user.created", "processed", "msg_1", "kp_alice"
    )
    assert row.payload == payload
    with webhook_env.container.store.engine.connect() as conn:
        from sqlalchemy import text

        raw = conn.execute(text("SELECT raw_body FROM webhook_events")).scalar_one()
        email = conn.execute(text("SELECT email FROM wallets")).scalar_one()
    assert raw == token
    assert email == "kp_alice@example.com"


def test_redelivery_is_a_duplicate_and_changes_nothing(webhook_env: WebhookEnv) -> None:
    payload = user_created()
    token = webhook_env.sign(payload)
    assert webhook_env.post(token, webhook_id="msg_1").get_json()["status"] == "processed"
    before = webhook_env.counts()
    for webhook_id in ("msg_1", "msg_other", None):
        r = webhook_env.post(token, webhook_id=webhook_id)
        assert r.status_code == 200
        assert r.get_json()["status"] == "duplicate"
    assert webhook_env.counts() == before
    assert webhook_env.balance("kp_alice") == 500


def test_webhook_id_reused_by_another_event_does_not_block_it(webhook_env: WebhookEnv) -> None:
    assert webhook_env.deliver(user_created("kp_a"), webhook_id="msg_same").status_code == 200
    r = webhook_env.deliver(user_created("kp_b"), webhook_id="msg_same")
    assert r.get_json()["status"] == "processed"  # the unsigned header never aliases events
    assert webhook_env.balance("kp_b") == 500


def test_unhandled_type_is_ignored_but_stored(webhook_env: WebhookEnv) -> None:
    payload = event("role.created", {"role": {"key": "admin"}})
    r = webhook_env.deliver(payload)
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert webhook_env.inbox_row(payload["event_id"]).status == "ignored"
    assert webhook_env.deliver(payload).get_json()["status"] == "duplicate"


@pytest.mark.parametrize("content_type", ["application/jwt", "application/json", "text/plain"])
def test_content_types(webhook_env: WebhookEnv, content_type: str) -> None:
    r = webhook_env.post(webhook_env.sign(user_created()), content_type=content_type)
    assert r.status_code == 200 and r.get_json()["status"] == "processed"


def test_older_json_string_delivery(webhook_env: WebhookEnv) -> None:
    token = webhook_env.sign(user_created())
    r = webhook_env.post(json_wrapped(token), content_type="application/json")
    assert r.status_code == 200 and r.get_json()["status"] == "processed"


def _tampered(env: WebhookEnv) -> str:
    header, _, signature = env.sign(user_created()).split(".")
    forged = b64url(json.dumps(user_created("kp_mallory")).encode())
    return f"{header}.{forged}.{signature}"


def _alg_none(env: WebhookEnv) -> str:
    header = b64url(json.dumps({"alg": "none", "kid": env.key.kid, "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(user_created()).encode())}."


def _hs256_with_public_key(env: WebhookEnv) -> str:
    # The classic confusion attack: HMAC keyed with the (public) RSA key.
    pem = env.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "kid": env.key.kid, "typ": "JWT"}).encode())
    body = b64url(json.dumps(user_created()).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(mac)}"


@pytest.mark.parametrize("make, status", [
    (_tampered, 401),
    (lambda env: sign(user_created(), env.other), 401),  # another key, same kid
    (lambda env: sign(user_created(), env.other, kid="ff:ff"), 401),  # unknown kid
    (_alg_none, 401),
    (_hs256_with_public_key, 401),
    (lambda env: env.sign(user_created(), kid=None), 401),  # no kid
    (lambda env: env.sign({**user_created(), "iss": "https://evil.example"}), 401),
    (lambda env: env.sign({**user_created(), "exp": 1}), 401),  # expired when it says so
    (lambda env: "this is not a jwt", 400),
    (lambda env: "a.b.c", 400),
    (lambda env: "", 400),
    (lambda env: b"\xff\xfe\x00binary", 400),
    (lambda env: json.dumps({"type": "user.created", "event_id": "e1"}), 400),
    (lambda env: b"x" * (MAX_BODY_BYTES + 1), 413),
], ids=["tampered", "wrong-key", "unknown-kid", "alg-none", "hs256", "no-kid",
        "wrong-iss", "expired", "garbage", "bad-segments", "empty", "binary", "plain-json",
        "oversized"])
def test_refused_deliveries_write_nothing(
    webhook_env: WebhookEnv, other_key: SigningKey, make: Any, status: int
) -> None:
    webhook_env.other = other_key  # type: ignore[attr-defined]
    body = make(webhook_env)
    r = webhook_env.post(body, content_type="application/jwt")
    assert r.status_code == status, r.get_data(as_text=True)
    error = r.get_json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == {400: "invalid_request", 401: "unauthorized",
                             413: "payload_too_large"}[status]
    assert webhook_env.counts() == EMPTY


def test_oversized_by_content_length_is_refused_before_reading(webhook_env: WebhookEnv) -> None:
    r = webhook_env.client.post(
        "/webhooks/kinde",
        data=b"x" * 10,
        content_type="application/jwt",
        # A client announcing a huge body is refused before a byte of it is read.
        environ_overrides={"CONTENT_LENGTH": str(MAX_BODY_BYTES + 1)},
    )
    assert r.status_code == 413
    assert webhook_env.counts() == EMPTY


def test_body_at_the_limit_is_read(webhook_env: WebhookEnv) -> None:
    # Exactly 1 MiB is allowed through to verification (and refused there as not a JWT).
    r = webhook_env.post(b"x" * MAX_BODY_BYTES)
    assert r.status_code == 400


def test_keys_unavailable_answers_503_so_kinde_retries(
    webhook_env: WebhookEnv, jwks: JwksServer
) -> None:
    jwks.set_status(500)
    r = webhook_env.deliver(user_created())
    assert r.status_code == 503
    assert r.get_json()["error"]["code"] == "unavailable"
    assert webhook_env.counts() == EMPTY
    jwks.set_status(200)


def test_parked_event_answers_200_parked_with_reason(webhook_env: WebhookEnv) -> None:
    payload = event("customer.meter_usage_updated",
                    {"customer_id": "customer_x", "feature_code": "storage_gb",
                     "meter_value": "2"})
    r = webhook_env.deliver(payload)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "parked"
    assert "unknown customer customer_x" in body["reason"]
    row = webhook_env.inbox_row(payload["event_id"])
    assert (row.status, row.customer_id) == ("parked", "customer_x")


def test_token_verification_uses_only_the_configured_jwks(
    webhook_env: WebhookEnv, other_key: SigningKey
) -> None:
    # jku / x5u / jwk headers pointing at the attacker's key are ignored.
    attacker_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(other_key.private.public_key(),
                                                      as_dict=True)
    token = sign(user_created(), other_key, jku="http://127.0.0.1:1/evil.json",
                 jwk=attacker_jwk)
    assert webhook_env.post(token).status_code == 401
    assert webhook_env.counts() == EMPTY


# -- hostile content and token confusion (issue 9): JSON 400/401, nothing written ----------


def _signed_raw(env: WebhookEnv, payload: bytes | dict[str, Any]) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.api_jws.encode(raw, env.key.private, algorithm="RS256",
                              headers={"kid": env.key.kid})


def _deep_header(env: WebhookEnv) -> str:
    depth = 5000
    header = '{"alg":"RS256","kid":"' + env.key.kid + '","x":' + "[" * depth + "]" * depth + "}"
    return f"{b64url(header.encode())}.{b64url(json.dumps(user_created()).encode())}.AAAA"


def _non_latin1_alg(env: WebhookEnv) -> str:
    header = b64url(json.dumps({"alg": "RS256\u2603", "kid": env.key.kid}).encode())
    return f"{header}.{b64url(json.dumps(user_created()).encode())}.AAAA"


def _deep_payload(env: WebhookEnv) -> str:
    body = json.dumps(user_created())[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    return _signed_raw(env, body.encode())


def _access_token(env: WebhookEnv, **extra: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    return {"iss": env.container.settings.issuer, "aud": ["https://api.acme.test/credits"],
            "iat": now, "exp": now + 600, "jti": "jti_1", "azp": "client", "sub": "kp_alice",
            "scp": ["credits:admin"], **extra}


@pytest.mark.parametrize("make, status", [
    (_deep_header, 400),
    (_non_latin1_alg, 401),
    (_deep_payload, 401),
    (lambda env: _signed_raw(env, {**user_created(), "exp": "9999999999"}), 401),
    (lambda env: _signed_raw(env, {**user_created(), "exp": "never"}), 401),
    (lambda env: _signed_raw(env, {**user_created(), "iat": "now"}), 401),
    (lambda env: _signed_raw(env, {**user_created(), "nbf": [1]}), 401),
    # A (user or M2M) access token signed by the same key is not a webhook...
    (lambda env: env.sign(_access_token(env)), 401),
    (lambda env: env.sign({**_access_token(env), "sub": None, "gty": ["client_credentials"]}),
     401),
    # ...even when it also carries the webhook fields.
    (lambda env: env.sign({**_access_token(env), **user_created()}), 401),
    (lambda env: env.sign({**user_created(), "aud": ["x"]}), 401),
    (lambda env: env.sign({**user_created(), "sub": "kp_alice"}), 401),
], ids=["deep-header", "non-latin1-alg", "deep-payload", "string-exp", "word-exp",
        "string-iat", "list-nbf", "user-access-token", "m2m-access-token",
        "access-token-with-webhook-fields", "with-aud", "with-sub"])
def test_hostile_and_confused_deliveries_are_json_and_write_nothing(
    webhook_env: WebhookEnv, make: Any, status: int
) -> None:
    r = webhook_env.post(make(webhook_env), content_type="application/jwt")
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    error = r.get_json()["error"]
    assert error["code"] == {400: "invalid_request", 401: "unauthorized"}[status]
    assert "\u2603" not in error["message"]
    assert webhook_env.counts() == EMPTY


@pytest.mark.parametrize("payload", [
    {k: v for k, v in user_created().items() if k != "data"},
    {**user_created(), "data": "kp_alice"},
    {**user_created(), "type": 7},
    {**user_created(), "event_id": None},
    {**user_created(), "type": ""},
], ids=["no-data", "string-data", "number-type", "no-event-id", "empty-type"])
def test_signed_event_without_its_fields_is_parked_not_refused(
    webhook_env: WebhookEnv, payload: dict[str, Any]
) -> None:
    """Kinde signed it, so it is kept and parked (200), never refused into a retry loop."""
    r = webhook_env.post(webhook_env.sign(payload), content_type="application/jwt")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert r.get_json()["status"] == "parked"
