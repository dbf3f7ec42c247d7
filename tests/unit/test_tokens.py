"""adapters.tokens against real RSA keys and a real HTTP JWKS server (no verifier mocking)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.tokens import (
    AccessTokenVerifier,
    AlgorithmNotAllowed,
    ClaimsInvalid,
    InvalidSignature,
    JwksKeySource,
    KeySourceUnavailable,
    MalformedToken,
    StaticKeySource,
    TokenError,
    UnknownKey,
    WebhookVerifier,
    parse_jwks,
)
from tests.fakes.jwks_server import JwksServer

ISSUER = "https://acme.kinde.com"
AUDIENCE = "https://api.acme.test/credits"
KID_A = "4c:fa:9e:d6:47:23:b7:39:c7:8f:97:28:45:a1:84:35"
KID_B = "9a:01:bb:00:12:34:56:78:9a:bc:de:f0:11:22:33:44"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": data["n"],
        "e": data["e"],
        **extra,
    }


def sign(
    key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None = KID_A, **headers: Any
) -> str:
    hdr: dict[str, Any] = dict(headers)
    if kid is not None:
        hdr["kid"] = kid
    return jwt.encode(claims, key, algorithm="RS256", headers=hdr)


def user_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "sub": "kp_65b2aa",
        "exp": now + 600,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "azp": "frontend-app",
        "org_code": "org_590d7f1a86a",
        "scp": ["openid", "profile"],
        "permissions": [],
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def m2m_claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": [AUDIENCE],
        "exp": now + 600,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "azp": "backend-client",
        "gty": ["client_credentials"],
    }
    claims.update(over)
    return claims


def event(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "user.created",
        "event_id": "event_018f331a3178f7fef284b95fe6770384",
        "source": "admin",
        "timestamp": "2024-05-01T17:41:45.592145+10:00",
        "data": {"user": {"id": "kp_65b2aa", "email": "daniel@example.com"}},
    }
    payload.update(over)
    return {k: v for k, v in payload.items() if v is not None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_a() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def key_b() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def server(key_a: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    with JwksServer({"keys": [jwk(key_a, KID_A)]}) as srv:
        yield srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(server: JwksServer, clock: FakeClock) -> JwksKeySource:
    return JwksKeySource(server.url, timeout=2.0, ttl=300, cooldown=30, clock=clock)


@pytest.fixture
def verifier(source: JwksKeySource) -> AccessTokenVerifier:
    return AccessTokenVerifier(source, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
def webhooks(source: JwksKeySource) -> WebhookVerifier:
    return WebhookVerifier(source, issuer=ISSUER)


# --------------------------------------------------------------------------------------------
# access tokens: the good paths
# --------------------------------------------------------------------------------------------


def test_valid_user_token_gives_user_principal(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    p = verifier.verify(sign(key_a, user_claims()))
    assert p.subject == "kp_65b2aa"
    assert p.org_code == "org_590d7f1a86a"
    assert p.scopes == frozenset({"openid", "profile"})
    assert p.is_machine is False
    assert p.is_user is True
    assert p.client_id == "frontend-app"


def test_m2m_token_with_scope_string(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    p = verifier.verify(sign(key_a, m2m_claims(scope="credits:read credits:write")))
    assert p.is_machine is True
    assert p.subject is None
    assert p.org_code is None
    assert p.client_id == "backend-client"
    assert p.scopes == frozenset({"credits:read", "credits:write"})
    assert p.has_scope("credits:write") and not p.has_scope("credits:admin")


def test_m2m_token_with_scp_list_and_org(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    p = verifier.verify(sign(key_a, m2m_claims(scp=["credits:admin"], org_code="org_1")))
    assert p.is_machine is True
    assert p.scopes == frozenset({"credits:admin"})
    assert p.org_code == "org_1"
    assert p.can_reach_wallet("org_1") and not p.can_reach_wallet("org_2")


def test_scp_and_scope_are_united(verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    token = sign(key_a, m2m_claims(scp=["credits:read"], scope="credits:write extra"))
    assert verifier.verify(token).scopes == frozenset({"credits:read", "credits:write", "extra"})


def test_non_kp_subject_without_gty_is_refused_not_a_machine(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    # Only a client-credentials grant makes a machine; a token that is neither a user (kp_)
    # nor an M2M token used to be treated as an unrestricted machine.
    with pytest.raises(ClaimsInvalid) as info:
        claims = m2m_claims(sub="client_xyz")
        del claims["gty"]
        verifier.verify(sign(key_a, claims))
    assert "'sub'" in info.value.message


def test_audience_none_skips_aud_check(source: JwksKeySource, key_a: rsa.RSAPrivateKey) -> None:
    v = AccessTokenVerifier(source, issuer=ISSUER, audience=None)
    assert v.verify(sign(key_a, user_claims(aud=["someone-else"]))).subject == "kp_65b2aa"
    assert v.verify(sign(key_a, user_claims(aud=None))).subject == "kp_65b2aa"


def test_leeway_accepts_just_expired(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    assert verifier.verify(sign(key_a, user_claims(exp=int(time.time()) - 10))).is_user


# --------------------------------------------------------------------------------------------
# access tokens: claims
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"exp": int(time.time()) - 120}, "token_expired"),
        ({"exp": None}, "claims_invalid"),
        ({"aud": ["https://other.api"]}, "claims_invalid"),
        ({"aud": None}, "claims_invalid"),
        ({"iss": "https://evil.kinde.com"}, "claims_invalid"),
        ({"iss": None}, "claims_invalid"),
        ({"nbf": int(time.time()) + 3600}, "claims_invalid"),
    ],
    ids=[
        "expired",
        "missing-exp",
        "wrong-aud",
        "missing-aud",
        "wrong-iss",
        "missing-iss",
        "not-yet-valid",
    ],
)
def test_bad_claims_rejected(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, over: dict[str, Any], code: str
) -> None:
    token = sign(key_a, user_claims(**over))
    with pytest.raises(ClaimsInvalid) as info:
        verifier.verify(token)
    assert info.value.code == code
    assert token not in info.value.message and token not in str(info.value)


# --------------------------------------------------------------------------------------------
# access tokens: algorithm and key attacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_rejected_without_touching_keys(
    verifier: AccessTokenVerifier, server: JwksServer, alg: str
) -> None:
    token = f"{b64json({'alg': alg, 'kid': KID_A, 'typ': 'JWT'})}.{b64json(user_claims())}."
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(token)
    assert server.fetch_count == 0


def test_hs256_with_public_key_as_secret_rejected(
    verifier: AccessTokenVerifier, server: JwksServer, key_a: rsa.RSAPrivateKey
) -> None:
    # The classic key-confusion attack: HMAC keyed with the public PEM that anyone can get.
    pem = key_a.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64json({'alg': 'HS256', 'kid': KID_A, 'typ': 'JWT'})}.{b64json(user_claims())}"
    )
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(token)
    assert server.fetch_count == 0


def test_es256_rejected(verifier: AccessTokenVerifier, server: JwksServer) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(user_claims(), ec_key, algorithm="ES256", headers={"kid": KID_A})
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(token)
    assert server.fetch_count == 0


def test_other_rsa_key_with_same_kid_rejected(
    verifier: AccessTokenVerifier, attacker_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidSignature):
        verifier.verify(sign(attacker_key, user_claims(), kid=KID_A))


def test_rs256_with_empty_signature_rejected(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    header, payload, _ = sign(key_a, user_claims()).split(".")
    with pytest.raises(InvalidSignature):
        verifier.verify(f"{header}.{payload}.")


def test_missing_kid_is_unknown_key(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, server: JwksServer
) -> None:
    with pytest.raises(UnknownKey):
        verifier.verify(sign(key_a, user_claims(), kid=None))
    assert server.fetch_count == 0


def test_crit_header_rejected(verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidSignature):
        verifier.verify(sign(key_a, user_claims(), crit=["exp"]))


@pytest.mark.parametrize("header", ["jku", "x5u"])
def test_key_url_headers_are_ignored(
    verifier: AccessTokenVerifier,
    server: JwksServer,
    attacker_key: rsa.RSAPrivateKey,
    header: str,
) -> None:
    with JwksServer({"keys": [jwk(attacker_key, KID_A), jwk(attacker_key, "evil")]}) as evil:
        # Attacker signs with its own key, names the real kid and points at its own JWKS.
        with pytest.raises(InvalidSignature):
            verifier.verify(sign(attacker_key, user_claims(), kid=KID_A, **{header: evil.url}))
        # Or names its own kid: still looked up only in the configured JWKS.
        with pytest.raises(UnknownKey):
            verifier.verify(sign(attacker_key, user_claims(), kid="evil", **{header: evil.url}))
        assert evil.fetch_count == 0
    assert server.fetch_count >= 1


def test_embedded_jwk_header_is_ignored(
    verifier: AccessTokenVerifier, attacker_key: rsa.RSAPrivateKey
) -> None:
    token = sign(attacker_key, user_claims(), kid=KID_A, jwk=jwk(attacker_key, KID_A))
    with pytest.raises(InvalidSignature):
        verifier.verify(token)


@pytest.mark.parametrize(
    "garbage", ["", "   ", "abc", "a.b", "a.b.c.d", "!!.$$.%%", "Bearer x.y.z"]
)
def test_garbage_access_token_is_malformed(verifier: AccessTokenVerifier, garbage: str) -> None:
    with pytest.raises(MalformedToken):
        verifier.verify(garbage)


# --------------------------------------------------------------------------------------------
# JWKS key source: refresh, cooldown, outages
# --------------------------------------------------------------------------------------------


def test_keys_are_cached(
    verifier: AccessTokenVerifier, server: JwksServer, key_a: rsa.RSAPrivateKey
) -> None:
    for _ in range(5):
        verifier.verify(sign(key_a, user_claims()))
    assert server.fetch_count == 1


def test_ttl_expiry_refetches(
    verifier: AccessTokenVerifier, server: JwksServer, clock: FakeClock, key_a: rsa.RSAPrivateKey
) -> None:
    verifier.verify(sign(key_a, user_claims()))
    clock.now += 301
    verifier.verify(sign(key_a, user_claims()))
    assert server.fetch_count == 2


def test_unknown_kid_refreshes_once_then_succeeds_after_rotation(
    verifier: AccessTokenVerifier,
    server: JwksServer,
    key_a: rsa.RSAPrivateKey,
    key_b: rsa.RSAPrivateKey,
) -> None:
    verifier.verify(sign(key_a, user_claims()))
    assert server.fetch_count == 1
    server.set_jwks({"keys": [jwk(key_a, KID_A), jwk(key_b, KID_B)]})
    assert verifier.verify(sign(key_b, user_claims(), kid=KID_B)).subject == "kp_65b2aa"
    assert server.fetch_count == 2
    verifier.verify(sign(key_b, user_claims(), kid=KID_B))
    verifier.verify(sign(key_a, user_claims()))
    assert server.fetch_count == 2


def test_flood_of_unknown_kids_within_cooldown_fetches_nothing_more(
    verifier: AccessTokenVerifier,
    server: JwksServer,
    clock: FakeClock,
    key_a: rsa.RSAPrivateKey,
) -> None:
    verifier.verify(sign(key_a, user_claims()))
    with pytest.raises(UnknownKey):
        verifier.verify(sign(key_a, user_claims(), kid="random-0"))
    assert server.fetch_count == 2  # the one forced refresh
    for i in range(1, 100):
        clock.now += 0.25  # 25 s in total: still inside the 30 s cooldown
        with pytest.raises(UnknownKey):
            verifier.verify(sign(key_a, user_claims(), kid=f"random-{i}"))
    assert server.fetch_count == 2
    clock.now += 5.5  # cooldown over: exactly one more refresh is allowed
    for i in range(10):
        with pytest.raises(UnknownKey):
            verifier.verify(sign(key_a, user_claims(), kid=f"again-{i}"))
    assert server.fetch_count == 3


def test_unknown_kid_on_cold_cache_costs_one_fetch(
    verifier: AccessTokenVerifier, server: JwksServer, key_a: rsa.RSAPrivateKey
) -> None:
    # The first load just happened, so an immediate "refresh" could not find anything newer.
    with pytest.raises(UnknownKey):
        verifier.verify(sign(key_a, user_claims(), kid="random"))
    assert server.fetch_count == 1


def test_concurrent_cold_start_fetches_once(
    verifier: AccessTokenVerifier, server: JwksServer, key_a: rsa.RSAPrivateKey
) -> None:
    token = sign(key_a, user_claims())
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            verifier.verify(token)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert server.fetch_count == 1


def test_jwks_down_raises_key_source_unavailable_fast(key_a: rsa.RSAPrivateKey) -> None:
    source = JwksKeySource(f"http://127.0.0.1:{free_port()}/.well-known/jwks.json", timeout=1.0)
    verifier = AccessTokenVerifier(source, issuer=ISSUER, audience=AUDIENCE)
    started = time.monotonic()
    with pytest.raises(KeySourceUnavailable) as info:
        verifier.verify(sign(key_a, user_claims()))
    assert time.monotonic() - started < 1.5
    assert not isinstance(info.value, TokenError)  # a 503, not a 401


def test_slow_jwks_respects_timeout_and_backs_off(
    server: JwksServer, key_a: rsa.RSAPrivateKey
) -> None:
    server.set_delay(5.0)
    source = JwksKeySource(server.url, timeout=0.3, error_backoff=5.0)
    started = time.monotonic()
    with pytest.raises(KeySourceUnavailable):
        source.get_key(KID_A)
    assert time.monotonic() - started < 2.0
    # Within the error backoff, callers fail fast without another fetch.
    started = time.monotonic()
    with pytest.raises(KeySourceUnavailable):
        source.get_key(KID_A)
    assert time.monotonic() - started < 0.2
    assert source.fetch_count == 1


@pytest.mark.parametrize("status", [500, 404])
def test_jwks_http_error_is_unavailable(server: JwksServer, status: int) -> None:
    server.set_status(status)
    with pytest.raises(KeySourceUnavailable):
        JwksKeySource(server.url).get_key(KID_A)


def test_non_jwks_document_is_unavailable(server: JwksServer) -> None:
    server.set_jwks({"not": "a jwks"})
    with pytest.raises(KeySourceUnavailable):
        JwksKeySource(server.url).get_key(KID_A)


def test_stale_keys_serve_when_refresh_fails(
    verifier: AccessTokenVerifier, server: JwksServer, clock: FakeClock, key_a: rsa.RSAPrivateKey
) -> None:
    verifier.verify(sign(key_a, user_claims()))
    server.set_status(500)
    clock.now += 301
    assert verifier.verify(sign(key_a, user_claims())).is_user
    assert server.fetch_count == 2
    verifier.verify(sign(key_a, user_claims()))  # inside the error backoff: no new attempt
    assert server.fetch_count == 2


def test_parse_jwks_keeps_only_rs256_signing_keys(key_a: rsa.RSAPrivateKey) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(
        ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True
    )
    doc = {
        "keys": [
            jwk(key_a, "good"),
            {k: v for k, v in jwk(key_a, "no-use-no-alg").items() if k not in ("use", "alg")},
            jwk(key_a, "enc", use="enc"),
            jwk(key_a, "rs512", alg="RS512"),
            jwk(weak, "weak"),
            {**ec_jwk, "kid": "ec", "use": "sig"},
            {k: v for k, v in jwk(key_a, "x").items() if k != "kid"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not-an-object",
        ]
    }
    assert sorted(parse_jwks(doc)) == ["good", "no-use-no-alg"]


def test_encryption_key_is_not_used_for_verification(key_a: rsa.RSAPrivateKey) -> None:
    verifier = AccessTokenVerifier(
        StaticKeySource({"keys": [jwk(key_a, KID_A, use="enc")]}), issuer=ISSUER, audience=None
    )
    with pytest.raises(UnknownKey):
        verifier.verify(sign(key_a, user_claims()))


# --------------------------------------------------------------------------------------------
# webhooks
# --------------------------------------------------------------------------------------------


def test_webhook_without_iss_aud_exp_is_accepted(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    claims = webhooks.verify(sign(key_a, event(), typ="JWT").encode())
    assert claims["type"] == "user.created"
    assert claims["event_id"].startswith("event_")
    assert "iss" not in claims and "exp" not in claims


def test_webhook_body_whitespace_and_str(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    token = sign(key_a, event())
    assert webhooks.verify(f"\r\n  {token}\n")["type"] == "user.created"


def test_webhook_json_string_wrapped_is_accepted(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    body = json.dumps(sign(key_a, event())).encode()
    assert webhooks.verify(body)["type"] == "user.created"


def test_webhook_tampered_payload_rejected(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    header, payload, sig = sign(key_a, event()).split(".")
    i = len(payload) // 2
    flipped = "B" if payload[i] != "B" else "C"
    with pytest.raises(InvalidSignature):
        webhooks.verify(f"{header}.{payload[:i]}{flipped}{payload[i + 1 :]}.{sig}")


def test_webhook_other_key_rejected(
    webhooks: WebhookVerifier, attacker_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidSignature):
        webhooks.verify(sign(attacker_key, event(), kid=KID_A))


def test_webhook_alg_none_rejected(webhooks: WebhookVerifier) -> None:
    with pytest.raises(AlgorithmNotAllowed):
        webhooks.verify(f"{b64json({'alg': 'none', 'kid': KID_A})}.{b64json(event())}.")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"garbage",
        b"a.b",
        b"a.b.c.d",
        b'{"type": "user.created"}',
        b"\xff\xfe\x00",
        b'"not a jwt"',
        b'"unterminated',
        b"x.y.z",
        b"...",
        b"123",
    ],
)
def test_webhook_garbage_is_malformed(webhooks: WebhookVerifier, body: bytes) -> None:
    with pytest.raises(MalformedToken):
        webhooks.verify(body)


def test_webhook_wrong_iss_rejected_when_present(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(sign(key_a, event(iss="https://evil.kinde.com")))
    assert webhooks.verify(sign(key_a, event(iss=ISSUER)))["type"] == "user.created"


def test_webhook_iss_not_checked_without_configured_issuer(
    source: JwksKeySource, key_a: rsa.RSAPrivateKey
) -> None:
    v = WebhookVerifier(source, issuer=None)
    assert v.verify(sign(key_a, event(iss="https://whatever")))["type"] == "user.created"


def test_webhook_expired_when_exp_present(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(sign(key_a, event(exp=int(time.time()) - 3600)))


@pytest.mark.parametrize(
    "over", [{"event_id": None}, {"type": None}, {"event_id": 42}, {"type": ""}]
)
def test_webhook_payload_without_type_or_event_id_passes_to_parking(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey, over: dict[str, Any]
) -> None:
    """Signed by Kinde's key: the webhook service keeps and parks it instead of a 401 loop."""
    assert webhooks.verify(sign(key_a, event(**over))).get("type") == event(**over).get("type")


def test_webhook_non_object_payload_rejected(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    token = jwt.api_jws.encode(b"[1,2,3]", key_a, algorithm="RS256", headers={"kid": KID_A})
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(token)


def test_tokens_never_appear_in_errors_or_logs(
    webhooks: WebhookVerifier,
    verifier: AccessTokenVerifier,
    key_a: rsa.RSAPrivateKey,
    attacker_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = [
        sign(attacker_key, event(), kid=KID_A),
        sign(key_a, event(), kid="nope"),
        sign(key_a, user_claims(exp=1)),
    ]
    for token in bad:
        for check in (webhooks.verify, verifier.verify):
            with pytest.raises(TokenError) as info:
                check(token)
            assert token not in str(info.value)
            assert token.split(".")[1] not in info.value.message
    assert all(t.split(".")[1] not in caplog.text for t in bad)


# --------------------------------------------------------------------------------------------
# hostile token content: nesting, non-Latin-1 headers, wrong-typed claims (issue 9, item 13)
# --------------------------------------------------------------------------------------------


def sign_raw(key: rsa.RSAPrivateKey, payload: bytes | dict[str, Any], kid: str = KID_A) -> str:
    """RS256 over exactly these payload bytes: PyJWT's own encoder refuses some bad claims."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.api_jws.encode(raw, key, algorithm="RS256", headers={"kid": kid})


def deep_header_token(depth: int = 5000) -> str:
    header = '{"alg":"RS256","kid":"' + KID_A + '","x":' + "[" * depth + "]" * depth + "}"
    return f"{b64url(header.encode())}.{b64json(user_claims())}.{b64url(b'sig')}"


def test_deeply_nested_header_is_malformed_not_recursion(
    verifier: AccessTokenVerifier, webhooks: WebhookVerifier, server: JwksServer
) -> None:
    token = deep_header_token()
    with pytest.raises(MalformedToken):
        verifier.verify(token)
    with pytest.raises(MalformedToken):
        webhooks.verify(token.encode())
    assert server.fetch_count == 0


def test_deeply_nested_signed_payload_is_refused(
    verifier: AccessTokenVerifier, webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    # Validly signed (a key holder's mistake, or a hostile field inside Kinde's data): still a
    # clean refusal, never a RecursionError.
    depth = 5000
    payload = (
        json.dumps(event())[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    ).encode()
    token = sign_raw(key_a, payload)
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(token)
    with pytest.raises(ClaimsInvalid):
        verifier.verify(token)


@pytest.mark.parametrize("alg", ["RS256\u2603", "\u00e9\u00e9", "\u4e2d", "x" * 10, "HS256"])
def test_refused_alg_is_never_echoed(verifier: AccessTokenVerifier, alg: str) -> None:
    token = f"{b64json({'alg': alg, 'kid': KID_A})}.{b64json(user_claims())}.{b64url(b'x')}"
    with pytest.raises(AlgorithmNotAllowed) as info:
        verifier.verify(token)
    # Header values go into WWW-Authenticate: token content must never reach them.
    assert alg not in info.value.message
    assert info.value.message.isascii()


def _numeric_date_cases() -> list[tuple[str, Any]]:
    # Fixed values (not time-based): pytest-xdist workers must collect identical test ids.
    future = 4102444800  # 2100-01-01
    return [
        ("exp", str(future)),  # PyJWT would int() this and let it through
        ("exp", "soon"),
        ("exp", True),
        ("exp", [future]),
        ("exp", {"v": future}),
        ("iat", "yesterday"),
        ("iat", "1700000000"),
        ("iat", False),
        ("nbf", "now"),
        ("nbf", [1]),
    ]


WRONG_TYPED_ACCESS_CLAIMS: list[tuple[str, Any]] = [
    *_numeric_date_cases(),
    ("exp", None),
    ("aud", 42),
    ("aud", [42]),
    ("aud", {"a": AUDIENCE}),
    ("aud", [AUDIENCE, 7]),
    ("iss", 42),
    ("iss", [ISSUER]),
    ("jti", 42),
    ("jti", ["x"]),
]


@pytest.mark.parametrize(("claim", "value"), WRONG_TYPED_ACCESS_CLAIMS)
def test_wrong_typed_registered_claims_refused(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, claim: str, value: Any
) -> None:
    token = sign_raw(key_a, {**user_claims(), claim: value})
    with pytest.raises(ClaimsInvalid) as info:
        verifier.verify(token)
    assert f"'{claim}'" in info.value.message
    assert info.value.message.isascii()


@pytest.mark.parametrize(("claim", "value"), _numeric_date_cases())
def test_wrong_typed_time_claims_refused_on_webhooks(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey, claim: str, value: Any
) -> None:
    with pytest.raises(ClaimsInvalid) as info:
        webhooks.verify(sign_raw(key_a, {**event(), claim: value}))
    assert f"'{claim}'" in info.value.message


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_exp_refused(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, literal: str
) -> None:
    claims = user_claims()
    del claims["exp"]
    payload = (json.dumps(claims)[:-1] + f', "exp": {literal}}}').encode()
    with pytest.raises(ClaimsInvalid):
        verifier.verify(sign_raw(key_a, payload))


# --------------------------------------------------------------------------------------------
# principal claims: present but malformed reaches nothing (issue 9, item 14)
# --------------------------------------------------------------------------------------------

# (token kind, claim, bad value): every one must be refused with a message naming the claim.
MALFORMED_PRINCIPAL_CLAIMS: list[tuple[str, str, Any]] = [
    ("m2m", "org_code", ""),
    ("m2m", "org_code", 42),
    ("m2m", "org_code", None),
    ("m2m", "org_code", ["org_1"]),
    ("m2m", "org_code", "kp_bob"),
    ("m2m", "org_code", "acme"),
    ("m2m", "org_code", "org_"),
    ("m2m", "org_code", "org_a b"),
    ("user", "org_code", "kp_bob"),
    ("user", "org_code", ""),
    ("user", "org_code", 7),
    ("user", "org_code", None),
    ("user", "sub", "client_xyz"),
    ("user", "sub", ""),
    ("user", "sub", "kp_"),
    ("user", "sub", 42),
    ("user", "sub", None),
    ("user", "sub", ["kp_a"]),
    ("user", "sub", "kp_a/../b"),
    ("m2m", "sub", 42),
    ("m2m", "sub", ""),
    ("m2m", "gty", 1),
    ("m2m", "gty", {"client_credentials": True}),
    ("m2m", "gty", ["client_credentials", 3]),
    ("user", "gty", True),
    ("m2m", "scp", "credits:admin"),
    ("m2m", "scp", [1, 2]),
    ("m2m", "scp", {"credits:admin": 1}),
    ("user", "scp", None),
    ("m2m", "scope", ["credits:admin"]),
    ("m2m", "scope", 1),
    ("user", "permissions", "credits:admin"),
    ("user", "permissions", [1]),
    ("m2m", "azp", 5),
    ("m2m", "azp", ""),
]


@pytest.mark.parametrize(("kind", "claim", "value"), MALFORMED_PRINCIPAL_CLAIMS)
def test_malformed_principal_claims_are_refused(
    verifier: AccessTokenVerifier,
    key_a: rsa.RSAPrivateKey,
    kind: str,
    claim: str,
    value: Any,
) -> None:
    base = m2m_claims(scp=["credits:admin"]) if kind == "m2m" else user_claims()
    token = sign_raw(key_a, {**base, claim: value})
    with pytest.raises(ClaimsInvalid) as info:
        verifier.verify(token)
    assert f"'{claim}'" in info.value.message
    assert info.value.message.isascii()


def test_well_formed_principal_claims_still_work(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    p = verifier.verify(sign(key_a, m2m_claims(gty="client_credentials", org_code="org_a-1_B")))
    assert p.is_machine and p.org_code == "org_a-1_B"
    p = verifier.verify(sign(key_a, m2m_claims(sub="client_abc", scp=[], scope="")))
    assert p.is_machine and p.org_code is None
    p = verifier.verify(sign(key_a, user_claims(permissions=["read:x"], scope="openid")))
    assert p.is_user and p.subject == "kp_65b2aa"


# --------------------------------------------------------------------------------------------
# access tokens and webhooks never stand in for each other (issue 9, item 15)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {"type": "user.created", "event_id": "event_1", "data": {"user": {"id": "kp_65b2aa"}}},
        {"type": "user.created", "event_id": "event_1"},
        {"event_id": "event_1"},
        {"type": "user.created"},
        {"data": {}},
    ],
)
def test_access_verifier_refuses_tokens_carrying_webhook_fields(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, over: dict[str, Any]
) -> None:
    for base in (user_claims(), m2m_claims(scp=["credits:admin"])):
        with pytest.raises(ClaimsInvalid):
            verifier.verify(sign(key_a, {**base, **over}))


def test_access_verifier_refuses_a_real_webhook(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey
) -> None:
    hook = event()
    with pytest.raises(ClaimsInvalid):
        verifier.verify(sign(key_a, hook))
    # Even one that happens to carry iss/aud/exp like an access token.
    now = int(time.time())
    with pytest.raises(ClaimsInvalid):
        verifier.verify(sign(key_a, {**hook, "iss": ISSUER, "aud": [AUDIENCE], "exp": now + 60}))


@pytest.mark.parametrize("kind", ["user", "m2m"])
def test_webhook_verifier_refuses_access_tokens(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey, kind: str
) -> None:
    base = user_claims() if kind == "user" else m2m_claims(scp=["credits:admin"])
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(sign(key_a, base))
    # An access token that also carries webhook fields is still an access token.
    shaped = {**base, "type": "user.created", "event_id": "event_x", "data": {}}
    with pytest.raises(ClaimsInvalid):
        webhooks.verify(sign(key_a, shaped))


@pytest.mark.parametrize("claim", ["aud", "azp", "gty", "scp", "scope", "sub"])
def test_webhook_with_any_access_token_claim_is_refused(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey, claim: str
) -> None:
    value: Any = ["x"] if claim in ("aud", "gty", "scp") else "x"
    with pytest.raises(ClaimsInvalid) as info:
        webhooks.verify(sign(key_a, event(**{claim: value})))
    assert f"'{claim}'" in info.value.message


@pytest.mark.parametrize("data", [None, "text", [1], 3])
def test_webhook_without_a_data_object_is_verified_for_parking(
    webhooks: WebhookVerifier, key_a: rsa.RSAPrivateKey, data: Any
) -> None:
    """The signature is Kinde's: the claims pass through, and the webhook service parks them."""
    payload = event()
    if data is None:
        del payload["data"]
    else:
        payload["data"] = data
    assert webhooks.verify(sign(key_a, payload)).get("data") == payload.get("data")


def test_token_error_messages_are_always_header_safe() -> None:
    error = ClaimsInvalid("bad \u2603 value\r\nSet-Cookie: x=1")
    assert error.message == "bad ? value??Set-Cookie: x=1"
    assert error.message.isascii() and error.message.isprintable()


# --------------------------------------------------------------------------------------------
# lifetime: a token valid for longer than TOKEN_MAX_LIFETIME_SECONDS is refused (issue 18)
# --------------------------------------------------------------------------------------------


def _raw_times(**literals: str) -> bytes:
    """User claims with the time claims written as raw JSON literals (10**40, 1e300, ...)."""
    claims = user_claims()
    for name in ("exp", "iat", "nbf"):
        claims.pop(name, None)
    body = json.dumps(claims)[:-1]
    return (body + "".join(f', "{k}": {v}' for k, v in literals.items()) + "}").encode()


# Times as offsets from now ("+3600") or raw JSON literals; ids are fixed, because
# pytest-xdist workers must collect identical test ids.
_LONG_LIVED: list[tuple[str, dict[str, str]]] = [
    ("exp 10**40", {"exp": str(10**40)}),
    ("exp 10**40 with iat", {"exp": str(10**40), "iat": "+0"}),
    ("exp 1e300 float", {"exp": "1e300"}),
    ("exp and iat 1e300", {"exp": "1e300", "iat": "1e300"}),
    ("exp of 4000 digits", {"exp": str(10**4000)}),
    ("a day and an hour", {"exp": "+90000", "iat": "+0"}),
    ("issued two days ago", {"exp": "+3600", "iat": "-172800"}),
    ("no iat, two days left", {"exp": "+172800"}),
    ("iat -10**40", {"exp": "+600", "iat": str(-(10**40))}),
]


def _literal(value: str, now: int) -> str:
    return str(now + int(value)) if value[:1] in "+-" and value[1:].isdigit() and \
        len(value) < 12 else value


@pytest.mark.parametrize("literals", [pytest.param(lit, id=name) for name, lit in _LONG_LIVED])
def test_token_living_longer_than_the_maximum_is_refused(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, literals: dict[str, str]
) -> None:
    now = int(time.time())
    payload = _raw_times(**{k: _literal(v, now) for k, v in literals.items()})
    with pytest.raises(ClaimsInvalid) as info:
        verifier.verify(sign_raw(key_a, payload))
    assert info.value.message.isascii()


@pytest.mark.parametrize(("claim", "literal"), [
    ("exp", "4102444800.5"), ("exp", "4102444800.0"), ("iat", "1700000000.25"),
    ("nbf", "1.0"), ("exp", "true"), ("iat", "false"), ("nbf", "true"),
])
def test_non_integer_time_claims_are_refused(
    verifier: AccessTokenVerifier, key_a: rsa.RSAPrivateKey, claim: str, literal: str
) -> None:
    now = int(time.time())
    literals = {"exp": str(now + 600), "iat": str(now), claim: literal}
    with pytest.raises(ClaimsInvalid) as info:
        verifier.verify(sign_raw(key_a, _raw_times(**literals)))
    assert f"'{claim}'" in info.value.message


def test_lifetime_maximum_is_configurable(source: JwksKeySource,
                                          key_a: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    week = sign(key_a, user_claims(iat=now, exp=now + 7 * 86400))
    with pytest.raises(ClaimsInvalid):
        AccessTokenVerifier(source, issuer=ISSUER, audience=AUDIENCE).verify(week)
    roomy = AccessTokenVerifier(source, issuer=ISSUER, audience=AUDIENCE,
                                max_lifetime=8 * 86400)
    assert roomy.verify(week).subject == "kp_65b2aa"
    # Kinde's default (a day) passes the default maximum.
    day = sign(key_a, user_claims(iat=now, exp=now + 86400))
    assert AccessTokenVerifier(source, issuer=ISSUER, audience=AUDIENCE).verify(day).is_user
