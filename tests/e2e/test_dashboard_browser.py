"""The customer dashboard in a real headless Chromium (Debian's `chromium`, driven by
Playwright), against the real server (`kinde-credits serve`) in Kinde mode with fake Kinde, so
a purchase is really invoiced: the worker reports it to (fake) Kinde's metering.

One server and one browser for the module. Without /usr/bin/chromium these tests skip, except
under CI (CI=true), where they fail: `.ci/run` installs it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.fake_kinde import FakeKinde
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import AUDIENCE, LiveServer, Tokens, bearer

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WALLET = "kp_e2e_dash"
APP_FEATURE_CODES = ["file_conversions", "api_calls", "reports"]
PACK_CODES = ["credit_pack_starter", "credit_pack_growth"]


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"headless Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def kinde() -> Iterator[FakeKinde]:
    fake = FakeKinde().start()
    now = datetime.now(UTC)
    fake.add_customer("customer_dash", user_id=WALLET)
    fake.add_agreement("customer_dash", "agreement_dash", "pro", APP_FEATURE_CODES + PACK_CODES,
                       now - timedelta(days=10), now + timedelta(days=20))
    yield fake
    fake.stop()
    assert fake.spec_violations == []


@pytest.fixture(scope="module")
def server_env(kinde: FakeKinde, jwks_server: JwksServer,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    var = tmp_path_factory.mktemp("dash")
    return {
        "DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
        "KINDE_CREDITS_VAR_DIR": str(var),
        "KINDE_DOMAIN": kinde.url,
        "KINDE_API_AUDIENCE": AUDIENCE,
        "KINDE_JWKS_URL": jwks_server.url,
        "KINDE_M2M_CLIENT_ID": kinde.client_id,
        "KINDE_M2M_CLIENT_SECRET": kinde.client_secret,
        "TOP_UP_URL": "https://app.example.com/billing",
    }


@pytest.fixture(scope="module")
def server(server_env: dict[str, str]) -> Iterator[LiveServer]:
    live = LiveServer(server_env, workers=1, threads=4)
    try:
        yield live.wait_ready()
    finally:
        live.stop()


@pytest.fixture(scope="module")
def ktokens(signing_key: Any, other_key: Any, kinde: FakeKinde) -> Tokens:
    # In Kinde mode the issuer is KINDE_DOMAIN: here, fake Kinde's URL.
    return Tokens(signing_key, other_key, issuer=kinde.url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's chromium, never a downloaded build (`playwright install` is not used).
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def seeded(server: LiveServer, ktokens: Tokens) -> dict[str, str]:
    """A month of varied usage (dated when it happened), so the chart has something to show."""
    admin = bearer(ktokens.m2m("credits:admin"))
    base = f"{server.url}/v1/wallets/{WALLET}"
    grant = requests.post(f"{base}/top-ups", headers=admin,
                          json={"credits": 20_000, "reason": "welcome credits",
                                "expires_after_days": 90})
    assert grant.status_code == 201, grant.text
    now = datetime.now(UTC)
    records = []
    for day in range(29, -1, -1):
        when = (now - timedelta(days=day)).isoformat()
        for feature, quantity in (("report_generation", 1 + day % 3),
                                  ("file_conversion", 5 + (day * 7) % 11),
                                  ("api_call", 10 + (day * 13) % 17)):
            if (day + len(feature)) % 4 != 0:  # some days without some features
                records.append({"wallet_id": WALLET, "feature": feature, "quantity": quantity,
                                "occurred_at": when})
    batch = requests.post(f"{server.url}/v1/usage/batch", headers=admin,
                          json={"records": records})
    assert [r["status"] for r in batch.json()["results"]] == [201] * len(records)
    hold = requests.post(f"{base}/holds", headers=admin, json={"credits": 120}).json()
    assert hold["status"] == "open"
    return {"user": ktokens.user(WALLET)}


def _number(text: str) -> int:
    return int(text.replace(",", "").replace("+", "").strip())


def _link(server: LiveServer, token: str, wallet: str = WALLET, **body: Any) -> str:
    response = requests.post(f"{server.url}/v1/wallets/{wallet}/dashboard-link",
                             json=body or None, headers=bearer(token))
    assert response.status_code == 201, response.text
    url = str(response.json()["url"])
    # DASHBOARD_BASE_URL is unset here: the link is a path on this server.
    return url if url.startswith("http") else f"{server.url}{url}"


def _api(server: LiveServer, token: str, path: str) -> Any:
    response = requests.get(f"{server.url}{path}", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def _daily_usage_from_api(entries: list[dict[str, Any]]) -> dict[str, int]:
    days: dict[str, int] = defaultdict(int)
    for e in entries:
        if e["kind"] in ("usage", "capture"):
            when = e["occurred_at"] or e["created_at"]
            days[when[:10]] -= e["amount"]
    return dict(days)


def _run_worker(env: dict[str, str]) -> None:
    """One pass of the real worker (`kinde-credits worker --once`): delivers the outbox."""
    subprocess.run([sys.executable, "-m", "app.cli", "worker", "--once"],
                   env={**os.environ, **env}, check=True, timeout=120, capture_output=True)


def test_dashboard_end_to_end(server: LiveServer, server_env: dict[str, str],
                              kinde: FakeKinde, browser: Any, seeded: dict[str, str],
                              ktokens: Tokens) -> None:
    user = seeded["user"]
    context = browser.new_context(viewport={"width": 1200, "height": 900},
                                  accept_downloads=True)
    page = context.new_page()
    response = page.goto(_link(server, user))
    assert response is not None and response.status == 200
    # The token left the address bar; the HttpOnly session cookie carries on.
    assert "token=" not in page.url
    cookie = next(c for c in context.cookies() if c["name"] == "kc_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # -- every number on the page equals the API's ----------------------------------------
    wallet = _api(server, user, f"/v1/wallets/{WALLET}")
    ledger = _api(server, user, f"/v1/wallets/{WALLET}/ledger?limit=200")["entries"]
    catalog = _api(server, user, "/v1/catalog")
    assert page.locator(".big").inner_text() == f"{wallet['balance']:,} credits"
    assert _number(page.locator("#balance").inner_text()) == wallet["balance"]
    assert _number(page.locator("#available").inner_text()) == wallet["available"]
    assert _number(page.locator("#held").inner_text()) == wallet["held"] == 120
    assert page.locator("#value li").all_inner_texts() == [v["text"] for v in wallet["value"]]
    runway = page.locator("#runway").inner_text()
    assert re.fullmatch(r"At your pace of the last 7 days, about \d+ days left\.", runway)

    rows = page.locator("#history-table tbody tr")
    assert rows.count() == 20
    for i, entry in enumerate(ledger[:20]):
        row = rows.nth(i)
        assert row.get_attribute("data-entry") == str(entry["id"])
        assert _number(row.locator(".amount").inner_text()) == entry["amount"]
        assert _number(row.locator(".after").inner_text()) == entry["balance_after"]
        assert row.locator(".what").inner_text().startswith(entry["description"] + " on ")

    for bundle in catalog["bundles"]:
        card = page.locator(f'[data-bundle="{bundle["key"]}"]')
        assert _number(card.locator(".credits").inner_text()) == bundle["credits"]
        assert card.locator(".price").inner_text() == bundle["price"]
        assert bundle["description"] in card.inner_text()
        for value in bundle["value"]:
            assert value["text"] in card.locator(".buys").inner_text()
    assert "about 2,500 file conversions" in page.locator('[data-bundle="starter"]').inner_text()

    expiring = sorted((b for b in wallet["blocks"] if b["expires_at"] and b["remaining"] > 0),
                      key=lambda b: b["expires_at"])
    shown = [_number(t) for t in page.locator("#expiries .credits").all_inner_texts()]
    assert shown == [b["remaining"] for b in expiring] and shown

    # -- the screenshot: a test artifact, and the README's picture on request ----------------
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(shot, ROOT / "docs" / "dashboard.png")

    page.locator("details summary").click()
    table = {
        row.get_attribute("data-day"): _number(row.locator(".total").inner_text())
        for row in page.locator("#usage-table tbody tr").all()
    }
    from_api = _daily_usage_from_api(ledger)
    cutoff = (datetime.now(UTC) - timedelta(days=29)).date().isoformat()
    assert table == {d: n for d, n in from_api.items() if d >= cutoff and n > 0}
    assert len(table) >= 25
    assert page.locator("svg#chart rect").count() >= 60
    discount = page.locator("#discount").inner_text().lower()
    assert "save 10% when you turn on auto-recharge" in discount

    # -- accessibility: axe-core, no serious or critical violations --------------------------
    _assert_accessible(page)

    # -- change an alert threshold ---------------------------------------------------------
    page.get_by_label("Warn me when my balance falls to these percentages").fill("40, 20")
    page.get_by_label("Also warn me when my balance falls to these numbers").fill("1000")
    page.get_by_role("button", name="Save alerts").click()
    page.wait_for_url(re.compile(r"done=alerts"))
    assert page.locator("#notice").inner_text() == "Your alert settings are saved."
    alerts = _api(server, user, f"/v1/wallets/{WALLET}")["alerts"]
    assert alerts["thresholds_percent"] == [40, 20] and alerts["thresholds_credits"] == [1000]

    # -- auto-recharge: not on the customer's own link (it needs credits:admin, as through
    # the API), editable on a link made with credits:admin (Kinde billing can charge for it) --
    assert page.locator("#recharge-disabled").count() == 1
    assert page.get_by_label("Turn on auto-recharge").is_disabled()
    admin_context = browser.new_context()
    admin_page = admin_context.new_page()
    admin_page.goto(_link(server, ktokens.m2m("credits:admin")))
    admin_page.get_by_label("Turn on auto-recharge").check()
    admin_page.get_by_label("Buy when my balance falls below (credits)").fill("1,000")
    admin_page.get_by_label("Pack to buy").select_option("starter")
    admin_page.get_by_role("button", name="Save auto-recharge").click()
    admin_page.wait_for_url(re.compile(r"done=auto-recharge"))
    admin_context.close()
    recharge = _api(server, user, f"/v1/wallets/{WALLET}")["auto_recharge"]
    assert recharge["enabled"] and recharge["threshold_credits"] == 1000
    assert recharge["bundle"] == "starter"

    # -- buy a pack with a double click: one purchase, one invoice -------------------------
    balance_before = _api(server, user, f"/v1/wallets/{WALLET}")["balance"]
    form = page.locator('[data-bundle="starter"] form')
    posted = {
        "csrf_token": form.locator('[name="csrf_token"]').get_attribute("value"),
        "bundle": "starter",
        "idempotency_key": form.locator('[name="idempotency_key"]').get_attribute("value"),
    }
    page.get_by_role("button", name="Buy Starter pack").dblclick()
    page.wait_for_url(re.compile(r"done=bought:starter"))
    assert "Starter pack bought, 5,000 credits added" in page.locator("#notice").inner_text()
    # Beyond the page's own guard: the same form sent twice more, at once, from the page.
    statuses = page.evaluate(
        """async (fields) => {
            const send = () => {
                const body = new FormData();
                for (const [k, v] of Object.entries(fields)) body.append(k, v);
                return fetch(location.pathname + "/buy", {method: "POST", body,
                                                           redirect: "manual"});
            };
            const answers = await Promise.all([send(), send()]);
            return answers.map((a) => a.type === "opaqueredirect" ? 303 : a.status);
        }""",
        posted,
    )
    assert statuses == [303, 303]
    after = _api(server, user, f"/v1/wallets/{WALLET}")
    assert after["balance"] == balance_before + 5000
    purchases = [e for e in _api(server, user, f"/v1/wallets/{WALLET}/ledger?limit=200")
                 ["entries"] if e["kind"] == "purchase"]
    assert len(purchases) == 1 and purchases[0]["reason"] == "bundle:starter"
    _run_worker(server_env)
    assert kinde.usage_total("agreement_dash", "credit_pack_starter") == 1
    assert [c.meter_value for c in kinde.meter_calls
            if c.billing_feature_code == "credit_pack_starter"] == [1]
    db = sqlite3.connect(server_env["DATABASE_URL"].removeprefix("sqlite:///"))
    try:
        recharges = db.execute("SELECT bundle, auto, status FROM recharges").fetchall()
    finally:
        db.close()
    assert recharges == [("starter", 0, "invoiced")]

    # -- the CSV download --------------------------------------------------------------------
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the full history (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"credits-history-{WALLET}.csv"
    saved = ARTIFACTS / "history.csv"
    download.save_as(str(saved))
    csv_rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    full = _api(server, user, f"/v1/wallets/{WALLET}/ledger?limit=200")["entries"]
    assert [(int(r["id"]), int(r["credits"]), int(r["balance_after"])) for r in csv_rows] == [
        (e["id"], e["amount"], e["balance_after"]) for e in full]

    # -- a phone: one column, nothing wider than the screen -----------------------------------
    phone = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True,
                                has_touch=True, device_scale_factor=2)
    mobile = phone.new_page()
    assert mobile.goto(_link(server, user)).status == 200
    overflow = mobile.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    mobile.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    _assert_accessible(mobile)
    phone.close()
    context.close()


def _assert_accessible(page: Any) -> None:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    serious = [v for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]
    assert serious == [], results.generate_report()


def test_keyboard_reaches_every_control_with_a_name(server: LiveServer, browser: Any,
                                                   seeded: dict[str, str]) -> None:
    page = browser.new_page()
    page.goto(_link(server, seeded["user"]))
    names: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => { const e = document.activeElement;
                       return e ? [e.tagName, e.getAttribute('aria-label') || e.labels?.[0]?.
                       innerText || e.innerText || ''] : null; }""")
        if focused is None or focused[0] == "BODY":
            break
        assert focused[1].strip(), f"a {focused[0]} without a name"
        names.append(focused[1].strip())
    for name in ("Skip to the content", "Buy Starter pack", "Buy Growth pack", "Save alerts",
                 "Download the full history (CSV)"):
        assert name in names, names
    page.close()


def test_bad_links_and_cross_site_posts_show_nothing(
    server: LiveServer, browser: Any, ktokens: Tokens, seeded: dict[str, str]
) -> None:
    context = browser.new_context()
    page = context.new_page()
    good = _link(server, seeded["user"])
    token = good.split("token=")[1]
    bad_links = {
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "re-pointed": good.replace(f"/dashboard/{WALLET}", "/dashboard/kp_e2e_someone_else"),
        "other wallet's token": good.replace(token, _link(
            server, ktokens.user("kp_e2e_other"), "kp_e2e_other").split("token=")[1]),
    }
    short = _link(server, seeded["user"], ttl_seconds=1)
    time.sleep(2.1)
    bad_links["expired"] = short
    for what, url in bad_links.items():
        response = page.goto(url)
        assert response is not None and response.status == 403, what
        assert page.locator("h1").inner_text() == "This page cannot be shown", what
        assert page.locator("#balance").count() == 0, what
    assert not [c for c in context.cookies() if c["name"] == "kc_dashboard"]
    # Another wallet's user cannot even get a link for this wallet.
    other = requests.post(f"{server.url}/v1/wallets/{WALLET}/dashboard-link",
                          headers=bearer(ktokens.user("kp_e2e_other")))
    assert other.status_code == 404

    # A page on another origin (same site: 127.0.0.1, another port) posts to the dashboard
    # with the victim's cookie: refused, nothing changes.
    assert page.goto(good).status == 200
    before = _api(server, seeded["user"], f"/v1/wallets/{WALLET}")["alerts"]
    evil = f"http://127.0.0.1:{_other_port(server)}/evil"
    page.route(evil, lambda route: route.fulfill(status=200, content_type="text/html", body=(
        f'<!doctype html><form method="post" action="{server.url}/dashboard/{WALLET}/alerts">'
        '<input name="thresholds_percent" value="1"><input name="notify_at_zero" value="">'
        '<button>go</button></form>')))
    page.goto(evil)
    with page.expect_navigation():
        page.click("button")
    assert page.locator("h1").inner_text() == "This page cannot be shown"
    assert _api(server, seeded["user"], f"/v1/wallets/{WALLET}")["alerts"] == before
    context.close()


def _other_port(server: LiveServer) -> int:
    return server.port + 1 if server.port < 65535 else server.port - 1
