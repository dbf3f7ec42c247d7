"""Shared fixtures for the API tests: a test signing key served as a real JWKS over HTTP, a
token factory, and an app wired through `build_container` like production.

Tokens are really signed (RS256, Kinde's claim shapes) and really verified: the verifier fetches
the JWKS from `tests.fakes.jwks_server.JwksServer` over loopback HTTP, never a patched-out stub.

Import the fixtures into a test module with `from tests.http_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from adapters.local_keys import key_id
from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.settings import DEFAULT_CATALOG, Settings
from tests.fakes.jwks_server import JwksServer

ISSUER = "http://127.0.0.1:9"  # a Kinde-mode issuer on loopback (plain http is allowed there)
AUDIENCE = "https://api.credits.test"

__all__ = [
    "ISSUER",
    "AUDIENCE",
    "Tokens",
    "signing_key",
    "other_key",
    "jwks_server",
    "tokens",
    "api_settings",
    "api_container",
    "api_app",
    "client",
    "bearer",
    "jwk",
    "count_rows",
    "table_counts",
    "free_port",
    "LiveServer",
]


def jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": "RSA", "kid": key_id(key.public_key()), "use": "sig", "alg": "RS256",
            "n": public["n"], "e": public["e"]}


@dataclass
class Tokens:
    """Signs access tokens the way Kinde does, plus every kind of bad token."""

    key: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    issuer: str = ISSUER
    audience: str = AUDIENCE

    @property
    def kid(self) -> str:
        return key_id(self.key.public_key())

    @staticmethod
    def kid_of(key: rsa.RSAPrivateKey) -> str:
        return key_id(key.public_key())

    def claims(self, sub: str | None = None, *, org: str | None = None,
               scopes: tuple[str, ...] = (), m2m: bool = False, ttl: int = 600,
               **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": [self.audience], "iat": now, "exp": now + ttl,
            "jti": str(uuid.uuid4()), "azp": "test-client", "scp": list(scopes),
            "scope": " ".join(scopes),
        }
        if sub is not None:
            claims["sub"] = sub
        if org is not None:
            claims["org_code"] = org
        if m2m:
            claims["gty"] = ["client_credentials"]
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None,
             kid: str | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})

    def user(self, sub: str, *, org: str | None = None, scopes: tuple[str, ...] = ()) -> str:
        return self.sign(self.claims(sub, org=org, scopes=scopes))

    def m2m(self, *scopes: str, org: str | None = None) -> str:
        return self.sign(self.claims(None, org=org, scopes=scopes, m2m=True))

    # -- bad tokens ------------------------------------------------------------------------

    def forged(self) -> str:
        """Right kid, signed with another key."""
        return self.sign(self.claims("kp_alice"), key=self.other)

    def tampered(self) -> str:
        """A good token whose payload was changed after signing (sub swapped)."""
        header, _, signature = self.user("kp_alice").split(".")
        payload = base64.urlsafe_b64encode(
            json.dumps(self.claims("kp_mallory")).encode()
        ).rstrip(b"=").decode()
        return f"{header}.{payload}.{signature}"

    def expired(self) -> str:
        return self.sign(self.claims("kp_alice", ttl=-3600))

    def wrong_audience(self) -> str:
        return self.sign(self.claims("kp_alice", aud=["https://another.api"]))

    def wrong_issuer(self) -> str:
        return self.sign(self.claims("kp_alice", iss="https://evil.kinde.com"))

    def no_exp(self) -> str:
        claims = self.claims("kp_alice")
        del claims["exp"]
        return self.sign(claims)

    def alg_none(self) -> str:
        def seg(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        return f"{seg({'alg': 'none', 'typ': 'JWT', 'kid': self.kid})}." \
               f"{seg(self.claims('kp_alice', scopes=('credits:admin',)))}."

    def hs256_with_public_key(self) -> str:
        """The classic confusion attack: HMAC keyed with the (public) RSA key's PEM."""
        import hashlib
        import hmac

        from cryptography.hazmat.primitives import serialization

        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

        def seg(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = seg(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.kid}).encode())
        payload = seg(json.dumps(self.claims("kp_alice", scopes=("credits:admin",))).encode())
        mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{seg(mac)}"

    def unknown_kid(self) -> str:
        return self.sign(self.claims("kp_alice"), key=self.other, kid="00:11:22:33")


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def jwks_server(signing_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    with JwksServer({"keys": [jwk(signing_key)]}) as server:
        yield server


@pytest.fixture(scope="session")
def tokens(signing_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> Tokens:
    return Tokens(signing_key, other_key)


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        catalog_path=DEFAULT_CATALOG,
        var_dir=tmp_path,
        kinde_domain=ISSUER,
        kinde_api_audience=AUDIENCE,
        run_worker=False,
        # These tests are about HTTP; selling without a gateway is tested with fake Kinde.
        sales_paid_elsewhere=True,
    )


@pytest.fixture
def api_container(api_settings: Settings, jwks_server: JwksServer) -> Iterator[Container]:
    container = build_container(
        api_settings, key_source=JwksKeySource(jwks_server.url), pool_size=5
    )
    yield container
    container.close()


@pytest.fixture
def api_app(api_container: Container) -> Flask:
    return create_app(container=api_container)


@pytest.fixture
def client(api_app: Flask) -> FlaskClient:
    return api_app.test_client()


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **{k.replace("_", "-"): v
                                                     for k, v in headers.items()}}


def count_rows(db_url: str, table: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def table_counts(db_url: str) -> dict[str, int]:
    """Row counts of every table a write could touch: "nothing written" means all unchanged."""
    counts = {
        table: count_rows(db_url, table)
        for table in ("wallets", "entries", "blocks", "holds", "idempotency_keys", "outbox")
    }
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            # Rows could stay put while a balance moved; sums catch that too.
            counts["balance_sum"], counts["held_sum"] = conn.execute(
                text("SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0) FROM wallets")
            ).one()
    finally:
        engine.dispose()
    return counts


# -- a real server -------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """`kinde-credits serve` (gunicorn) in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], *, workers: int = 1, threads: int = 4) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        # A file, not a pipe: a chatty server must never block on a full pipe buffer.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--threads", str(threads),
             "--no-worker"],
            env={**os.environ, **env, "RUN_WORKER": "false"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> LiveServer:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited early ({self.process.returncode}): {self.output()}"
                )
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]
