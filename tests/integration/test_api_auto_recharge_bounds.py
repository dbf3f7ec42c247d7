"""`PUT /v1/wallets/{id}/auto-recharge` keeps `threshold_credits` below ten times the bundle's
credits (DESIGN, "Who may spend the customer's money"): a threshold of 10^12 made every debit
buy a pack, up to the daily cap, every day. Refused with 422 and a message that names the
limit; nothing changes, and a threshold just under the limit is accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.settings import Settings
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

STARTER_CREDITS = 5000  # config/credits.toml


@pytest.fixture
def billed_app(api_settings: Settings, jwks_server: JwksServer) -> Iterator[Flask]:
    # M2M credentials make a Kinde billing client, so auto-recharge can be enabled (setting it
    # calls nothing at Kinde; the domain is the test's unreachable loopback issuer).
    settings = dataclasses.replace(api_settings, kinde_m2m_client_id="client",
                                   kinde_m2m_client_secret="secret")
    container: Container = build_container(settings, key_source=JwksKeySource(jwks_server.url))
    yield create_app(container=container)
    container.close()


@pytest.mark.parametrize("threshold", [10 * STARTER_CREDITS, 10 * STARTER_CREDITS + 1, 10**12])
@pytest.mark.parametrize("enabled", [True, False])
def test_threshold_of_ten_packs_or_more_is_refused(
    billed_app: Flask, tokens: Tokens, db_url: str, threshold: int, enabled: bool
) -> None:
    web: FlaskClient = billed_app.test_client()
    admin = bearer(tokens.m2m("credits:admin"))
    web.post("/v1/wallets/kp_a/top-ups", json={"credits": 100, "reason": "seed"}, headers=admin)
    before = table_counts(db_url)
    answer = web.put("/v1/wallets/kp_a/auto-recharge", headers=admin, json={
        "enabled": enabled, "threshold_credits": threshold, "bundle": "starter"})
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "invalid_request"
    message = answer.json["error"]["message"]
    assert "threshold_credits" in message and "50,000" in message, message
    assert table_counts(db_url) == before
    wallet = web.get("/v1/wallets/kp_a", headers=admin).json
    assert wallet["auto_recharge"]["enabled"] is False
    assert wallet["auto_recharge"]["threshold_credits"] is None


def test_threshold_just_under_ten_packs_is_accepted(billed_app: Flask, tokens: Tokens) -> None:
    web = billed_app.test_client()
    admin = bearer(tokens.m2m("credits:admin"))
    answer = web.put("/v1/wallets/kp_a/auto-recharge", headers=admin, json={
        "enabled": True, "threshold_credits": 10 * STARTER_CREDITS - 1, "bundle": "starter"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["auto_recharge"]["threshold_credits"] == 49_999
    # The bound follows the bundle: the growth pack (50,000 credits) allows more.
    growth = web.put("/v1/wallets/kp_a/auto-recharge", headers=admin, json={
        "enabled": True, "threshold_credits": 100_000, "bundle": "growth"})
    assert growth.status_code == 200, growth.get_data(as_text=True)
