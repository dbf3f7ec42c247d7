"""`POST /v1/wallets/{wallet_id}/dashboard-link`: a signed link to the customer's dashboard.

Like a billing-portal session: the product's front end (the wallet's own signed-in user) or its
backend (M2M `credits:read` within reach) asks for a link and sends the customer there; the
link opens the dashboard with no other login, for `ttl_seconds` (default 900, at most 3600).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import request
from marshmallow import fields, validate

from app.domain.dashboard import DEFAULT_LINK_TTL, MAX_LINK_TTL
from app.domain.principal import SCOPE_ADMIN, SCOPE_WRITE, Principal
from app.http.api import WALLET_ROUTE, container, make_blueprint, operation
from app.http.auth import current_principal

bp = make_blueprint("dashboard_link", "The customer's dashboard: signed links")


class DashboardLinkRequestSchema(ma.Schema):
    ttl_seconds = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_LINK_TTL),
        metadata={"description": f"how long the link works (default {DEFAULT_LINK_TTL})"},
    )


class DashboardLinkSchema(ma.Schema):
    url = fields.String(required=True, metadata={"description": "open it in the browser"})
    expires_at = fields.String(required=True, metadata={"format": "date-time"})


def base_url() -> str:
    """Where the customer's browser reaches this service: DASHBOARD_BASE_URL, or the URL the
    link was asked for on."""
    configured = container().settings.dashboard_base_url
    return configured or request.host_url.rstrip("/")


@operation(bp, f"{WALLET_ROUTE}/dashboard-link", "POST", scope="read",
           body=DashboardLinkRequestSchema(), body_required=False,
           response=(201, DashboardLinkSchema), errors=(401, 403, 404, 503))
def create_dashboard_link(body: dict[str, Any], wallet_id: str) -> Any:
    """A signed link that opens the wallet's dashboard without another login.

    The wallet's own user (or a member of its org) needs no scope; M2M tokens need
    credits:read and reach. A tampered, expired or re-pointed link shows nothing.
    """
    dashboard = container().dashboard
    return dashboard.create_link(
        wallet_id, body.get("ttl_seconds"), base_url(), page_actions(current_principal())
    ), 201


def page_actions(principal: Principal) -> frozenset[str]:
    """What the link may let its holder do: never more than its maker could do through the API.

    A signed-in customer opening their own (or their org's) wallet gets the page's actions, within
    the operator's policy. A machine that asks for a link on a customer's behalf passes on only
    what its own scopes allow: buying needs credits:write, auto-recharge credits:admin, so a
    read-only key can hand out a page to look at and nothing more.
    """
    if not principal.is_machine:
        return frozenset({"buy", "auto_recharge"})
    actions = set()
    if principal.has_scope(SCOPE_WRITE):
        actions.add("buy")
    if principal.has_scope(SCOPE_ADMIN):
        actions.add("auto_recharge")
    return frozenset(actions)
