"""Access tokens valid for longer than `TOKEN_MAX_LIFETIME_SECONDS` (default a day, Kinde's
default) are refused with 401, whatever their signature: `exp` 10**40 or 1e300 used to be
accepted with the real key, so a leaked token would have worked for ever. Time claims must be
JSON integers. Through the real HTTP stack and the verifier the composition root builds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import build_container
from app.settings import Settings, SettingsError
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

# Offsets from now (ints), or fixed values; ids stay fixed for pytest-xdist.
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("exp 10**40", {"exp": 10**40}),
    ("exp 1e300", {"exp": 1e300}),
    ("exp 10**40 without iat", {"exp": 10**40, "iat": None}),
    ("25 hours", {"exp": "+90000"}),
    ("iat two days ago", {"iat": "-172800", "exp": "+3600"}),
    ("exp as a bool", {"exp": True}),
    ("exp with a fraction", {"exp": "+600.5"}),
    ("iat with a fraction", {"iat": "+0.5"}),
    ("nbf as a bool", {"nbf": True}),
]


def _resolve(values: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str):
            number = float(value) if "." in value else int(value)
            value = now + number
        out[name] = value
    return out


@pytest.mark.parametrize("claims", [pytest.param(c, id=name) for name, c in REFUSED])
def test_long_lived_or_odd_time_claims_are_refused(client: FlaskClient, tokens: Tokens,
                                                   claims: dict[str, Any]) -> None:
    token = tokens.sign(tokens.claims("kp_alice", **_resolve(claims)))
    answer = client.get("/v1/wallets/kp_alice", headers=bearer(token))
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_day_long_token_still_works(client: FlaskClient, tokens: Tokens) -> None:
    token = tokens.sign(tokens.claims("kp_alice", ttl=86400))
    assert client.get("/v1/wallets/kp_alice", headers=bearer(token)).status_code == 200


@pytest.fixture
def week_client(api_settings: Settings, jwks_server: JwksServer) -> Iterator[FlaskClient]:
    settings = dataclasses.replace(api_settings, token_max_lifetime_seconds=8 * 86400)
    container = build_container(settings, key_source=JwksKeySource(jwks_server.url))
    yield create_app(container=container).test_client()
    container.close()


def test_the_maximum_is_a_setting(week_client: FlaskClient, tokens: Tokens) -> None:
    week = tokens.sign(tokens.claims("kp_alice", ttl=7 * 86400))
    assert week_client.get("/v1/wallets/kp_alice", headers=bearer(week)).status_code == 200
    nine = tokens.sign(tokens.claims("kp_alice", ttl=9 * 86400))
    assert week_client.get("/v1/wallets/kp_alice", headers=bearer(nine)).status_code == 401


@pytest.mark.parametrize(("raw", "expected"), [(None, 86400), ("3600", 3600)])
def test_setting_is_read_from_the_environment(raw: str | None, expected: int) -> None:
    env = {} if raw is None else {"TOKEN_MAX_LIFETIME_SECONDS": raw}
    assert Settings.from_env(env).token_max_lifetime_seconds == expected


@pytest.mark.parametrize("raw", ["0", "59", "-1", "1e9", "day", str(10**40)])
def test_bad_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="TOKEN_MAX_LIFETIME_SECONDS"):
        Settings.from_env({"TOKEN_MAX_LIFETIME_SECONDS": raw})
