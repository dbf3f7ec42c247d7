"""`PUT /v1/wallets/{id}/alerts` and `PUT /v1/wallets/{id}/auto-recharge`.

Settings change what the service does on its own (notify, buy credits), so machines need the
admin scope, like grants. Customers set their own alerts: the wallet's own user token needs no
scope for `PUT /alerts`, except to change `notify_email` (where the messages go), which stays
an admin setting.
"""

from __future__ import annotations

from typing import Any

from app.http import schemas
from app.http.api import WALLET_ROUTE, container, idempotency_key, make_blueprint, operation, reply
from app.http.auth import authorize

bp = make_blueprint("wallet_settings", "Wallet settings: spend alerts and auto-recharge")


@operation(bp, f"{WALLET_ROUTE}/alerts", "PUT",
           body=schemas.AlertSettingsRequestSchema,
           response=(200, schemas.AlertSettingsResultSchema), errors=(401, 403, 404, 409, 503),
           idempotent=True)
def put_alerts(body: dict[str, Any], wallet_id: str) -> Any:
    """Set the wallet's alert thresholds (percent of the balance after the latest credit,
    and/or absolute credits); omitted fields take the catalog's defaults. Each threshold
    fires once per crossing; a credit re-arms the ones above the new balance. `notify_email`
    sets where alert e-mails go (Kinde does not give an org's billing e-mail back).

    The wallet's own user may call this without a scope (customers set their own alerts);
    machines need credits:admin, and so does `notify_email`."""
    if "notify_email" in body:
        # Redirecting an account's alert e-mails is an account-admin decision.
        authorize("put_alerts.notify_email", wallet_id)
    return reply(container().ledger.set_alerts(wallet_id, body,
                                               idempotency_key=idempotency_key()))


@operation(bp, f"{WALLET_ROUTE}/auto-recharge", "PUT",
           body=schemas.AutoRechargeRequestSchema,
           response=(200, schemas.AutoRechargeResultSchema), errors=(401, 403, 404, 409, 503),
           idempotent=True)
def put_auto_recharge(body: dict[str, Any], wallet_id: str) -> Any:
    """Turn auto-recharge on or off: when a debit leaves the balance below
    `threshold_credits`, buy `bundle` (at the catalog's discount), at most `max_per_day`
    times a day and one at a time. Saving the settings also lifts a suspension."""
    return reply(container().ledger.set_auto_recharge(wallet_id, body,
                                                      idempotency_key=idempotency_key()))
