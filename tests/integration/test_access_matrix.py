"""The access matrix, derived from the one table of who may do what (app.domain.access.RULES),
on SQLite and PostgreSQL.

Every `/v1` route and every dashboard page action is sent by every kind of caller: anonymous,
the wallet's own user (no scope, write, admin), another user, an org member without a scope and
with each credits scope, M2M read / write / admin, org-confined M2M read / write / admin, M2M
confined to another org; page actions by a dashboard session made by each caller who may make
a link. The expected answer is what `decide` says for that caller and row (401 anonymous, 404
out of reach, 403 forbidden, anything else allowed), and a refused request writes nothing.

A route or page action that the app serves without a row in the table (or without a request
below to exercise it) fails `test_every_route_and_page_action_has_a_row`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from adapters.tokens import JwksKeySource
from app import create_app
from app.bootstrap import Container, build_container
from app.domain.access import PUBLIC, PUBLIC_PREFIXES, RULES, Decision, decide
from app.domain.principal import Principal
from app.services.dashboard import Policy
from app.services.payments import KindeInvoicing, PaidElsewhere
from app.settings import Settings
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

WALLETS = ("kp_alice", "org_acme")
ORIGIN = "http://localhost"


@dataclass(frozen=True)
class Caller:
    name: str
    principal: Principal | None  # None: anonymous
    token: Callable[[Tokens], str] | None


def _user(name: str, sub: str, org: str | None = None, *scopes: str) -> Caller:
    return Caller(name, Principal(sub, org, frozenset(scopes), False, "test-client"),
                  lambda t: t.user(sub, org=org, scopes=scopes))


def _m2m(name: str, *scopes: str, org: str | None = None) -> Caller:
    return Caller(name, Principal(None, org, frozenset(scopes), True, "test-client"),
                  lambda t: t.m2m(*scopes, org=org))


CALLERS: tuple[Caller, ...] = (
    Caller("anonymous", None, None),
    _user("own user", "kp_alice"),
    _user("own user write", "kp_alice", None, "credits:write"),
    _user("own user admin", "kp_alice", None, "credits:admin"),
    _user("other user", "kp_bob", "org_other", "credits:admin"),
    _user("member", "kp_carol", "org_acme"),
    _user("member read", "kp_carol", "org_acme", "credits:read"),
    _user("member write", "kp_carol", "org_acme", "credits:write"),
    _user("member admin", "kp_carol", "org_acme", "credits:admin"),
    _m2m("m2m read", "credits:read"),
    _m2m("m2m write", "credits:write"),
    _m2m("m2m admin", "credits:admin"),
    _m2m("confined read", "credits:read", org="org_acme"),
    _m2m("confined write", "credits:write", org="org_acme"),
    _m2m("confined admin", "credits:admin", org="org_acme"),
    _m2m("confined elsewhere", "credits:admin", org="org_other"),
)


@dataclass(frozen=True)
class Call:
    """One request that exercises an operation of the table."""

    operation: str
    method: str
    path: str  # "{wallet}" and "{hold}" are filled in
    body: dict[str, Any] | None = None
    invoiced: bool = False  # sell through Kinde invoicing (with a billing customer)
    holds: bool = False  # the path names a hold placed by the backend on the wallet
    extra: dict[str, Any] = field(default_factory=dict)


API_CALLS: tuple[Call, ...] = (
    Call("wallets.get_wallet", "GET", "/v1/wallets/{wallet}"),
    Call("wallets.get_ledger", "GET", "/v1/wallets/{wallet}/ledger"),
    Call("wallets.record_usage", "POST", "/v1/wallets/{wallet}/usage",
         {"feature": "api_call", "quantity": 1}),
    Call("wallets.record_usage_batch", "POST", "/v1/usage/batch",
         {"records": [{"wallet_id": "{wallet}", "feature": "api_call", "quantity": 1}]}),
    Call("top_up.sale", "POST", "/v1/wallets/{wallet}/top-ups", {"bundle": "starter"},
         invoiced=True),
    Call("top_up.unbilled_sale", "POST", "/v1/wallets/{wallet}/top-ups", {"bundle": "starter"}),
    Call("top_up.grant", "POST", "/v1/wallets/{wallet}/top-ups",
         {"credits": 10, "reason": "matrix"}),
    Call("holds.place_hold", "POST", "/v1/wallets/{wallet}/holds", {"credits": 1}),
    Call("holds.capture_hold", "POST", "/v1/holds/{hold}/capture", holds=True),
    Call("holds.release_hold", "POST", "/v1/holds/{hold}/release", holds=True),
    Call("wallet_settings.put_alerts", "PUT", "/v1/wallets/{wallet}/alerts",
         {"thresholds_percent": [40]}),
    Call("put_alerts.notify_email", "PUT", "/v1/wallets/{wallet}/alerts",
         {"thresholds_percent": [40], "notify_email": "ops@example.com"}),
    Call("wallet_settings.put_auto_recharge", "PUT", "/v1/wallets/{wallet}/auto-recharge",
         {"enabled": False}),
    Call("budgets.put_budget", "PUT", "/v1/wallets/{wallet}/members/kp_dave/budget",
         {"credits_per_day": 10}),
    Call("budgets.get_members", "GET", "/v1/wallets/{wallet}/members"),
    Call("budgets.check", "GET", "/v1/wallets/{wallet}/check?feature=api_call&quantity=1"),
    Call("catalog.get_catalog", "GET", "/v1/catalog"),
    Call("dashboard_link.create_dashboard_link", "POST", "/v1/wallets/{wallet}/dashboard-link"),
    Call("reports.get_revenue", "GET", "/v1/reports/revenue"),
    Call("corrections.post_adjustment", "POST", "/v1/wallets/{wallet}/adjustments",
         {"credits": 5, "reason": "matrix"}),
    # An allowed caller gets past the table to the body check (422): no pack is needed.
    Call("corrections.post_refund", "POST", "/v1/wallets/{wallet}/purchases/1/refund",
         {"reason": ""}),
    Call("corrections.get_forecast", "GET", "/v1/wallets/{wallet}/forecast"),
)
# A route whose view does more than one operation: its own row and the rows its body picks.
ROUTE_OPERATIONS = {"wallets.top_up": ("top_up.sale", "top_up.unbilled_sale", "top_up.grant"),
                    "wallet_settings.put_alerts": ("wallet_settings.put_alerts",
                                                   "put_alerts.notify_email")}

# Dashboard page actions, sent with the session of a link made by each caller.
PAGE_CALLS: tuple[Call, ...] = (
    Call("dashboard.page", "GET", "/dashboard/{wallet}"),
    Call("dashboard.history_csv", "GET", "/dashboard/{wallet}/history.csv"),
    Call("dashboard.buy", "POST", "/dashboard/{wallet}/buy", {"bundle": "starter"},
         invoiced=True),
    Call("dashboard.buy.unbilled", "POST", "/dashboard/{wallet}/buy", {"bundle": "starter"}),
    Call("dashboard.alerts", "POST", "/dashboard/{wallet}/alerts",
         {"thresholds_percent": "40", "thresholds_credits": "", "notify_at_zero": "on"}),
    Call("dashboard.auto_recharge", "POST", "/dashboard/{wallet}/auto-recharge",
         {"threshold_credits": "", "bundle": ""}),
    Call("dashboard.sign_out", "POST", "/dashboard/{wallet}/sign-out"),
)
PAGE_ROUTE_OPERATIONS = {"dashboard.buy": ("dashboard.buy", "dashboard.buy.unbilled")}


@pytest.fixture
def matrix(api_settings: Settings, jwks_server: JwksServer, clock: FakeClock
           ) -> Iterator[Container]:
    container = build_container(replace(api_settings, dashboard_unbilled_purchases=True),
                                key_source=JwksKeySource(jwks_server.url), pool_size=5,
                                clock=clock)
    # Buying and auto-recharge are allowed by the operator: only the table decides here.
    container.dashboard.policy = Policy(None, None)
    for wallet in WALLETS:
        container.ledger.grant(wallet, 100_000, "matrix")
        with container.store(True) as uow:
            uow.wallets.update_profile(wallet, billing_customer_id=f"customer_{wallet}")
            uow.commit()
    yield container
    container.close()


@pytest.fixture
def app(matrix: Container) -> Flask:
    return create_app(container=matrix)


def expected(call: Call, caller: Caller, wallet: str) -> Decision | None:
    """None: 401 (anonymous); otherwise the table's decision for this caller."""
    if caller.principal is None:
        return None
    rule = RULES[call.operation]
    if call.holds:
        # Holds are named by id: the scope is checked before the hold is looked up (it says
        # nothing about the hold), then reach is the hold's wallet, and users settle only
        # their own holds (these were placed by the backend).
        decision = decide(rule, caller.principal, None)
        if decision is not Decision.ALLOW:
            return decision
        if not caller.principal.can_reach_wallet(wallet) or (
                rule.users_settle_own_holds_only and caller.principal.is_user):
            return Decision.NOT_FOUND
        return decision
    return decide(rule, caller.principal, wallet if rule.wallet else None)


def _fill(value: Any, wallet: str, hold: str) -> Any:
    if isinstance(value, str):
        return value.replace("{wallet}", wallet).replace("{hold}", hold)
    if isinstance(value, list):
        return [_fill(v, wallet, hold) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, wallet, hold) for k, v in value.items()}
    return value


def snapshot(container: Container) -> tuple[Any, ...]:
    """Everything a refused request must leave unchanged, in one query on the app's engine
    (what tests.http_fixtures.table_counts checks, without a new engine per call)."""
    tables = ("wallets", "entries", "blocks", "holds", "idempotency_keys", "outbox",
              "recharges", "member_budgets", "hold_placers", "payment_standing")
    counts = ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in tables)
    with container.store.engine.connect() as conn:
        return tuple(conn.execute(text(
            f"SELECT {counts}, COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0), "
            "COUNT(alert_settings), COUNT(auto_recharge_threshold), "
            "SUM(CASE WHEN auto_recharge_enabled THEN 1 ELSE 0 END) FROM wallets")).one())


def _sell_through(container: Container, invoiced: bool) -> None:
    container.ledger.payments = KindeInvoicing() if invoiced else PaidElsewhere()


def _assert_answer(status: int, decision: Decision | None, what: str) -> None:
    if decision is None:
        assert status == 401, what
    elif decision is Decision.NOT_FOUND:
        assert status == 404, what
    elif decision is Decision.FORBIDDEN:
        assert status == 403, what
    else:
        assert status not in (401, 403, 404) and status < 500, what


def test_every_route_and_page_action_has_a_row(app: Flask) -> None:
    """The table covers the app: a route without a row (or a public reason), or a row this
    test never exercises, fails here."""
    exercised = {c.operation for c in API_CALLS + PAGE_CALLS}
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in PUBLIC or endpoint.startswith(PUBLIC_PREFIXES):
            assert not rule.rule.startswith("/v1/"), f"{endpoint}: /v1 routes are never public"
            continue
        assert endpoint in RULES, f"{endpoint} ({rule.rule}) has no row in app.domain.access"
        operations = ROUTE_OPERATIONS.get(endpoint) or PAGE_ROUTE_OPERATIONS.get(endpoint) \
            or (endpoint,)
        for operation in operations:
            assert operation in exercised, f"{operation} is not exercised by the matrix"
    assert set(RULES) - set(ROUTE_OPERATIONS) <= exercised, "a row nobody exercises"


def test_api_matrix(web: FlaskClient, tokens: Tokens, matrix: Container, db_url: str) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    for call in API_CALLS:
        for wallet in WALLETS:
            _sell_through(matrix, call.invoiced)
            for caller in CALLERS:
                hold = "hold_none"
                if call.holds:
                    placed = web.post(f"/v1/wallets/{wallet}/holds", json={"credits": 1},
                                      headers=admin)
                    assert placed.status_code == 201, placed.get_json()
                    hold = placed.get_json()["hold_id"]
                headers = bearer(caller.token(tokens)) if caller.token else {}
                decision = expected(call, caller, wallet)
                before = snapshot(matrix) if decision is not Decision.ALLOW else None
                response = web.open(_fill(call.path, wallet, hold), method=call.method,
                                    json=_fill(call.body, wallet, hold), headers=headers)
                what = f"{call.operation} on {wallet} by {caller.name}: " \
                       f"{response.status_code} {response.get_data(as_text=True)[:200]}"
                _assert_answer(response.status_code, decision, what)
                if before is not None:
                    assert snapshot(matrix) == before, f"refused but wrote: {what}"


def _open_session(web: FlaskClient, tokens: Tokens, caller: Caller, wallet: str) -> str:
    assert caller.token is not None
    made = web.post(f"/v1/wallets/{wallet}/dashboard-link", headers=bearer(caller.token(tokens)))
    assert made.status_code == 201, made.get_json()
    url = made.get_json()["url"]
    parts = urlsplit(url)
    page = web.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    html = page.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert csrf
    return csrf.group(1)


def test_dashboard_matrix(app: Flask, tokens: Tokens, matrix: Container, db_url: str) -> None:
    """A session made by each caller who may make a link does, on the page, exactly what the
    table lets that caller do through the API."""
    link_rule = RULES["dashboard_link.create_dashboard_link"]
    for wallet in WALLETS:
        for caller in CALLERS:
            if caller.principal is None or \
                    decide(link_rule, caller.principal, wallet) is not Decision.ALLOW:
                continue
            for call in PAGE_CALLS:
                web = app.test_client()  # one browser, one link, one session per action
                csrf = _open_session(web, tokens, caller, wallet)
                _sell_through(matrix, call.invoiced)
                decision = decide(RULES[call.operation], caller.principal, wallet)
                form = dict(call.body or {}, csrf_token=csrf)
                if call.operation.startswith("dashboard.buy"):
                    form["idempotency_key"] = "dashboard:" + "0" * 31 + str(len(caller.name) % 10)
                before = snapshot(matrix) if decision is not Decision.ALLOW else None
                if call.method == "GET":
                    response = web.get(_fill(call.path, wallet, ""))
                else:
                    response = web.post(_fill(call.path, wallet, ""), data=form,
                                        headers={"Origin": ORIGIN})
                what = f"{call.operation} on {wallet}, link by {caller.name}: " \
                       f"{response.status_code}"
                if decision is Decision.ALLOW:
                    assert response.status_code in (200, 303), what
                else:
                    assert response.status_code == 403, what
                    assert snapshot(matrix) == before, f"refused but wrote: {what}"


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    return app.test_client()
