"""adapters.local_keys: the local-mode key file, its JWKS, and tokens the real verifiers accept."""

from __future__ import annotations

import hashlib
import re
import stat
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.local_keys import LocalKeyring, key_id
from adapters.tokens import (
    AccessTokenVerifier,
    ClaimsInvalid,
    InvalidSignature,
    JwksKeySource,
    UnknownKey,
    WebhookVerifier,
)
from tests.fakes.jwks_server import JwksServer

ISSUER = "http://127.0.0.1:8080"
AUDIENCE = "kinde-credits-local"
KID_RE = re.compile(r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    return LocalKeyring.load_or_create(tmp_path_factory.mktemp("keys") / "signing.pem")


def test_creates_key_file_with_private_mode_and_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keys" / "signing.pem"
    LocalKeyring.load_or_create(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in path.parent.iterdir()) == ["signing.pem"]  # no temp leftovers


def test_same_key_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    first = LocalKeyring.load_or_create(path)
    second = LocalKeyring.load_or_create(path)
    assert first.kid == second.kid
    assert first.jwks() == second.jwks()
    # ... and a token from the first instance verifies with the second's keys.
    token = first.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER)
    assert AccessTokenVerifier(second.key_source(), ISSUER, AUDIENCE).verify(token).is_user


def test_different_files_give_different_keys(tmp_path: Path) -> None:
    a = LocalKeyring.load_or_create(tmp_path / "a.pem")
    b = LocalKeyring.load_or_create(tmp_path / "b.pem")
    assert a.kid != b.kid


def test_kid_is_colon_hex_fingerprint_of_public_key(keyring: LocalKeyring) -> None:
    assert KID_RE.fullmatch(keyring.kid)
    der = keyring.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keyring.kid == ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest()[:16])
    assert key_id(keyring.public_key) == keyring.kid


def test_jwks_shape(keyring: LocalKeyring) -> None:
    jwks = keyring.jwks()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
    assert (key["kty"], key["kid"], key["use"], key["alg"]) == ("RSA", keyring.kid, "sig", "RS256")
    assert key["e"] == "AQAB"
    assert "d" not in key


def test_user_token_claims_like_kinde(keyring: LocalKeyring) -> None:
    token = keyring.sign_access_token(
        "kp_alice", "org_1", ["credits:read"], AUDIENCE, ISSUER, ttl_seconds=120
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == keyring.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER
    assert claims["aud"] == [AUDIENCE]
    assert claims["sub"] == "kp_alice"
    assert claims["org_code"] == "org_1"
    assert claims["scp"] == ["credits:read"] and claims["scope"] == "credits:read"
    assert claims["exp"] - claims["iat"] == 120
    assert claims["jti"] and claims["azp"]
    assert "gty" not in claims


def test_machine_token_has_client_credentials_grant(keyring: LocalKeyring) -> None:
    token = keyring.sign_access_token(
        None, None, ["credits:write"], AUDIENCE, ISSUER, machine=True, client_id="cli"
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["gty"] == ["client_credentials"]
    assert "sub" not in claims
    p = AccessTokenVerifier(keyring.key_source(), ISSUER, AUDIENCE).verify(token)
    assert p.is_machine and p.client_id == "cli" and p.has_scope("credits:write")


def test_tokens_verify_through_real_jwks_over_http(keyring: LocalKeyring) -> None:
    with JwksServer(keyring.jwks()) as server:
        verifier = AccessTokenVerifier(JwksKeySource(server.url), ISSUER, AUDIENCE)
        token = keyring.sign_access_token("kp_alice", "org_1", [], AUDIENCE, ISSUER)
        p = verifier.verify(token)
        assert (p.subject, p.org_code, p.is_machine) == ("kp_alice", "org_1", False)
        assert server.fetch_count == 1


def test_expired_local_token_rejected(keyring: LocalKeyring) -> None:
    token = keyring.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER, ttl_seconds=-120)
    with pytest.raises(ClaimsInvalid):
        AccessTokenVerifier(keyring.key_source(), ISSUER, AUDIENCE).verify(token)


def test_token_from_another_keyring_rejected(keyring: LocalKeyring, tmp_path: Path) -> None:
    other = LocalKeyring.load_or_create(tmp_path / "other.pem")
    verifier = AccessTokenVerifier(keyring.key_source(), ISSUER, AUDIENCE)
    with pytest.raises(UnknownKey):
        verifier.verify(other.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER))
    # The other key claiming our kid must fail on the signature.
    other_private = serialization.load_pem_private_key(
        (tmp_path / "other.pem").read_bytes(), password=None
    )
    assert isinstance(other_private, rsa.RSAPrivateKey)
    claims = {"iss": ISSUER, "aud": [AUDIENCE], "sub": "kp_a", "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, other_private, algorithm="RS256", headers={"kid": keyring.kid})
    with pytest.raises(InvalidSignature):
        verifier.verify(forged)


def test_webhook_like_kinde(keyring: LocalKeyring) -> None:
    payload = {"type": "user.created", "event_id": "event_1", "data": {"user": {"id": "kp_1"}}}
    token = keyring.sign_webhook(payload)
    assert jwt.get_unverified_header(token)["kid"] == keyring.kid
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw == payload  # nothing added: no iss/aud/exp/iat
    assert WebhookVerifier(keyring.key_source(), issuer=ISSUER).verify(token) == payload


def test_concurrent_load_or_create_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "race" / "signing.pem"
    n = 8
    barrier = threading.Barrier(n)
    kids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            kid = LocalKeyring.load_or_create(path).kid
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
            return
        with lock:
            kids.append(kid)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(kids) == n and len(set(kids)) == 1
    assert LocalKeyring.load_or_create(path).kid == kids[0]
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]


def test_non_rsa_key_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="RSA"):
        LocalKeyring.load_or_create(path)
    assert time.monotonic() - started < 0.5
