"""Who may do what: the one table of authorization rules, as data (DESIGN.md, "Who may spend
the customer's money" and "HTTP API"). Standard library only.

Every `/v1` route and every dashboard page action is an *operation* with one row in `RULES`;
`decide` reads a row for a `Principal` and a wallet. The HTTP layer looks the row up by the
Flask endpoint name before the body is parsed (app.http.auth), and the dashboard evaluates the
same rows for the principal who made the link (app.services.dashboard), so a page action can
never grant more than its maker may do through the API. A route or page action without a row
is refused (fail closed), and tests/integration/test_access_matrix.py fails for it.

A row says what each kind of caller needs:
- ``own_user``: a signed-in user on their own wallet (wallet id == ``sub``); on a route that
  names no wallet, any user;
- ``member``: a signed-in user on their organization's wallet (wallet id == ``org_code``);
- ``machine``: an M2M token without ``org_code`` (the product's backend: every wallet);
- ``confined``: an M2M token with ``org_code`` (that org's wallet only).
Each is a `Need`: no scope, a credits scope level, or never. A caller who cannot reach the
wallet at all (another user, another org) gets 404 before any scope is looked at, so wallet
ids do not leak; a caller who reaches it without the scope gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.principal import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Principal


class Need(StrEnum):
    """What a kind of caller needs for an operation."""

    NONE = "none"
    """Being that caller is enough (within reach): no scope."""
    READ = SCOPE_READ
    """`credits:read` or higher."""
    WRITE = SCOPE_WRITE
    """`credits:write` or higher."""
    ADMIN = SCOPE_ADMIN
    """`credits:admin`."""
    NEVER = "never"
    """Refused whatever the scopes (403)."""


class Decision(StrEnum):
    """The answer to one caller for one operation."""

    ALLOW = "allow"
    """Go ahead."""
    NOT_FOUND = "not_found"
    """404: the wallet is out of the caller's reach (it may as well not exist)."""
    FORBIDDEN = "forbidden"
    """403: within reach, but the caller lacks what the row needs."""


@dataclass(frozen=True)
class Rule:
    """One row: what each kind of caller needs. ``wallet`` is false for routes that name no
    wallet in their path (reach is then checked per record or per hold by the use case)."""

    own_user: Need
    member: Need
    machine: Need
    confined: Need
    wallet: bool = True
    # Holds named by id: a user token settles only holds it placed (machines any in reach).
    users_settle_own_holds_only: bool = False

    def need_for(self, principal: Principal, wallet_id: str | None) -> Need:
        """The need that applies to this caller (NEVER for a caller of no known kind)."""
        if principal.is_machine:
            return self.machine if principal.org_code is None else self.confined
        if not principal.is_user:
            return Need.NEVER
        if wallet_id is not None and wallet_id != principal.subject:
            return self.member
        return self.own_user


def _meets(principal: Principal, need: Need) -> bool:
    if need is Need.NONE:
        return True
    if need is Need.NEVER:
        return False
    return principal.has_scope(need.value)


def decide(rule: Rule, principal: Principal, wallet_id: str | None) -> Decision:
    """Reach first (404), then the row's need (403)."""
    if rule.wallet and (wallet_id is None or not principal.can_reach_wallet(wallet_id)):
        return Decision.NOT_FOUND
    return Decision.ALLOW if _meets(principal, rule.need_for(principal, wallet_id)) \
        else Decision.FORBIDDEN


def allowed(rule: Rule, principal: Principal, wallet_id: str | None) -> bool:
    return decide(rule, principal, wallet_id) is Decision.ALLOW


def _same(need: Need, *, wallet: bool = True) -> Rule:
    return Rule(need, need, need, need, wallet=wallet)


# Rows shared by an API route and a page action (the page action IS the API operation).
READ_WALLET = Rule(Need.NONE, Need.NONE, Need.READ, Need.READ)
# A pack sale invoiced through Kinde: a user buys for their own wallet; an org wallet's member
# needs credits:write, like the product's backend.
SELL_PACK = Rule(Need.NONE, Need.WRITE, Need.WRITE, Need.WRITE)
# A sale nobody is charged for (local mode, SALES_PAID_ELSEWHERE, DASHBOARD_UNBILLED_PURCHASES):
# credits on the caller's word alone, like a grant.
SELL_UNBILLED_PACK = _same(Need.ADMIN)
GRANT = _same(Need.ADMIN)
SET_ALERTS = Rule(Need.NONE, Need.NONE, Need.ADMIN, Need.ADMIN)
SET_NOTIFY_EMAIL = _same(Need.ADMIN)
SET_AUTO_RECHARGE = _same(Need.ADMIN)
# Ending one's own dashboard session: whoever holds it.
SIGN_OUT = _same(Need.NONE)

RULES: dict[str, Rule] = {
    # -- /v1 routes (Flask endpoint names) --
    "wallets.get_wallet": READ_WALLET,
    "wallets.get_ledger": READ_WALLET,
    "wallets.record_usage": _same(Need.WRITE),
    "wallets.record_usage_batch": _same(Need.WRITE, wallet=False),
    # The route's own row is the loosest of its operations (top_up.*), checked before the
    # body is read; the view then checks the one its body asks for.
    "wallets.top_up": SELL_PACK,
    "top_up.sale": SELL_PACK,
    "top_up.unbilled_sale": SELL_UNBILLED_PACK,
    "top_up.grant": GRANT,
    "holds.place_hold": _same(Need.WRITE),
    "holds.capture_hold": Rule(Need.WRITE, Need.WRITE, Need.WRITE, Need.WRITE, wallet=False,
                               users_settle_own_holds_only=True),
    "holds.release_hold": Rule(Need.WRITE, Need.WRITE, Need.WRITE, Need.WRITE, wallet=False,
                               users_settle_own_holds_only=True),
    "wallet_settings.put_alerts": SET_ALERTS,
    "put_alerts.notify_email": SET_NOTIFY_EMAIL,
    "wallet_settings.put_auto_recharge": SET_AUTO_RECHARGE,
    "budgets.put_budget": _same(Need.ADMIN),
    "budgets.get_members": READ_WALLET,
    "budgets.check": READ_WALLET,
    "catalog.get_catalog": _same(Need.NONE, wallet=False),
    "dashboard_link.create_dashboard_link": READ_WALLET,
    # Corrections (issue 19): an operator's tools; the runway is a read.
    "corrections.post_adjustment": GRANT,
    "corrections.post_refund": _same(Need.ADMIN),
    "corrections.get_forecast": READ_WALLET,
    # Business-wide figures: only the unconfined backend's admin.
    "reports.get_revenue": Rule(Need.NEVER, Need.NEVER, Need.ADMIN, Need.NEVER, wallet=False),
    # -- dashboard page actions, for the principal who made the link --
    "dashboard.page": READ_WALLET,
    "dashboard.history_csv": READ_WALLET,
    "dashboard.buy": SELL_PACK,
    "dashboard.buy.unbilled": SELL_UNBILLED_PACK,
    "dashboard.alerts": SET_ALERTS,
    "dashboard.auto_recharge": SET_AUTO_RECHARGE,
    "dashboard.sign_out": SIGN_OUT,
}

# Endpoints outside the table, each with who guards it instead (kept here so the matrix test
# can tell a forgotten route from a public one).
PUBLIC: dict[str, str] = {
    "health.healthz": "liveness, no data",
    "metrics.metrics": "Prometheus text; its own guard lives in app.http.metrics (issue 18, 9)",
    "wellknown.jwks": "public keys",
    "webhooks.kinde_webhook": "authenticated by Kinde's RS256 signature",
    "dashboard.static": "the page's CSS and JavaScript",
    "static": "Flask's static files",
}
PUBLIC_PREFIXES = ("api-docs.", "docs.")


def rule_for(operation: str) -> Rule | None:
    return RULES.get(operation)


def is_admin(principal: Principal) -> bool:
    """Holds `credits:admin` (a sale by an admin is not stopped by an overdue payment)."""
    return principal.has_scope(SCOPE_ADMIN)


