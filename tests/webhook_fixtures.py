"""Shared fixtures for the webhook tests: a test RSA key, its JWKS served over real HTTP, and the
app built with `KINDE_DOMAIN` on a loopback URL, so deliveries are verified exactly as in
production (real RS256 signatures; the verifier is never patched out).

Use them from a test module with:
    pytest_plugins = ["tests.webhook_fixtures"]  # jwks, signing_key, other_key, webhook_env
Test modules also import its helpers, so it is imported before pytest loads it as a plugin;
it holds no assertions, hence PYTEST_DONT_REWRITE (which also silences pytest's warning).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.domain.catalog import Catalog
from app.settings import Settings
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer

KID = "4c:fa:9e:d6:47:23:b7:39:c7:8f:97:28:45:a1:84:35"
AUDIENCE = "https://api.acme.test/credits"
TABLES = ("webhook_events", "entries", "wallets", "blocks", "meter_readings",
          "idempotency_keys")


@dataclass(frozen=True)
class SigningKey:
    private: rsa.RSAPrivateKey
    kid: str

    def jwk(self) -> dict[str, Any]:
        data = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": data["n"], "e": data["e"]}


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), KID)


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    """A key the JWKS does not publish (an attacker's)."""
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), KID)


@pytest.fixture
def jwks(signing_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer({"keys": [signing_key.jwk()]}) as server:
        yield server


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(payload: dict[str, Any], key: SigningKey, **headers: Any) -> str:
    hdr = {"kid": key.kid, "typ": "JWT", **headers}
    if hdr.get("kid") is None:
        del hdr["kid"]
    return jwt.encode(payload, key.private, algorithm="RS256", headers=hdr)


def event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """A payload shaped like Kinde's."""
    return {
        "type": event_type,
        "event_id": event_id or f"event_{uuid.uuid4().hex}",
        "source": "api",
        "timestamp": "2026-11-24T12:00:00.000000+10:00",
        "data": data,
    }


def meter(customer: str, value: Any, code: str = "storage_gb", *, absolute: bool = False,
          **extra: Any) -> dict[str, Any]:
    data = {"customer_id": customer, "feature_code": code, "meter_value": value, **extra}
    if absolute:
        data["meter_type_code"] = "absolute"
    return event("customer.meter_usage_updated", data)


def scenario(prefix: str) -> list[dict[str, Any]]:
    """One user's life: sign-up, agreement, kinde- and app-source usage, history, noise.
    Delivered cleanly it leaves kp_<prefix> at 500 - 100 x (2 + 3 + 9) credits."""
    c = f"customer_{prefix}"
    period = {"period_start": "2026-11-01T00:00:00Z"}
    return [
        event("user.created", {"user": {"id": f"kp_{prefix}", "email": "u@example.com"}}),
        event("customer.agreement_created",
              {"customer_id": c, "agreement_id": f"agreement_{prefix}",
               "user_id": f"kp_{prefix}", "plan_code": "pro"}),
        meter(c, "2"),
        meter(c, 3),
        meter(c, "4", absolute=True, **period),
        meter(c, "9", absolute=True, **period),
        meter(c, "7", "api_calls"),
        event("customer.payment_failed", {"customer_id": c}),
        event("user.updated", {"user": {"id": f"kp_{prefix}"}}),
    ]


SCENARIO_BALANCE = 500 - 100 * (2 + 3 + 9)


class WebhookEnv:
    """The app under test, a client, and helpers to sign, post and count."""

    def __init__(self, container: Container, key: SigningKey) -> None:
        self.container = container
        self.app = create_app(container=container)
        self.client: FlaskClient = self.app.test_client()
        self.key = key

    def sign(self, payload: dict[str, Any], **headers: Any) -> str:
        return sign(payload, self.key, **headers)

    def post(self, body: bytes | str, *, content_type: str = "application/jwt",
             webhook_id: str | None = None, client: FlaskClient | None = None) -> TestResponse:
        headers = {"webhook-id": webhook_id} if webhook_id else {}
        data = body.encode() if isinstance(body, str) else body
        return (client or self.client).post(
            "/webhooks/kinde", data=data, content_type=content_type, headers=headers
        )

    def deliver(self, payload: dict[str, Any], **kwargs: Any) -> TestResponse:
        return self.post(self.sign(payload), **kwargs)

    def counts(self) -> dict[str, int]:
        with self.container.store.engine.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
                    for t in TABLES}

    def balance(self, wallet_id: str) -> int:
        return int(self.container.ledger.get_wallet(wallet_id)["balance"])

    def inbox_row(self, event_id: str) -> Any:
        with self.container.store(False) as uow:
            return uow.inbox.get(event_id)

    def usage_entries(self, wallet_id: str) -> list[Any]:
        with self.container.store(False) as uow:
            return [e for e in uow.wallets.entries(wallet_id, 1000) if e.kind == "usage"]


def kinde_settings(db_url: str, var_dir: Path, jwks_url: str) -> Settings:
    host_port = jwks_url.split("/")[2]
    return Settings.from_env(
        {
            "DATABASE_URL": db_url,
            "KINDE_DOMAIN": f"http://{host_port}",
            "KINDE_JWKS_URL": jwks_url,
            "KINDE_API_AUDIENCE": AUDIENCE,
            "KINDE_CREDITS_VAR_DIR": str(var_dir),
            "RUN_WORKER": "false",
        },
        load_dotenv=False,
    )


@pytest.fixture
def webhook_env(
    db_url: str, tmp_path: Path, jwks: JwksServer, signing_key: SigningKey, catalog: Catalog,
    clock: FakeClock,
) -> Iterator[WebhookEnv]:
    settings = kinde_settings(db_url, tmp_path, jwks.url)
    container = build_container(
        settings, catalog=catalog, clock=clock, pool_size=20,
        key_source=JwksKeySource(jwks.url, timeout=2.0),
    )
    try:
        yield WebhookEnv(container, signing_key)
    finally:
        container.close()


def json_wrapped(token: str) -> str:
    """How older `application/json` deliveries carried the token: a JSON string literal."""
    return json.dumps(token)
