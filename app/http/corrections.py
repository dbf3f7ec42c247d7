"""`POST /v1/wallets/{id}/adjustments`, `POST /v1/wallets/{id}/purchases/{entry_id}/refund`
and `GET /v1/wallets/{id}/forecast`.

Corrections and refunds move money and credits on an operator's word: credits:admin, like
grants and settings. The forecast is a read: credits:read, or the wallet's own user. Thin by
design: the services (app.services.corrections, app.services.forecasts) do the work.
"""

from __future__ import annotations

from typing import Any

from app.http import schemas
from app.http.api import WALLET_ROUTE, container, idempotency_key, make_blueprint, operation, reply

bp = make_blueprint("corrections", "Corrections, refunds and the runway forecast")


@operation(bp, f"{WALLET_ROUTE}/adjustments", "POST",
           body=schemas.AdjustmentRequestSchema, response=(201, schemas.CreditResultSchema),
           errors=(401, 402, 403, 404, 409, 503), idempotent=True)
def post_adjustment(body: dict[str, Any], wallet_id: str) -> Any:
    """Correct a balance (credits:admin): a positive `credits` adds a block (expiring at
    `expires_at` if given); a negative one draws like usage and answers 402 rather than take
    the wallet below zero. `reason` is shown in the wallet's history."""
    return reply(container().ledger.adjust(
        wallet_id, body["credits"], body["reason"], expires_at=body.get("expires_at"),
        idempotency_key=idempotency_key()))


@operation(bp, f"{WALLET_ROUTE}/purchases/<int:entry_id>/refund", "POST",
           body=schemas.RefundRequestSchema, response=(201, schemas.RefundResultSchema),
           errors=(401, 403, 404, 409, 503), idempotent=True)
def post_refund(body: dict[str, Any], wallet_id: str, entry_id: int) -> Any:
    """Refund a sold pack (credits:admin), named by its purchase entry: its unused credits
    leave as a `void` entry. `invoice` says what happens to the money: `reduced` (a wholly
    unused pack of Kinde's open period: Kinde invoices one pack fewer) or `credit_note_due`
    (issue a credit note for `refunded_amount` in Kinde; `kinde-credits report refunds`).
    409 `not_refundable` (not a purchase, or nothing left), `already_refunded`, or
    `credits_held` (open holds need the pack's credits: settle them first)."""
    return reply(container().ledger.refund(wallet_id, entry_id, body["reason"],
                                           idempotency_key=idempotency_key()))


@operation(bp, f"{WALLET_ROUTE}/forecast", "GET",
           response=(200, schemas.ForecastSchema), errors=(401, 403, 404, 503))
def get_forecast(wallet_id: str) -> dict[str, Any]:
    """The runway: pace over the last 7 days (30 when 7 hold too little), days left, when the
    credits run out, pace by feature, credits that expire unused before then, and the bundle
    that would last about a month. The dashboard shows the same figures."""
    return container().ledger.forecast(wallet_id)
