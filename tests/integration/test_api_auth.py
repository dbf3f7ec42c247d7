"""Authentication and authorization of the `/v1` API, over the Flask test client, on SQLite and
PostgreSQL, with tokens verified against a JWKS served over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import build_container
from app.settings import Settings
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

BAD_TOKENS: dict[str, Callable[[Tokens], str]] = {
    "forged": Tokens.forged,
    "tampered": Tokens.tampered,
    "expired": Tokens.expired,
    "wrong_audience": Tokens.wrong_audience,
    "wrong_issuer": Tokens.wrong_issuer,
    "no_exp": Tokens.no_exp,
    "alg_none": Tokens.alg_none,
    "hs256_with_public_key": Tokens.hs256_with_public_key,
    "unknown_kid": Tokens.unknown_kid,
    "garbage": lambda _: "not-a-jwt",
}


def _grant(client: FlaskClient, tokens: Tokens, wallet: str, credits: int = 1000) -> None:
    response = client.post(
        f"/v1/wallets/{wallet}/top-ups",
        json={"credits": credits, "reason": "test"},
        headers=bearer(tokens.m2m("credits:admin")),
    )
    assert response.status_code == 201, response.json


def test_missing_token_is_401_with_challenge(client: FlaskClient) -> None:
    response = client.get("/v1/wallets/kp_alice")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert "Bearer" in response.json["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_non_bearer_scheme_is_401(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get(
        "/v1/wallets/kp_alice", headers={"Authorization": f"Basic {tokens.user('kp_alice')}"}
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_and_nothing_written(
    client: FlaskClient, tokens: Tokens, db_url: str, kind: str
) -> None:
    token = BAD_TOKENS[kind](tokens)
    before = table_counts(db_url)
    for method, path, body in [
        ("get", "/v1/wallets/kp_alice", None),
        ("post", "/v1/wallets/kp_alice/top-ups", {"credits": 5, "reason": "x"}),
        ("post", "/v1/wallets/kp_alice/usage", {"feature": "api_call", "quantity": 1}),
        ("get", "/v1/catalog", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=bearer(token))
        assert response.status_code == 401, (kind, path, response.json)
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        # The token is a credential: never echoed back.
        assert token not in response.get_data(as_text=True)
    assert table_counts(db_url) == before


def test_good_token_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get("/v1/wallets/kp_alice", headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 200
    assert response.json["wallet_id"] == "kp_alice"
    assert response.json["balance"] == 0 and response.json["exists"] is False


def test_user_cannot_see_or_spend_from_another_wallet(
    client: FlaskClient, tokens: Tokens, db_url: str
) -> None:
    _grant(client, tokens, "kp_bob")
    alice = tokens.user("kp_alice", scopes=("credits:admin",))  # even with every scope
    before = table_counts(db_url)
    attempts = [
        client.get("/v1/wallets/kp_bob", headers=bearer(alice)),
        client.get("/v1/wallets/kp_bob/ledger", headers=bearer(alice)),
        client.post("/v1/wallets/kp_bob/usage", json={"feature": "api_call", "quantity": 1},
                    headers=bearer(alice)),
        client.post("/v1/wallets/kp_bob/top-ups", json={"credits": 5, "reason": "x"},
                    headers=bearer(alice)),
        client.post("/v1/wallets/kp_bob/holds", json={"credits": 5}, headers=bearer(alice)),
        # A wallet that does not exist answers exactly the same: existence does not leak.
        client.get("/v1/wallets/kp_nobody", headers=bearer(alice)),
    ]
    for response in attempts:
        assert response.status_code == 404, response.json
        assert response.json["error"]["code"] == "not_found"
    assert attempts[0].json == attempts[-1].json
    assert table_counts(db_url) == before
    bob = client.get("/v1/wallets/kp_bob", headers=bearer(tokens.user("kp_bob")))
    assert bob.json["balance"] == 1000


def test_unreachable_wallet_is_404_even_before_body_validation(
    client: FlaskClient, tokens: Tokens
) -> None:
    response = client.post("/v1/wallets/kp_bob/usage", json={"nonsense": True},
                           headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 404


def test_user_reads_own_org_wallet_but_not_another_org(
    client: FlaskClient, tokens: Tokens
) -> None:
    _grant(client, tokens, "org_acme", 300)
    token = tokens.user("kp_alice", org="org_acme")
    assert client.get("/v1/wallets/org_acme", headers=bearer(token)).json["balance"] == 300
    assert client.get("/v1/wallets/org_other", headers=bearer(token)).status_code == 404


def test_user_without_write_scope_cannot_record_usage(
    client: FlaskClient, tokens: Tokens, db_url: str
) -> None:
    _grant(client, tokens, "kp_alice")
    before = table_counts(db_url)
    response = client.post("/v1/wallets/kp_alice/usage",
                           json={"feature": "api_call", "quantity": 1},
                           headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert "credits:write" in response.json["error"]["message"]
    assert table_counts(db_url) == before


@pytest.mark.parametrize(
    ("scopes", "read", "usage", "bundle", "grant"),
    [
        ((), 403, 403, 403, 403),
        (("credits:read",), 200, 403, 403, 403),
        # Local/SALES_PAID_ELSEWHERE sale (not invoiced through Kinde): admin only.
        (("credits:write",), 200, 201, 403, 403),
        (("credits:admin",), 200, 201, 201, 201),
        (("credits:admin", "openid"), 200, 201, 201, 201),
    ],
)
def test_m2m_scope_levels(
    client: FlaskClient, tokens: Tokens, scopes: tuple[str, ...],
    read: int, usage: int, bundle: int, grant: int,
) -> None:
    _grant(client, tokens, "kp_carol", 100)
    token = tokens.m2m(*scopes)
    assert client.get("/v1/wallets/kp_carol", headers=bearer(token)).status_code == read
    assert client.post("/v1/wallets/kp_carol/usage", json={"feature": "api_call", "quantity": 1},
                       headers=bearer(token)).status_code == usage
    assert client.post("/v1/wallets/kp_carol/top-ups", json={"bundle": "starter"},
                       headers=bearer(token)).status_code == bundle
    response = client.post("/v1/wallets/kp_carol/top-ups", json={"credits": 1, "reason": "r"},
                           headers=bearer(token))
    assert response.status_code == grant
    if grant == 403 and usage == 201:  # write held: the grant itself needs admin
        assert "credits:admin" in response.json["error"]["message"]


def test_org_scoped_m2m_reaches_only_its_org(client: FlaskClient, tokens: Tokens) -> None:
    token = tokens.m2m("credits:admin", org="org_acme")
    ok = client.post("/v1/wallets/org_acme/top-ups", json={"credits": 5, "reason": "r"},
                     headers=bearer(token))
    assert ok.status_code == 201
    for wallet in ("org_other", "kp_alice"):
        response = client.post(f"/v1/wallets/{wallet}/top-ups",
                               json={"credits": 5, "reason": "r"}, headers=bearer(token))
        assert response.status_code == 404


def test_catalog_needs_a_token_but_no_scope(client: FlaskClient, tokens: Tokens) -> None:
    assert client.get("/v1/catalog").status_code == 401
    response = client.get("/v1/catalog", headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 200


def test_key_source_down_is_503_not_401(
    api_settings: Settings, tokens: Tokens, db_url: str
) -> None:
    # Nothing listens on port 9 of loopback: fetching the keys fails, which is our problem.
    container = build_container(
        api_settings, key_source=JwksKeySource("http://127.0.0.1:9/jwks.json", timeout=0.5)
    )
    try:
        client = create_app(container=container).test_client()
        response = client.get("/v1/wallets/kp_alice", headers=bearer(tokens.user("kp_alice")))
        assert response.status_code == 503
        assert response.json["error"]["code"] == "unavailable"
        assert "Retry-After" in response.headers
    finally:
        container.close()


def test_rotated_key_is_picked_up(
    client: FlaskClient, tokens: Tokens, jwks_server: object
) -> None:
    """A token from a key not yet in our cache triggers one JWKS refresh and then works."""
    from tests.fakes.jwks_server import JwksServer
    from tests.http_fixtures import jwk

    assert isinstance(jwks_server, JwksServer)
    first = client.get("/v1/wallets/kp_alice", headers=bearer(tokens.user("kp_alice")))
    assert first.status_code == 200
    original = {"keys": [jwk(tokens.key)]}
    jwks_server.set_jwks({"keys": [jwk(tokens.key), jwk(tokens.other)]})
    try:
        token = tokens.sign(tokens.claims("kp_alice"), key=tokens.other,
                            kid=tokens.kid_of(tokens.other))
        response = client.get("/v1/wallets/kp_alice", headers=bearer(token))
        assert response.status_code == 200, response.json
    finally:
        jwks_server.set_jwks(original)


# -- hostile token content (issue 9): always a JSON 401, never a 500 ----------------------


def _seg(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_signed(tokens: Tokens, payload: bytes | dict[str, object]) -> str:
    """RS256 over exactly these payload bytes (PyJWT's encoder refuses some bad claims)."""
    import json

    import jwt

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.api_jws.encode(raw, tokens.key, algorithm="RS256", headers={"kid": tokens.kid})


def deep_header(tokens: Tokens, depth: int = 5000) -> str:
    import json

    header = '{"alg":"RS256","kid":"' + tokens.kid + '","x":' + "[" * depth + "]" * depth + "}"
    return f"{_seg(header.encode())}.{_seg(json.dumps(tokens.claims('kp_alice')).encode())}.AAAA"


def non_latin1_alg(tokens: Tokens) -> str:
    import json

    header = json.dumps({"alg": "RS256\u2603", "kid": tokens.kid}).encode()
    return f"{_seg(header)}.{_seg(json.dumps(tokens.claims('kp_alice')).encode())}.AAAA"


def string_exp(tokens: Tokens) -> str:
    claims = tokens.claims("kp_alice")
    return _raw_signed(tokens, {**claims, "exp": str(claims["exp"])})


HOSTILE_TOKENS: dict[str, Callable[[Tokens], str]] = {
    "deep_header": deep_header,
    "non_latin1_alg": non_latin1_alg,
    "string_exp": string_exp,
    "word_exp": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "exp": "tomorrow"}),
    "string_iat": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "iat": "now"}),
    "string_nbf": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "nbf": "now"}),
    "bool_exp": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "exp": True}),
    "number_aud": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "aud": 42}),
    "number_iss": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "iss": 42}),
    "list_jti": lambda t: _raw_signed(t, {**t.claims("kp_alice"), "jti": [1]}),
    "deep_payload": lambda t: _raw_signed(
        t, b'{"sub": "kp_alice", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TOKENS))
def test_hostile_tokens_are_json_401_without_echo(
    client: FlaskClient, tokens: Tokens, db_url: str, kind: str
) -> None:
    token = HOSTILE_TOKENS[kind](tokens)
    before = table_counts(db_url)
    for method, path, body in [
        ("get", "/v1/wallets/kp_alice", None),
        ("post", "/v1/wallets/kp_alice/top-ups", {"credits": 5, "reason": "x"}),
    ]:
        response = getattr(client, method)(path, json=body, headers=bearer(token))
        assert response.status_code == 401, (kind, response.get_data(as_text=True)[:300])
        assert response.json["error"]["code"] == "unauthorized"
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer")
        # Header values must be encodable by any server: printable ASCII only.
        assert challenge.isascii() and challenge.isprintable()
        assert "\u2603" not in response.get_data(as_text=True)
    assert table_counts(db_url) == before


# -- present-but-malformed principal claims reach nothing (issue 9) -----------------------

# (kind, claim, value, wallet the token would have reached before the fix)
MALFORMED_CLAIMS: list[tuple[str, str, object, str]] = [
    ("m2m", "org_code", "", "kp_carol"),
    ("m2m", "org_code", 42, "kp_carol"),
    ("m2m", "org_code", None, "kp_carol"),
    ("m2m", "org_code", ["org_acme"], "kp_carol"),
    ("m2m", "org_code", "kp_carol", "kp_carol"),
    ("m2m", "org_code", "acme", "kp_carol"),
    ("user", "org_code", "kp_carol", "kp_carol"),
    ("user", "org_code", "", "kp_alice"),
    ("user", "sub", "client_abc", "kp_carol"),
    ("user", "sub", 42, "kp_carol"),
    ("m2m", "gty", 1, "kp_carol"),
    ("m2m", "scp", "credits:admin", "kp_carol"),
    ("m2m", "scope", ["credits:admin"], "kp_carol"),
    ("user", "permissions", "credits:admin", "kp_alice"),
    ("m2m", "azp", 5, "kp_carol"),
]


@pytest.mark.parametrize(("kind", "claim", "value", "wallet"), MALFORMED_CLAIMS)
def test_malformed_principal_claims_are_401_naming_the_claim(
    client: FlaskClient, tokens: Tokens, db_url: str,
    kind: str, claim: str, value: object, wallet: str,
) -> None:
    _grant(client, tokens, "kp_carol", 100)
    if kind == "m2m":
        base = tokens.claims(None, scopes=("credits:admin",), m2m=True)
    else:
        base = tokens.claims("kp_alice", org="org_acme", scopes=("credits:admin",))
    token = _raw_signed(tokens, {**base, claim: value})
    before = table_counts(db_url)
    read = client.get(f"/v1/wallets/{wallet}", headers=bearer(token))
    grant = client.post(f"/v1/wallets/{wallet}/top-ups", json={"credits": 5, "reason": "x"},
                        headers=bearer(token))
    for response in (read, grant):
        assert response.status_code == 401, (claim, value, response.json)
        assert response.json["error"]["code"] == "unauthorized"
        assert f"'{claim}'" in response.json["error"]["message"]
    assert table_counts(db_url) == before


def test_user_token_with_another_users_id_as_org_code_cannot_read_it(
    client: FlaskClient, tokens: Tokens
) -> None:
    _grant(client, tokens, "kp_bob", 100)
    token = tokens.user("kp_alice", org="kp_bob")
    response = client.get("/v1/wallets/kp_bob", headers=bearer(token))
    assert response.status_code == 401
    assert "balance" not in response.get_data(as_text=True)


# -- webhooks are not access tokens (issue 9) ----------------------------------------------


def test_webhook_jwt_is_not_an_access_token(
    client: FlaskClient, tokens: Tokens, db_url: str
) -> None:
    hook = {"type": "user.created", "event_id": "event_1", "source": "api",
            "data": {"user": {"id": "kp_alice"}}}
    # Bare (as Kinde sends it) and dressed up with access-token claims: both refused.
    dressed = {**tokens.claims(None, scopes=("credits:admin",), m2m=True), **hook}
    before = table_counts(db_url)
    for claims in (hook, dressed):
        token = tokens.sign(claims)
        for path in ("/v1/wallets/kp_alice", "/v1/catalog"):
            response = client.get(path, headers=bearer(token))
            assert response.status_code == 401, response.json
        response = client.post("/v1/wallets/kp_alice/top-ups",
                               json={"credits": 5, "reason": "x"}, headers=bearer(token))
        assert response.status_code == 401
    assert table_counts(db_url) == before
