"""`/metrics` and the API docs on a customer-facing listener (issue 18, finding 9).

`/metrics` (wallet count, total balance, arrears) answers only `Authorization: Bearer
<METRICS_TOKEN>` when that is set, and only loopback peers when it is not; the peer is the
socket's address, never `X-Forwarded-For` or any other header a client can write. The docs
pages load no script at all (no CDN) and send a CSP and frame headers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import build_container
from app.settings import Settings, SettingsError
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

TOKEN = "metrics-secret-0123456789abcdef"
OUTSIDE = {"REMOTE_ADDR": "203.0.113.7"}
SPOOFED = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1",
           "Forwarded": "for=127.0.0.1", "Host": "127.0.0.1"}


@pytest.fixture
def guarded(api_settings: Settings, jwks_server: JwksServer) -> Iterator[FlaskClient]:
    settings = dataclasses.replace(api_settings, metrics_token=TOKEN)
    container = build_container(settings, key_source=JwksKeySource(jwks_server.url))
    yield create_app(container=container).test_client()
    container.close()


def _figures_leak(body: str) -> bool:
    return "kinde_credits_balance_total" in body or "kinde_credits_wallets" in body


@pytest.mark.parametrize("peer", ["203.0.113.7", "10.0.0.5", "::ffff:203.0.113.7", "2001:db8::1"])
def test_without_a_token_setting_only_loopback_peers_are_answered(
    client: FlaskClient, peer: str
) -> None:
    answer = client.get("/metrics", headers=SPOOFED, environ_base={"REMOTE_ADDR": peer})
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "forbidden"
    assert "METRICS_TOKEN" in answer.json["error"]["message"]
    assert not _figures_leak(answer.get_data(as_text=True))


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.8.9.10"])
def test_without_a_token_setting_loopback_peers_are_answered(client: FlaskClient,
                                                              peer: str) -> None:
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": peer})
    assert answer.status_code == 200 and _figures_leak(answer.get_data(as_text=True))


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN.upper()}", "Bearer \u00e9\u00e9\u00e9",
    f"Bearer  {TOKEN} extra",
])
@pytest.mark.parametrize("peer", ["127.0.0.1", "203.0.113.7"])
def test_with_a_token_setting_the_token_is_required_from_everywhere(
    guarded: FlaskClient, authorization: str | None, peer: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = guarded.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert answer.status_code == 401, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not _figures_leak(answer.get_data(as_text=True))


@pytest.mark.parametrize("peer", ["127.0.0.1", "203.0.113.7"])
def test_with_a_token_setting_the_token_is_answered(guarded: FlaskClient, peer: str) -> None:
    for scheme in ("Bearer", "bearer"):
        answer = guarded.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"},
                             environ_base={"REMOTE_ADDR": peer})
        assert answer.status_code == 200 and _figures_leak(answer.get_data(as_text=True))


def test_an_api_access_token_is_not_a_metrics_token(guarded: FlaskClient,
                                                    tokens: Tokens) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    assert guarded.get("/metrics", headers=admin).status_code == 401


@pytest.mark.parametrize("raw", ["short", "has a space in it here", "\u00e9" * 20, "x\ty" * 10])
def test_a_weak_or_odd_metrics_token_setting_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        Settings.from_env({"METRICS_TOKEN": raw})


def test_metrics_token_setting_is_read() -> None:
    assert Settings.from_env({"METRICS_TOKEN": TOKEN}).metrics_token == TOKEN
    assert Settings.from_env({}).metrics_token is None


# -- docs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/docs/swagger"])
def test_docs_load_no_script_and_forbid_framing(client: FlaskClient, path: str) -> None:
    answer = client.get(path, follow_redirects=True, environ_base=OUTSIDE)
    assert answer.status_code == 200, (path, answer.status_code)
    page = answer.get_data(as_text=True)
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page), "a third-party asset"
    assert "cdn" not in page.lower()
    assert "/v1/wallets/{wallet_id}/usage" in page
    csp = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src" not in csp or "script-src 'none'" in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_redirect_carries_the_headers_too(client: FlaskClient) -> None:
    answer = client.get("/docs/swagger")
    assert answer.status_code in (200, 301, 302, 308)
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
