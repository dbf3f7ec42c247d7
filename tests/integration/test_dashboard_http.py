"""The customer dashboard over the Flask client, on SQLite and PostgreSQL: links, the link's
session, CSRF and Origin checks, customers setting their own alerts, and who may buy.

The real browser (JavaScript, accessibility, a purchase invoiced through fake Kinde) is in
tests/e2e/test_dashboard_browser.py.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.settings import Settings
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

ORIGIN = "http://localhost"


@pytest.fixture
def dash_settings(api_settings: Settings) -> Settings:
    return api_settings


@pytest.fixture
def dash(dash_settings: Settings, jwks_server: JwksServer, clock: FakeClock
         ) -> Iterator[Container]:
    container = build_container(dash_settings, key_source=JwksKeySource(jwks_server.url),
                                pool_size=5, clock=clock)
    yield container
    container.close()


@pytest.fixture
def app(dash: Container) -> Flask:
    return create_app(container=dash)


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    return app.test_client()


def link_for(web: FlaskClient, token: str, wallet: str, **body: Any) -> dict[str, Any]:
    response = web.post(f"/v1/wallets/{wallet}/dashboard-link", json=body or None,
                        headers=bearer(token))
    assert response.status_code == 201, response.get_data(as_text=True)
    return dict(response.get_json())


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def open_page(web: FlaskClient, tokens: Tokens, wallet: str = "kp_alice") -> str:
    link = link_for(web, tokens.user(wallet), wallet)
    page = web.get(path_of(link["url"]))
    assert page.status_code == 200, page.get_data(as_text=True)
    return page.get_data(as_text=True)


def field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, name
    return match.group(1)


# -- links ------------------------------------------------------------------------------------


def test_link_for_own_user_and_m2m_read(web: FlaskClient, tokens: Tokens,
                                        dash: Container, clock: FakeClock) -> None:
    dash.ledger.grant("kp_alice", 12_345, "welcome")
    link = link_for(web, tokens.user("kp_alice"), "kp_alice")
    # DASHBOARD_BASE_URL unset: a relative path (request headers never choose the host).
    assert link["url"].startswith("/dashboard/kp_alice?token=")
    assert link["expires_at"] == (clock.now + timedelta(seconds=900)).isoformat().replace(
        "+00:00", "Z").replace(".000000", "")
    html = web.get(path_of(link["url"])).get_data(as_text=True)
    assert '<span id="balance">12,345</span> credits' in html
    dash.ledger.record_usage("kp_alice", "api_call", 12_344)
    assert '<span id="balance">1</span> credit<' in web.get("/dashboard/kp_alice").get_data(
        as_text=True)
    m2m = link_for(web, tokens.m2m("credits:read"), "kp_alice", ttl_seconds=3600)
    assert m2m["expires_at"].startswith((clock.now + timedelta(hours=1)).date().isoformat())
    # An org-scoped M2M token reaches its org only; a user reaches their own wallet only.
    assert web.post("/v1/wallets/kp_alice/dashboard-link",
                    headers=bearer(tokens.m2m("credits:read", org="org_a"))).status_code == 404
    assert web.post("/v1/wallets/kp_alice/dashboard-link",
                    headers=bearer(tokens.user("kp_bob"))).status_code == 404
    assert web.post("/v1/wallets/kp_alice/dashboard-link").status_code == 401


@pytest.mark.parametrize("ttl", [0, 3601, "60", 1.5, True])
def test_bad_ttl_is_refused(web: FlaskClient, tokens: Tokens, ttl: Any) -> None:
    response = web.post("/v1/wallets/kp_alice/dashboard-link", json={"ttl_seconds": ttl},
                        headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_tampered_expired_and_repointed_links_show_nothing(
    web: FlaskClient, tokens: Tokens, dash: Container, clock: FakeClock
) -> None:
    dash.ledger.grant("kp_alice", 777, "welcome")
    dash.ledger.grant("kp_bob", 888, "welcome")
    link = path_of(link_for(web, tokens.user("kp_alice"), "kp_alice", ttl_seconds=60)["url"])
    token = link.split("token=")[1]
    payload, signature = token.rsplit(".", 1)
    tampered = [
        link[:-2] + ("AA" if not link.endswith("AA") else "BB"),       # signature changed
        link.replace(payload, payload[:-2] + "xx"),                     # payload changed
        "/dashboard/kp_alice?token=" + "x" * 40,                        # made up
        "/dashboard/kp_alice?token=",                                   # empty
        link.replace("/dashboard/kp_alice", "/dashboard/kp_bob"),       # re-pointed
    ]
    for url in tampered:
        fresh = web.application.test_client()
        response = fresh.get(url)
        assert response.status_code == 403, url
        body = response.get_data(as_text=True)
        assert "777" not in body and "888" not in body and "kp_" not in body
        assert "Set-Cookie" not in response.headers
    clock.advance(seconds=61)
    expired = web.application.test_client().get(link)
    assert expired.status_code == 403


def test_session_is_bound_to_its_wallet_and_expires(
    web: FlaskClient, tokens: Tokens, dash: Container, clock: FakeClock
) -> None:
    dash.ledger.grant("kp_alice", 100, "welcome")
    dash.ledger.grant("kp_bob", 200, "welcome")
    open_page(web, tokens, "kp_alice")
    cookie = web.get_cookie("kc_dashboard", path="/dashboard/kp_alice")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"
    assert web.get("/dashboard/kp_alice").status_code == 200  # the cookie alone
    # The same session cookie sent to another wallet's page grants nothing.
    other = web.application.test_client()
    other.set_cookie("kc_dashboard", cookie.value, path="/dashboard/kp_bob")
    assert other.get("/dashboard/kp_bob").status_code == 403
    assert web.application.test_client().get("/dashboard/kp_alice").status_code == 403
    clock.advance(hours=1, seconds=1)
    assert web.get("/dashboard/kp_alice").status_code == 403


# -- page actions: CSRF and Origin ------------------------------------------------------------


def test_actions_need_csrf_token_and_same_origin(
    web: FlaskClient, tokens: Tokens, dash: Container, db_url: str
) -> None:
    dash.ledger.grant("kp_alice", 1000, "welcome")
    html = open_page(web, tokens)
    csrf = field(html, "csrf_token")
    form = {"csrf_token": csrf, "thresholds_percent": "40", "thresholds_credits": "",
            "notify_at_zero": "on"}
    before = table_counts(db_url)
    refused: list[tuple[dict[str, str], dict[str, str]]] = [
        ({**form, "csrf_token": ""}, {"Origin": ORIGIN}),
        ({**form, "csrf_token": csrf[:-3] + "abc"}, {"Origin": ORIGIN}),
        (form, {"Origin": "https://evil.example"}),
        (form, {}),                                              # neither Origin nor Referer
        (form, {"Referer": "https://evil.example/page"}),
        (form, {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}),
    ]
    for data, headers in refused:
        response = web.post("/dashboard/kp_alice/alerts", data=data, headers=headers)
        assert response.status_code == 403, (data, headers)
    # A CSRF token of another session (another browser) is refused too.
    other = web.application.test_client()
    other_csrf = field(open_page(other, tokens), "csrf_token")
    assert web.post("/dashboard/kp_alice/alerts", data={**form, "csrf_token": other_csrf},
                    headers={"Origin": ORIGIN}).status_code == 403
    assert table_counts(db_url) == before
    ok = web.post("/dashboard/kp_alice/alerts", data=form,
                  headers={"Referer": f"{ORIGIN}/dashboard/kp_alice"})
    assert ok.status_code == 303 and ok.headers["Location"].endswith("done=alerts#alerts")
    alerts = dash.ledger.get_wallet("kp_alice")["alerts"]
    assert alerts["thresholds_percent"] == [40] and alerts["notify_at_zero"] is True


def test_bad_alert_form_is_explained_and_changes_nothing(
    web: FlaskClient, tokens: Tokens, dash: Container
) -> None:
    dash.ledger.grant("kp_alice", 1000, "welcome")
    csrf = field(open_page(web, tokens), "csrf_token")
    for percent in ("40, abc", "0", "150", "1" * 20):
        response = web.post("/dashboard/kp_alice/alerts", headers={"Origin": ORIGIN}, data={
            "csrf_token": csrf, "thresholds_percent": percent, "thresholds_credits": ""})
        assert response.status_code == 422
        assert 'role="alert"' in response.get_data(as_text=True)
    assert dash.ledger.get_wallet("kp_alice")["alerts"]["custom"] is False


def test_history_pages_and_csv(web: FlaskClient, tokens: Tokens, dash: Container,
                               clock: FakeClock) -> None:
    dash.ledger.grant("kp_alice", 10_000, "welcome")
    for _ in range(25):
        dash.ledger.record_usage("kp_alice", "report_generation", 1)
        clock.advance(hours=1)
    html = open_page(web, tokens)
    assert html.count("data-entry=") == 20
    assert "-50 credits for Report Generation (1 report) on Nov 25" in html
    older = re.search(r'id="older" href="([^"]+)"', html)
    assert older
    page2 = web.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert page2.count("data-entry=") == 6  # 5 more usages and the grant
    assert "+10,000 credits: welcome on Nov 24" in page2
    response = web.get("/dashboard/kp_alice/history.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    api = dash.ledger.ledger_page("kp_alice", limit=200)["entries"]
    assert [int(r["id"]) for r in rows] == [e["id"] for e in api]
    assert [int(r["credits"]) for r in rows] == [e["amount"] for e in api]
    assert [int(r["balance_after"]) for r in rows] == [e["balance_after"] for e in api]
    # Text a spreadsheet would evaluate ("-50 ...", "+10,000 ...") is quoted.
    assert rows[0]["description"] == "'-50 credits for Report Generation (1 report)"
    assert web.application.test_client().get(
        "/dashboard/kp_alice/history.csv").status_code == 403


def test_chart_counts_daily_use_by_feature(web: FlaskClient, tokens: Tokens, dash: Container,
                                           clock: FakeClock) -> None:
    dash.ledger.grant("kp_alice", 10_000, "welcome")
    dash.ledger.record_usage("kp_alice", "report_generation", 2)   # Nov 24: 100
    dash.ledger.record_usage("kp_alice", "api_call", 7)            # Nov 24: 7
    clock.advance(days=1)
    dash.ledger.record_usage("kp_alice", "file_conversion", 3)     # Nov 25: 6
    # Usage is charted on the day it happened, when the product says so.
    dash.ledger.record_usage("kp_alice", "api_call", 4, occurred_at=clock.now - timedelta(days=3))
    hold = dash.ledger.place_hold("kp_alice", feature_key="report_generation", quantity=1)
    dash.ledger.capture_hold(hold.body["hold_id"], 30)             # Nov 25: 30 reports
    clock.advance(days=40)
    dash.ledger.record_usage("kp_alice", "api_call", 1)            # Jan 3: 1
    clock.now -= timedelta(days=40)  # back to Nov 25: the chart covers Oct 27 .. Nov 25
    html = open_page(web, tokens)
    rows = dict(re.findall(r'<tr data-day="([0-9-]+)">(.*?)</tr>', html))
    assert set(rows) == {"2026-11-22", "2026-11-24", "2026-11-25"}
    assert re.findall(r'class="total">([0-9,]+)<', rows["2026-11-22"]) == ["4"]
    assert re.findall(r'class="total">([0-9,]+)<', rows["2026-11-24"]) == ["107"]
    assert re.findall(r'class="total">([0-9,]+)<', rows["2026-11-25"]) == ["36"]
    assert 'data-feature="report_generation">30<' in rows["2026-11-25"]
    assert "At your pace of the last 7 days, about" in html


# -- customers set their own alerts through the API ------------------------------------------


def test_user_sets_own_alerts_without_admin(web: FlaskClient, tokens: Tokens,
                                            dash: Container) -> None:
    dash.ledger.grant("kp_alice", 1000, "welcome")
    body = {"thresholds_percent": [30], "thresholds_credits": [100], "notify_at_zero": False}
    own = web.put("/v1/wallets/kp_alice/alerts", json=body,
                  headers=bearer(tokens.user("kp_alice")))
    assert own.status_code == 200, own.get_data(as_text=True)
    assert own.get_json()["alerts"] == body
    # Someone else's wallet: 404, as for reads.
    assert web.put("/v1/wallets/kp_alice/alerts", json=body,
                   headers=bearer(tokens.user("kp_bob"))).status_code == 404
    # Where alert e-mails go stays an admin setting.
    email = web.put("/v1/wallets/kp_alice/alerts", json={**body, "notify_email": "x@evil.io"},
                    headers=bearer(tokens.user("kp_alice")))
    assert email.status_code == 403
    # Machines still need credits:admin.
    assert web.put("/v1/wallets/kp_alice/alerts", json=body,
                   headers=bearer(tokens.m2m("credits:write"))).status_code == 403
    assert web.put("/v1/wallets/kp_alice/alerts", json=body,
                   headers=bearer(tokens.m2m("credits:admin"))).status_code == 200


# -- who may buy on the page -----------------------------------------------------------------


def test_buying_is_disabled_where_sales_are_not_invoiced(
    web: FlaskClient, tokens: Tokens, dash: Container, db_url: str
) -> None:
    """SALES_PAID_ELSEWHERE (and local mode): a sale would not be invoiced, so the page's buy
    buttons are disabled with the reason, and a forged POST buys nothing."""
    dash.ledger.grant("kp_alice", 1000, "welcome")
    html = open_page(web, tokens)
    assert 'id="buy-disabled"' in html
    assert re.search(r'<button type="submit" class="primary" disabled '
                     r'aria-describedby="buy-disabled">Buy Starter pack</button>', html)
    before = table_counts(db_url)
    response = web.post("/dashboard/kp_alice/buy", headers={"Origin": ORIGIN}, data={
        "csrf_token": field(html, "csrf_token"), "bundle": "starter",
        "idempotency_key": field(html, "idempotency_key")})
    assert response.status_code == 403
    # No Kinde billing: auto-recharge could not charge, so it is shown but not editable.
    assert 'id="recharge-disabled"' in html and "<fieldset disabled>" in html
    recharge = web.post("/dashboard/kp_alice/auto-recharge", headers={"Origin": ORIGIN}, data={
        "csrf_token": field(html, "csrf_token"), "enabled": "on", "threshold_credits": "100",
        "bundle": "starter"})
    assert recharge.status_code == 403
    assert table_counts(db_url) == before


class TestUnbilledPurchasesAllowed:
    @pytest.fixture
    def dash_settings(self, api_settings: Settings) -> Settings:
        return replace(api_settings, dashboard_unbilled_purchases=True)

    def test_buy_once_per_render_key(self, web: FlaskClient, tokens: Tokens,
                                     dash: Container) -> None:
        # An unbilled sale is an admin's (DESIGN): only a link made with credits:admin buys.
        link = link_for(web, tokens.m2m("credits:admin"), "kp_alice")
        html = web.get(path_of(link["url"])).get_data(as_text=True)
        assert 'id="buy-disabled"' not in html
        form = {"csrf_token": field(html, "csrf_token"), "bundle": "starter",
                "idempotency_key": field(html, "idempotency_key")}
        for _ in range(3):  # a triple click sends the same key: one purchase
            response = web.post("/dashboard/kp_alice/buy", data=form,
                                headers={"Origin": ORIGIN})
            assert response.status_code == 303
            assert response.headers["Location"].endswith("done=bought:starter#buy")
        assert dash.ledger.get_wallet("kp_alice")["balance"] == 5000
        thanks = web.get("/dashboard/kp_alice?done=bought:starter").get_data(as_text=True)
        assert "Starter pack bought, 5,000 credits added" in thanks
        bad = web.post("/dashboard/kp_alice/buy", headers={"Origin": ORIGIN},
                       data={**form, "idempotency_key": "mine"})
        assert bad.status_code == 422
        assert dash.ledger.get_wallet("kp_alice")["balance"] == 5000

    # Unbilled sales are offered only on links made with credits:admin (the write scope buys
    # only sales that Kinde invoices; this used to let credits:write buy here too).
    @pytest.mark.parametrize("scope, can_buy", [
        ("credits:read", False), ("credits:write", False), ("credits:admin", True)])
    def test_a_link_grants_no_more_than_its_maker_may_do(
        self, web: FlaskClient, tokens: Tokens, dash: Container, db_url: str,
        scope: str, can_buy: bool,
    ) -> None:
        """A read-only machine can hand out a page to look at, never one that buys packs or
        changes auto-recharge (the API needs write and admin for those)."""
        link = link_for(web, tokens.m2m(scope), "kp_alice")
        html = web.get(path_of(link["url"])).get_data(as_text=True)
        assert ('id="buy-disabled"' in html) is not can_buy
        before = table_counts(db_url)
        response = web.post("/dashboard/kp_alice/buy", headers={"Origin": ORIGIN}, data={
            "csrf_token": field(html, "csrf_token"), "bundle": "starter",
            "idempotency_key": field(html, "idempotency_key")})
        assert response.status_code == (303 if can_buy else 403)
        if not can_buy:
            assert table_counts(db_url) == before
            recharge = web.post("/dashboard/kp_alice/auto-recharge", headers={"Origin": ORIGIN},
                                data={"csrf_token": field(html, "csrf_token"), "enabled": "on",
                                      "threshold_credits": "100", "bundle": "starter"})
            assert recharge.status_code == 403


def test_adjustment_reasons_show_in_the_history_and_its_csv(
        web: FlaskClient, tokens: Tokens, dash: Container) -> None:
    dash.ledger.grant("kp_alice", 1000, "welcome")
    dash.ledger.adjust("kp_alice", -40, "double-counted import, ticket 9")
    html = open_page(web, tokens)
    assert "-40 credits: adjustment (double-counted import, ticket 9)" in html
    rows = list(csv.DictReader(io.StringIO(
        web.get("/dashboard/kp_alice/history.csv").get_data(as_text=True))))
    assert rows[0]["kind"] == "adjustment"
    assert rows[0]["description"] == "'-40 credits: adjustment (double-counted import, ticket 9)"
