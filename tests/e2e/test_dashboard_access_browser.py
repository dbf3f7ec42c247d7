# ruff: noqa: F811 - the shared module-scoped fixtures are parameters of every test
"""Who may do what on the dashboard, in Debian's headless Chromium against the real server in
Kinde mode (issue 18): a link opens one session only, "Sign out" ends it, and an org member
whose token carries no permission sees no enabled Buy and changes nothing by posting the
forms directly. The server, fake Kinde and browser fixtures are those of
test_dashboard_browser.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.e2e.test_dashboard_browser import (  # noqa: F401 - fixtures
    WALLET,
    _link,
    browser,
    kinde,
    ktokens,
    server,
    server_env,
)
from tests.fakes.fake_kinde import FakeKinde
from tests.http_fixtures import LiveServer, Tokens, bearer

pytestmark = pytest.mark.slow

ORG = "org_e2e_team"


def _wallet(server: LiveServer, tokens: Tokens, wallet: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/v1/wallets/{wallet}",
                            headers=bearer(tokens.m2m("credits:admin")))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _grant(server: LiveServer, tokens: Tokens, wallet: str) -> None:
    response = requests.post(f"{server.url}/v1/wallets/{wallet}/top-ups",
                             headers=bearer(tokens.m2m("credits:admin")),
                             json={"credits": 1000, "reason": "welcome"})
    assert response.status_code == 201, response.text


def test_a_link_opens_one_session_and_sign_out_ends_it(
    server: LiveServer, browser: Any, ktokens: Tokens
) -> None:
    _grant(server, ktokens, WALLET)
    link = _link(server, ktokens.user(WALLET))
    first = browser.new_context()
    page = first.new_page()
    assert page.goto(link).status == 200
    assert page.locator("#balance").count() == 1

    # The same link in another browser (a forwarded e-mail, a shoulder-surfed URL): refused,
    # with a page that says why, and no session for it.
    second = browser.new_context()
    other = second.new_page()
    response = other.goto(link)
    assert response is not None and response.status == 403
    assert other.locator("h1").inner_text() == "This link has already been used"
    assert other.locator("#balance").count() == 0
    assert not [c for c in second.cookies() if c["name"] == "kc_dashboard"]
    second.close()

    # Sign out: the session ends, the cookie goes, the page cannot be reached again.
    cookie = next(c for c in first.cookies() if c["name"] == "kc_dashboard")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "You are signed out"
    assert not [c for c in first.cookies() if c["name"] == "kc_dashboard"]
    again = page.goto(f"{server.url}/dashboard/{WALLET}")
    assert again is not None and again.status == 403
    # A copy of the signed-out cookie, put back by hand, grants nothing either.
    first.add_cookies([cookie])
    again = page.goto(f"{server.url}/dashboard/{WALLET}")
    assert again is not None and again.status == 403
    assert page.locator("#balance").count() == 0
    first.close()


def test_org_member_without_permissions_sees_no_buy_and_posts_change_nothing(
    server: LiveServer, browser: Any, ktokens: Tokens, kinde: FakeKinde
) -> None:
    kinde.add_customer("customer_e2e_team", org_code=ORG)
    _grant(server, ktokens, ORG)
    before = _wallet(server, ktokens, ORG)
    member = ktokens.user("kp_e2e_member", org=ORG)
    context = browser.new_context()
    page = context.new_page()
    assert page.goto(_link(server, member, ORG)).status == 200
    buttons = page.get_by_role("button", name="Buy ", exact=False)
    assert buttons.count() >= 2
    assert all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
    assert "permission to buy" in page.locator("#buy-disabled").inner_text()
    assert page.get_by_label("Turn on auto-recharge").is_disabled()

    # Posting the forms by hand from the page (enabled or not, the server decides).
    csrf = page.locator('[name="csrf_token"]').first.get_attribute("value")
    key = page.locator('[name="idempotency_key"]').first.get_attribute("value")
    statuses = page.evaluate(
        """async ([csrf, key]) => {
            const post = async (path, fields) => {
                const body = new FormData();
                for (const [k, v] of Object.entries(fields)) body.append(k, v);
                const answer = await fetch(location.pathname + path,
                                           {method: "POST", body, redirect: "manual"});
                return answer.type === "opaqueredirect" ? 303 : answer.status;
            };
            return [
                await post("/buy", {csrf_token: csrf, bundle: "growth", idempotency_key: key}),
                await post("/auto-recharge", {csrf_token: csrf, enabled: "on",
                                              threshold_credits: "1000",
                                              bundle: "growth"}),
            ];
        }""",
        [csrf, key],
    )
    assert statuses == [403, 403]
    after = _wallet(server, ktokens, ORG)
    assert after["balance"] == before["balance"] == 1000
    assert after["auto_recharge"] == before["auto_recharge"]
    assert after["auto_recharge"]["enabled"] is False
    context.close()
