# ruff: noqa: F811 - fixtures of test_who_may_spend are imported and then requested by name
"""Red-team (attack-spend): who may spend the customer's money, through dashboard links."""

from __future__ import annotations

from flask.testing import FlaskClient

from app.bootstrap import Container
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts
from tests.integration.test_who_may_spend import (  # noqa: F401 - fixtures by name
    app,
    buy,
    deliver,
    field,
    kc,
    kinde_mode,
    learn_customer,
    open_link,
    settings,
    web,
)


def test_customer_on_an_admin_made_link_cannot_buy_after_a_failed_payment(
        web: FlaskClient, tokens: Tokens, kc: Container, db_url: str) -> None:
    kinde_mode(kc)
    learn_customer(kc, "kp_alice", "customer_alice")
    deliver(web, tokens, "customer.payment_failed", "customer_alice",
            "2026-11-24T12:00:00.000Z")
    # The customer's own API token is refused, as designed.
    assert web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                    headers=bearer(tokens.user("kp_alice"))).status_code == 402
    before = table_counts(db_url)
    html, csrf = open_link(web, tokens.m2m("credits:admin"), "kp_alice")
    response = buy(web, "kp_alice", csrf, field(html, "idempotency_key"), "starter")
    assert table_counts(db_url) == before, response.status_code
    assert response.status_code in (402, 403), response.status_code


class _KindeKnowsTheCustomer:
    """Kinde's user record names the billing customer (the wallet's profile does not yet)."""

    def get_user(self, user_id: str) -> object:
        return type("User", (), {"customer_id": "customer_alice"})()


def test_sale_after_payment_failed_for_a_customer_the_wallet_learns_from_kinde(
        web: FlaskClient, tokens: Tokens, kc: Container, db_url: str) -> None:
    kinde_mode(kc)
    kc.sales.kinde = _KindeKnowsTheCustomer()  # type: ignore[assignment]
    kc.ledger.grant("kp_alice", 100, "welcome")  # a wallet; its profile has no customer yet
    user = bearer(tokens.user("kp_alice"))
    first = web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"}, headers=user)
    assert first.status_code == 201, first.get_json()  # invoiced to Kinde's customer_alice
    # The card of customer_alice is declined: Kinde says so.
    payload = {"type": "customer.payment_failed", "event_id": "event_declined",
               "source": "api", "timestamp": "2026-11-24T12:00:00.000Z",
               "data": {"customer_id": "customer_alice"}}
    hook = web.post("/webhooks/kinde", data=tokens.sign(payload),
                    headers={"Content-Type": "application/jwt"})
    assert hook.status_code == 200, hook.get_data(as_text=True)
    before = table_counts(db_url)
    again = web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"}, headers=user)
    assert again.status_code == 402, (again.status_code, hook.get_json())
    assert table_counts(db_url) == before
