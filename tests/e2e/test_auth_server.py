"""Hostile tokens through the real server (gunicorn): a JSON 401/400, never a 500.

Some failures only show under a real server: gunicorn encodes response headers as Latin-1 and
answers its own HTML 500 when one cannot be encoded, which Flask's test client never does.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
import requests

from tests.http_fixtures import LiveServer, Tokens, bearer

pytestmark = pytest.mark.slow


def _seg(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_signed(tokens: Tokens, payload: dict[str, object]) -> str:
    return jwt.api_jws.encode(json.dumps(payload).encode(), tokens.key, algorithm="RS256",
                              headers={"kid": tokens.kid})


def deep_header(tokens: Tokens, depth: int = 5000) -> str:
    header = '{"alg":"RS256","kid":"' + tokens.kid + '","x":' + "[" * depth + "]" * depth + "}"
    return f"{_seg(header.encode())}.{_seg(json.dumps(tokens.claims('kp_x')).encode())}.AAAA"


def non_latin1_alg(tokens: Tokens) -> str:
    header = _seg(json.dumps({"alg": "RS256\u2603", "kid": tokens.kid}).encode())
    return f"{header}.{_seg(json.dumps(tokens.claims('kp_x')).encode())}.AAAA"


def string_exp(tokens: Tokens) -> str:
    claims = tokens.claims("kp_x")
    return _raw_signed(tokens, {**claims, "exp": str(claims["exp"])})


def empty_org_m2m(tokens: Tokens) -> str:
    return tokens.sign(tokens.claims(None, scopes=("credits:admin",), m2m=True, org_code=""))


HOSTILE: dict[str, Callable[[Tokens], str]] = {
    # Deep enough for a RecursionError, short enough for gunicorn's 8 KiB header-field limit
    # (beyond it gunicorn itself answers 400 before the app runs).
    "deep_header": lambda t: deep_header(t, 2500),
    "non_latin1_alg": non_latin1_alg,
    "string_exp": string_exp,
    "empty_org_m2m": empty_org_m2m,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_access_tokens_are_json_401_over_http(
    live_server: LiveServer, tokens: Tokens, kind: str
) -> None:
    token = HOSTILE[kind](tokens)
    for method, path in (("get", "/v1/wallets/kp_e2e_victim"),
                         ("post", "/v1/wallets/kp_e2e_victim/top-ups")):
        response = requests.request(method, f"{live_server.url}{path}", headers=bearer(token),
                                    json={"credits": 10**6, "reason": "x"}, timeout=10)
        assert response.status_code == 401, (kind, response.text[:300])
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    check = requests.get(f"{live_server.url}/v1/wallets/kp_e2e_victim",
                         headers=bearer(tokens.m2m("credits:read")), timeout=10)
    assert check.json()["balance"] == 0


def _webhook(tokens: Tokens, **extra: object) -> dict[str, object]:
    return {"type": "user.created", "event_id": f"event_{uuid.uuid4().hex}", "source": "api",
            "data": {"user": {"id": "kp_e2e_hook"}}, **extra}


@pytest.mark.parametrize(("make", "status"), [
    (deep_header, 400),
    (non_latin1_alg, 401),
    (lambda t: _raw_signed(t, _webhook(t, exp=str(int(time.time()) + 600))), 401),
    (lambda t: t.user("kp_e2e_hook"), 401),  # an access token is not a webhook
    (lambda t: t.sign({**t.claims("kp_e2e_hook"), **_webhook(t)}), 401),
], ids=["deep-header", "non-latin1-alg", "string-exp", "access-token", "dressed-access-token"])
def test_hostile_webhooks_are_json_over_http(
    live_server: LiveServer, tokens: Tokens, make: Callable[[Tokens], str], status: int
) -> None:
    response = requests.post(f"{live_server.url}/webhooks/kinde", data=make(tokens),
                             headers={"Content-Type": "application/jwt"}, timeout=10)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] in ("invalid_request", "unauthorized")
    check = requests.get(f"{live_server.url}/v1/wallets/kp_e2e_hook",
                         headers=bearer(tokens.m2m("credits:read")), timeout=10)
    assert check.json()["balance"] == 0


def test_a_real_webhook_still_works_over_http(live_server: LiveServer, tokens: Tokens) -> None:
    response = requests.post(f"{live_server.url}/webhooks/kinde",
                             data=tokens.sign(_webhook(tokens, data={"user": {"id": "kp_e2e_ok"}})),
                             headers={"Content-Type": "application/jwt"}, timeout=10)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["status"] == "processed"
