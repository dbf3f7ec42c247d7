"""The access table's rules as plain Python (app.domain.access): no tokens, Flask or database.
The same rows are exercised over HTTP by every kind of caller in
tests/integration/test_access_matrix.py."""

from __future__ import annotations

import pytest

from app.domain.access import RULES, Decision, decide
from app.domain.principal import Principal


def user(sub: str, org: str | None = None, *scopes: str) -> Principal:
    return Principal(sub, org, frozenset(scopes), False, None)


def m2m(*scopes: str, org: str | None = None) -> Principal:
    return Principal(None, org, frozenset(scopes), True, None)


@pytest.mark.parametrize("operation, principal, wallet, decision", [
    # A user buys for their own wallet; an org member needs credits:write.
    ("top_up.sale", user("kp_a"), "kp_a", Decision.ALLOW),
    ("top_up.sale", user("kp_a", "org_x"), "org_x", Decision.FORBIDDEN),
    ("top_up.sale", user("kp_a", "org_x", "credits:write"), "org_x", Decision.ALLOW),
    ("top_up.sale", user("kp_b"), "kp_a", Decision.NOT_FOUND),
    # An unbilled sale and auto-recharge are an admin's.
    ("top_up.unbilled_sale", user("kp_a", None, "credits:write"), "kp_a", Decision.FORBIDDEN),
    ("dashboard.buy.unbilled", m2m("credits:admin"), "org_x", Decision.ALLOW),
    ("dashboard.auto_recharge", user("kp_a"), "kp_a", Decision.FORBIDDEN),
    ("dashboard.auto_recharge", m2m("credits:admin", org="org_x"), "org_x", Decision.ALLOW),
    ("dashboard.auto_recharge", m2m("credits:admin", org="org_x"), "org_y", Decision.NOT_FOUND),
    # Business-wide figures: only the unconfined backend's admin.
    ("reports.get_revenue", m2m("credits:admin"), None, Decision.ALLOW),
    ("reports.get_revenue", m2m("credits:admin", org="org_x"), None, Decision.FORBIDDEN),
    ("reports.get_revenue", user("kp_a", None, "credits:admin"), None, Decision.FORBIDDEN),
    # Reading: users need no scope, machines credits:read.
    ("wallets.get_wallet", user("kp_a", "org_x"), "org_x", Decision.ALLOW),
    ("wallets.get_wallet", m2m(), "kp_a", Decision.FORBIDDEN),
    # A machine with a malformed org code reaches nothing, never everything.
    ("wallets.get_wallet", m2m("credits:admin", org=""), "kp_a", Decision.NOT_FOUND),
])
def test_decisions(operation: str, principal: Principal, wallet: str | None,
                   decision: Decision) -> None:
    assert decide(RULES[operation], principal, wallet) is decision


def test_page_actions_share_the_api_rows() -> None:
    """A page action is the API operation, not a second rule."""
    assert RULES["dashboard.buy"] is RULES["top_up.sale"]
    assert RULES["dashboard.buy.unbilled"] is RULES["top_up.unbilled_sale"]
    assert RULES["dashboard.alerts"] is RULES["wallet_settings.put_alerts"]
    assert RULES["dashboard.auto_recharge"] is RULES["wallet_settings.put_auto_recharge"]
    assert RULES["dashboard.page"] is RULES["wallets.get_wallet"]


def test_a_principal_of_no_known_kind_gets_nothing() -> None:
    nobody = Principal("svc_x", None, frozenset({"credits:admin"}), False, None)
    for name, rule in RULES.items():
        assert decide(rule, nobody, "kp_a" if rule.wallet else None) is not Decision.ALLOW, name
