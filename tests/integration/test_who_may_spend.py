"""Who may spend the customer's money (issue 18, DESIGN.md "Who may spend the customer's
money"), over HTTP on SQLite and PostgreSQL: pack sales without a Kinde billing customer, what
a dashboard link grants, business-wide reports, unbilled dashboard sales, other members' holds,
link URLs, single-use links and sign-out, the buy form's key, and sales after a failed payment.

Each test reproduced its finding before the fix. Refusals write nothing (`table_counts`).
The browser side (single-use link, sign-out, an org member's page) is in
tests/e2e/test_dashboard_access_browser.py; every caller x every operation is in
test_access_matrix.py.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.services.dashboard import Policy
from app.services.payments import KindeInvoicing
from app.services.recharge import AutoRecharger
from app.settings import Settings
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, count_rows, table_counts

ORIGIN = "http://localhost"


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings


@pytest.fixture
def kc(settings: Settings, jwks_server: JwksServer, clock: FakeClock) -> Iterator[Container]:
    container = build_container(settings, key_source=JwksKeySource(jwks_server.url),
                                pool_size=5, clock=clock)
    yield container
    container.close()


@pytest.fixture
def app(kc: Container) -> Flask:
    return create_app(container=kc)


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    return app.test_client()


def kinde_mode(kc: Container) -> None:
    """Sales invoiced through Kinde, auto-recharge too, and the page lets customers buy."""
    kc.ledger.payments = KindeInvoicing()
    kc.ledger.recharger = AutoRecharger(kc.catalog, KindeInvoicing())
    kc.dashboard.policy = Policy(None, None)


def learn_customer(kc: Container, wallet: str, customer: str) -> None:
    kc.ledger.grant(wallet, 1000, "welcome")
    with kc.store(True) as uow:
        uow.wallets.update_profile(wallet, billing_customer_id=customer)
        uow.commit()


def open_link(web: FlaskClient, token: str, wallet: str, **body: Any) -> tuple[str, str]:
    """(page HTML, its CSRF token) for a fresh link made with `token`."""
    made = web.post(f"/v1/wallets/{wallet}/dashboard-link", json=body or None,
                    headers=bearer(token))
    assert made.status_code == 201, made.get_data(as_text=True)
    parts = urlsplit(made.get_json()["url"])
    page = web.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    return html, field(html, "csrf_token")


def field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, name
    return match.group(1)


def buy(web: FlaskClient, wallet: str, csrf: str, key: str, bundle: str = "growth") -> Any:
    return web.post(f"/dashboard/{wallet}/buy", headers={"Origin": ORIGIN}, data={
        "csrf_token": csrf, "bundle": bundle, "idempotency_key": key})


def turn_on_recharge(web: FlaskClient, wallet: str, csrf: str) -> Any:
    return web.post(f"/dashboard/{wallet}/auto-recharge", headers={"Origin": ORIGIN}, data={
        "csrf_token": csrf, "enabled": "on", "threshold_credits": "1000",
        "bundle": "growth"})


def recharges(db_url: str) -> int:
    return count_rows(db_url, "recharges")


# -- 1. a sale that cannot be invoiced is refused ----------------------------------------------


def test_pack_sale_without_billing_customer_is_409_and_writes_nothing(
    web: FlaskClient, tokens: Tokens, kc: Container, db_url: str
) -> None:
    kinde_mode(kc)
    kc.ledger.grant("kp_alice", 100, "welcome")  # a wallet, but no Kinde billing customer
    before = table_counts(db_url)
    user = bearer(tokens.user("kp_alice"))
    for headers in (bearer(tokens.m2m("credits:write")), user):
        response = web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "growth"},
                            headers=headers)
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["error"]["code"] == "no_billing_customer"
    # The page: the same refusal, said on the page, nothing bought.
    html, csrf = open_link(web, tokens.user("kp_alice"), "kp_alice")
    page = buy(web, "kp_alice", csrf, field(html, "idempotency_key"))
    assert page.status_code == 409
    assert "billing is not set up for this account" in page.get_data(as_text=True)
    # Auto-recharge (set by an admin) buys nothing either when a debit crosses the threshold.
    admin = bearer(tokens.m2m("credits:admin"))
    assert web.put("/v1/wallets/kp_alice/auto-recharge", headers=admin, json={
        "enabled": True, "threshold_credits": 90, "bundle": "starter"}).status_code == 200
    assert web.post("/v1/wallets/kp_alice/usage", headers=admin,
                    json={"feature": "api_call", "quantity": 20}).status_code == 201
    after = table_counts(db_url)
    assert after["entries"] == before["entries"] + 1  # the usage, and no purchase
    assert recharges(db_url) == 0 and after["outbox"] == before["outbox"]
    # With the customer known, the same sale goes through (and is invoiced).
    learn_customer(kc, "kp_alice", "customer_alice")
    assert web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "growth"},
                    headers=user).status_code == 201
    assert recharges(db_url) == 1


# -- 2. a link grants exactly what its maker may do through the API ---------------------------


def test_org_member_without_permissions_cannot_buy_or_recharge_through_a_link(
    web: FlaskClient, tokens: Tokens, kc: Container, db_url: str
) -> None:
    kinde_mode(kc)
    learn_customer(kc, "org_acme", "customer_acme")
    member = tokens.user("kp_mallory", org="org_acme")
    api = bearer(member)
    assert web.post("/v1/wallets/org_acme/top-ups", json={"bundle": "growth"},
                    headers=api).status_code == 403
    assert web.put("/v1/wallets/org_acme/auto-recharge", headers=api, json={
        "enabled": True, "threshold_credits": 10, "bundle": "growth"}).status_code == 403
    html, csrf = open_link(web, member, "org_acme")
    assert 'id="buy-disabled"' in html and "Buy Growth pack</button>" in html
    assert not re.search(r'class="primary">Buy ', html)  # no enabled Buy button
    assert 'id="recharge-disabled"' in html and "<fieldset disabled>" in html
    before = table_counts(db_url)
    assert buy(web, "org_acme", csrf, field(html, "idempotency_key")).status_code == 403
    assert turn_on_recharge(web, "org_acme", csrf).status_code == 403
    assert table_counts(db_url) == before
    assert kc.ledger.get_wallet("org_acme")["auto_recharge"]["enabled"] is False


def test_org_member_with_write_may_buy_and_with_admin_may_set_auto_recharge(
    web: FlaskClient, tokens: Tokens, kc: Container, db_url: str
) -> None:
    kinde_mode(kc)
    learn_customer(kc, "org_acme", "customer_acme")
    writer = tokens.user("kp_wendy", org="org_acme", scopes=("credits:write",))
    html, csrf = open_link(web, writer, "org_acme")
    assert buy(web, "org_acme", csrf, field(html, "idempotency_key")).status_code == 303
    assert turn_on_recharge(web, "org_acme", csrf).status_code == 403
    admin = tokens.user("kp_ada", org="org_acme", scopes=("credits:admin",))
    other = web.application.test_client()
    html, csrf = open_link(other, admin, "org_acme")
    assert turn_on_recharge(other, "org_acme", csrf).status_code == 303
    # A user's own wallet: the user may buy (Kinde invoices them), not set auto-recharge.
    learn_customer(kc, "kp_olive", "customer_olive")
    own = web.application.test_client()
    html, csrf = open_link(own, tokens.user("kp_olive"), "kp_olive")
    assert buy(own, "kp_olive", csrf, field(html, "idempotency_key")).status_code == 303
    assert turn_on_recharge(own, "kp_olive", csrf).status_code == 403
    assert recharges(db_url) == 2


# -- 3. business-wide reports: unconfined admins only -----------------------------------------


@pytest.mark.parametrize("who, status", [
    ("m2m admin", 200), ("m2m admin confined to an org", 403), ("user with admin", 403),
    ("m2m write", 403)])
def test_revenue_report_only_for_unconfined_admins(
    web: FlaskClient, tokens: Tokens, who: str, status: int
) -> None:
    token = {"m2m admin": tokens.m2m("credits:admin"),
             "m2m admin confined to an org": tokens.m2m("credits:admin", org="org_acme"),
             "user with admin": tokens.user("kp_alice", scopes=("credits:admin",)),
             "m2m write": tokens.m2m("credits:write")}[who]
    response = web.get("/v1/reports/revenue", headers=bearer(token))
    assert response.status_code == status, response.get_json()
    if status == 403:
        assert response.get_json()["error"]["code"] == "forbidden"
        assert "currencies" not in response.get_json()


# -- 4. unbilled dashboard sales only on links made with credits:admin ------------------------


class TestUnbilledSales:
    @pytest.fixture
    def settings(self, api_settings: Settings) -> Settings:
        return replace(api_settings, dashboard_unbilled_purchases=True)

    def test_unbilled_sale_only_on_admin_links(self, web: FlaskClient, tokens: Tokens,
                                               kc: Container, db_url: str) -> None:
        kc.ledger.grant("org_acme", 10, "welcome")
        member = tokens.user("kp_mallory", org="org_acme")
        html, csrf = open_link(web, member, "org_acme")
        assert 'id="buy-disabled"' in html
        before = table_counts(db_url)
        for _ in range(3):
            assert buy(web, "org_acme", csrf, field(html, "idempotency_key")).status_code == 403
        assert table_counts(db_url) == before
        admin_web = web.application.test_client()
        html, csrf = open_link(admin_web, tokens.m2m("credits:admin"), "org_acme")
        assert 'id="buy-disabled"' not in html
        assert buy(admin_web, "org_acme", csrf, field(html, "idempotency_key"),
                   "starter").status_code == 303


# -- 5. a user token settles only holds it placed ---------------------------------------------


def test_member_cannot_settle_another_members_hold(
    web: FlaskClient, tokens: Tokens, kc: Container, db_url: str
) -> None:
    kc.ledger.grant("org_acme", 1000, "welcome")
    alice = bearer(tokens.user("kp_alice", org="org_acme", scopes=("credits:write",)))
    bob = bearer(tokens.user("kp_bob", org="org_acme", scopes=("credits:write",)))
    placed = web.post("/v1/wallets/org_acme/holds", json={"credits": 300}, headers=alice)
    assert placed.status_code == 201
    hold = placed.get_json()["hold_id"]
    assert hold in str(web.get("/v1/wallets/org_acme", headers=bob).get_json())  # visible
    before = table_counts(db_url)
    for action in ("capture", "release"):
        response = web.post(f"/v1/holds/{hold}/{action}", headers=bob)
        assert response.status_code == 404, response.get_json()
    assert table_counts(db_url) == before
    # The backend (M2M) settles any hold in reach; the member who placed it settles it too.
    assert web.post(f"/v1/holds/{hold}/capture", headers=alice,
                    json={"credits": 300}).status_code == 200
    other = web.post("/v1/wallets/org_acme/holds", json={"credits": 5}, headers=alice)
    assert web.post(f"/v1/holds/{other.get_json()['hold_id']}/release",
                    headers=bearer(tokens.m2m("credits:write"))).status_code == 200


# -- 6. link URLs never come from request headers ---------------------------------------------


def test_link_url_ignores_host_and_forwarded_headers(web: FlaskClient, tokens: Tokens) -> None:
    response = web.post("/v1/wallets/kp_alice/dashboard-link", headers=bearer(
        tokens.user("kp_alice"), Host="evil.example", X_Forwarded_Proto="https",
        X_Forwarded_Host="evil.example"))
    assert response.status_code == 201
    url = response.get_json()["url"]
    assert url.startswith("/dashboard/kp_alice?token=") and "evil" not in url


class TestConfiguredBaseUrl:
    @pytest.fixture
    def settings(self, api_settings: Settings) -> Settings:
        return replace(api_settings, dashboard_base_url="https://credits.example.com/")

    def test_link_url_from_dashboard_base_url(self, web: FlaskClient, tokens: Tokens) -> None:
        response = web.post("/v1/wallets/kp_alice/dashboard-link", headers=bearer(
            tokens.user("kp_alice"), Host="evil.example", X_Forwarded_Host="evil.example"))
        url = response.get_json()["url"]
        assert url.startswith("https://credits.example.com/dashboard/kp_alice?token=")


# -- 7. one session per link, at most 60 minutes, sign out ------------------------------------


def test_link_opens_one_session_only(web: FlaskClient, tokens: Tokens, kc: Container) -> None:
    kc.ledger.grant("kp_alice", 500, "welcome")
    made = web.post("/v1/wallets/kp_alice/dashboard-link",
                    headers=bearer(tokens.user("kp_alice"))).get_json()["url"]
    assert web.get(made).status_code == 200
    again = web.application.test_client().get(made)
    assert again.status_code == 403
    body = again.get_data(as_text=True)
    assert "This link has already been used" in body and "500" not in body
    assert "Set-Cookie" not in again.headers
    # The same browser too: a link is spent once opened.
    assert web.get(made).status_code == 403


def test_racing_opens_of_one_link_give_one_session(
    app: Flask, web: FlaskClient, tokens: Tokens, kc: Container
) -> None:
    kc.ledger.grant("kp_alice", 500, "welcome")
    made = web.post("/v1/wallets/kp_alice/dashboard-link",
                    headers=bearer(tokens.user("kp_alice"))).get_json()["url"]
    statuses: list[int] = []
    start = threading.Barrier(6)

    def open_it() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.get(made).status_code)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 403, 403, 403, 403, 403]


def test_session_ends_60_minutes_after_the_link_was_made(
    web: FlaskClient, tokens: Tokens, kc: Container, clock: FakeClock
) -> None:
    kc.ledger.grant("kp_alice", 500, "welcome")
    made = web.post("/v1/wallets/kp_alice/dashboard-link", json={"ttl_seconds": 3600},
                    headers=bearer(tokens.user("kp_alice"))).get_json()["url"]
    clock.advance(minutes=50)
    assert web.get(made).status_code == 200  # opened late in the link's life
    clock.advance(minutes=9, seconds=59)
    assert web.get("/dashboard/kp_alice").status_code == 200
    clock.advance(seconds=2)  # 60 minutes after the link was made, not after the open
    assert web.get("/dashboard/kp_alice").status_code == 403


def test_sign_out_ends_the_session_for_good(
    web: FlaskClient, tokens: Tokens, kc: Container
) -> None:
    kc.ledger.grant("kp_alice", 500, "welcome")
    html, csrf = open_link(web, tokens.user("kp_alice"), "kp_alice")
    assert "Sign out</button>" in html
    cookie = web.get_cookie("kc_dashboard", path="/dashboard/kp_alice")
    assert cookie is not None
    # Cross-site sign-out is refused like every page POST.
    assert web.post("/dashboard/kp_alice/sign-out", data={"csrf_token": csrf},
                    headers={"Origin": "https://evil.example"}).status_code == 403
    out = web.post("/dashboard/kp_alice/sign-out", data={"csrf_token": csrf},
                   headers={"Origin": ORIGIN})
    assert out.status_code == 200 and "You are signed out" in out.get_data(as_text=True)
    assert web.get_cookie("kc_dashboard", path="/dashboard/kp_alice") is None
    # A copy of the old cookie (another tab, a stolen value) grants nothing any more.
    replay = web.application.test_client()
    replay.set_cookie("kc_dashboard", cookie.value, path="/dashboard/kp_alice")
    response = replay.get("/dashboard/kp_alice")
    assert response.status_code == 403 and "500" not in response.get_data(as_text=True)


# -- 8. the buy form's key: exactly dashboard:<32 hex> ----------------------------------------


class TestBuyKey:
    @pytest.fixture
    def settings(self, api_settings: Settings) -> Settings:
        return replace(api_settings, dashboard_unbilled_purchases=True)

    @pytest.mark.parametrize("key", [
        "dashboard:" + "a" * 32 + "\n", "dashboard:" + "a" * 32 + "\r", "\ndashboard:" + "a" * 32,
        "dashboard:" + "a" * 31 + "\x00", "dashboard:" + "A" * 32, "dashboard:" + "a" * 33])
    def test_buy_key_with_control_or_extra_characters_is_refused(
        self, web: FlaskClient, tokens: Tokens, kc: Container, db_url: str, key: str
    ) -> None:
        html, csrf = open_link(web, tokens.m2m("credits:admin"), "kp_alice")
        before = table_counts(db_url)
        response = buy(web, "kp_alice", csrf, key, "starter")
        assert response.status_code == 422
        assert "reload the page" in response.get_data(as_text=True)
        assert table_counts(db_url) == before


# -- Also: sales after a failed payment --------------------------------------------------------


def deliver(web: FlaskClient, tokens: Tokens, event_type: str, customer: str,
            timestamp: str) -> None:
    payload = {"type": event_type, "event_id": f"event_{uuid.uuid4().hex}", "source": "api",
               "timestamp": timestamp, "data": {"customer_id": customer}}
    token = tokens.sign(payload)
    response = web.post("/webhooks/kinde", data=token,
                        headers={"Content-Type": "application/jwt"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "processed", response.get_json()


def test_payment_failed_pauses_non_admin_sales_until_payment_succeeded(
    web: FlaskClient, tokens: Tokens, kc: Container, db_url: str
) -> None:
    kinde_mode(kc)
    learn_customer(kc, "kp_alice", "customer_alice")
    user = bearer(tokens.user("kp_alice"))
    admin = bearer(tokens.m2m("credits:admin"))
    writer = bearer(tokens.m2m("credits:write"))
    assert web.put("/v1/wallets/kp_alice/auto-recharge", headers=admin, json={
        "enabled": True, "threshold_credits": 900, "bundle": "starter"}).status_code == 200
    deliver(web, tokens, "customer.payment_failed", "customer_alice",
            "2026-11-24T12:00:00.000Z")
    before = table_counts(db_url)
    for headers in (user, writer):
        response = web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                            headers=headers)
        assert response.status_code == 402, response.get_json()
        assert response.get_json()["error"]["code"] == "payment_overdue"
    assert table_counts(db_url) == before
    # The page says why, in plain words, and offers no Buy.
    html, csrf = open_link(web, tokens.user("kp_alice"), "kp_alice")
    assert "A payment for this account failed" in html
    assert buy(web, "kp_alice", csrf, field(html, "idempotency_key")).status_code == 403
    # Auto-recharge is suspended: a debit below the threshold buys nothing.
    assert web.post("/v1/wallets/kp_alice/usage", headers=writer,
                    json={"feature": "api_call", "quantity": 200}).status_code == 201
    assert recharges(db_url) == 0
    # An older success arriving late changes nothing; an admin may still sell.
    deliver(web, tokens, "customer.payment_succeeded", "customer_alice",
            "2026-11-24T11:00:00.000Z")
    assert web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                    headers=user).status_code == 402
    assert web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                    headers=admin).status_code == 201
    deliver(web, tokens, "customer.payment_succeeded", "customer_alice",
            "2026-11-24T13:00:00.000Z")
    assert web.post("/v1/wallets/kp_alice/top-ups", json={"bundle": "starter"},
                    headers=user).status_code == 201
    assert recharges(db_url) == 2
