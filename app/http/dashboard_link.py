"""`POST /v1/wallets/{wallet_id}/dashboard-link`: a signed link to the customer's dashboard.

Like a billing-portal session: the product's front end (the wallet's own signed-in user) or its
backend (M2M `credits:read` within reach) asks for a link and sends the customer there; the
link opens the dashboard with no other login, for `ttl_seconds` (default 900, at most 3600).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from app.domain.dashboard import DEFAULT_LINK_TTL, MAX_LINK_TTL
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


def base_url() -> str | None:
    """DASHBOARD_BASE_URL, where the customer's browser reaches this service; None makes the
    link a relative path. Request headers (`Host`, `X-Forwarded-*`) never choose it: any client
    can send them, and the link carries a live token."""
    return container().settings.dashboard_base_url or None


@operation(bp, f"{WALLET_ROUTE}/dashboard-link", "POST",
           body=DashboardLinkRequestSchema(), body_required=False,
           response=(201, DashboardLinkSchema), errors=(401, 403, 404, 503))
def create_dashboard_link(body: dict[str, Any], wallet_id: str) -> Any:
    """A signed link that opens the wallet's dashboard without another login.

    The wallet's own user (or a member of its org) needs no scope; M2M tokens need
    credits:read and reach. A tampered, expired or re-pointed link shows nothing.
    """
    dashboard = container().dashboard
    # The link carries its maker: each page action is decided for them by the access table,
    # so a link never grants more than its maker could do through the API.
    return dashboard.create_link(
        wallet_id, body.get("ttl_seconds"), base_url(), current_principal()
    ), 201
