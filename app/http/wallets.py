"""`/v1/wallets/...` and `/v1/usage/batch`: balances, the ledger, usage and top-ups.

Thin by design: flask-smorest parses and documents, `app.http.auth` authenticates and checks
reach and scope (before the body is even parsed), `LedgerService` does the work in one
transaction, and the schemas render. Nothing here writes on an error: every refusal is raised
before or inside the service's unit of work, which then rolls back.
"""

from __future__ import annotations

from typing import Any

from app.domain.access import is_admin
from app.http import schemas
from app.http.api import (
    REPLAYED_HEADER,
    WALLET_ROUTE,
    batch_record_key,
    container,
    idempotency_key,
    make_blueprint,
    operation,
    reply,
)
from app.http.auth import authorize, current_principal
from app.http.budgets import spending_member
from app.http.errors import ApiError
from app.services.ledger import Outcome
from app.services.payment_standing import sell_pack

bp = make_blueprint("wallets", "Wallets: balances, ledger, usage and top-ups")


@operation(bp, WALLET_ROUTE, "GET",
           response=(200, schemas.WalletSchema), errors=(401, 403, 404, 503))
def get_wallet(wallet_id: str) -> dict[str, Any]:
    """A wallet: balance, available, holds, blocks and what the credits buy.

    A user reads their own wallet and their org's without any scope; a wallet with no credits
    yet reads as zero.
    """
    return container().ledger.get_wallet(wallet_id)


@operation(bp, f"{WALLET_ROUTE}/ledger", "GET",
           query=schemas.LedgerQuerySchema, response=(200, schemas.LedgerPageSchema),
           errors=(401, 403, 404, 503))
def get_ledger(wallet_id: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """Ledger entries, newest first; pass `next_cursor` back as `cursor` for the next page."""
    return container().ledger.ledger_page(wallet_id, limit=limit, cursor=cursor)


@operation(bp, f"{WALLET_ROUTE}/usage", "POST",
           body=schemas.UsageRequestSchema, response=(201, schemas.UsageResultSchema),
           errors=(401, 402, 403, 404, 409, 503), idempotent=True)
def record_usage(body: dict[str, Any], wallet_id: str) -> Any:
    """Debit credits for usage of a feature (credits:write); refused with 402 if short."""
    outcome = container().ledger.record_usage(
        wallet_id,
        body["feature"],
        body["quantity"],
        occurred_at=body.get("occurred_at"),
        idempotency_key=idempotency_key(),
        member=spending_member(wallet_id, body.get("member")),
    )
    return reply(outcome)


@operation(bp, "/v1/usage/batch", "POST",
           body=schemas.BatchRequestSchema, response=(200, schemas.BatchResponseSchema),
           errors=(401, 403, 503), idempotent=True)
def record_usage_batch(body: dict[str, Any]) -> Any:
    """Many usage records; each succeeds or fails alone (`status` per record).

    A record's own `idempotency_key` wins; otherwise an `Idempotency-Key` header gives record
    *i* the key `<header>#<i>` (with the header's SHA-256 hex instead of the header when that
    would exceed 255 characters), so retrying the whole batch replays what already succeeded.
    A record for a wallet out of the caller's reach fails with 404 `not_found`.
    """
    principal = current_principal()
    header_key = idempotency_key()
    records: list[dict[str, Any]] = body["records"]
    results: list[dict[str, Any] | None] = [None] * len(records)
    allowed: list[tuple[int, dict[str, Any]]] = []
    for index, record in enumerate(records):
        if not principal.can_reach_wallet(record["wallet_id"]):
            results[index] = {
                "index": index,
                "status": 404,
                "error": {"code": "not_found",
                          "message": "no such wallet, or it is not yours to see"},
            }
            continue
        if "idempotency_key" not in record and header_key:
            record = {**record, "idempotency_key": batch_record_key(header_key, index)}
        try:
            member = spending_member(record["wallet_id"], record.get("member"))
        except ApiError as exc:
            results[index] = {"index": index, "status": exc.status,
                              "error": {"code": exc.code, "message": exc.message}}
            continue
        record = {**record, "member": member}
        allowed.append((index, record))
    done = container().ledger.record_usage_batch([record for _, record in allowed])
    for (index, _), result in zip(allowed, done, strict=True):
        results[index] = {**result, "index": index}
    replayed = [r["replayed"] for r in results if r is not None and "replayed" in r]
    headers = {REPLAYED_HEADER: "true"} if replayed and all(replayed) else {}
    return {"results": results}, 200, headers


@operation(bp, f"{WALLET_ROUTE}/top-ups", "POST",
           body=schemas.TopUpRequestSchema, response=(201, schemas.CreditResultSchema),
           errors=(401, 402, 403, 404, 409, 503), idempotent=True)
def top_up(body: dict[str, Any], wallet_id: str) -> Any:
    """Add credits: `{bundle}` sells a catalog pack; `{credits, reason}` grants credits that
    were not sold (credits:admin). The first top-up creates the wallet.

    A sale invoiced through Kinde needs credits:write, or the wallet's own user (Kinde invoices
    that customer); it needs the wallet's Kinde billing customer (409 no_billing_customer) and
    is refused after a failed payment (402 payment_overdue) unless an admin makes it. A sale
    that is not invoiced (local mode, `SALES_PAID_ELSEWHERE=true`) needs credits:admin, like a
    grant: it gives credits and books revenue on the caller's word that the payment was taken
    elsewhere."""
    ledger = container().ledger
    key = idempotency_key()
    outcome: Outcome
    if "credits" in body:
        # A grant is free money: it needs more than a sale (access table, "top_up.grant").
        authorize("top_up.grant", wallet_id)
        outcome = ledger.grant(
            wallet_id,
            body["credits"],
            body["reason"],
            expires_after_days=body.get("expires_after_days"),
            idempotency_key=key,
        )
    else:
        # Nobody will be charged for a pack that is not invoiced: only an admin may record it.
        authorize("top_up.sale" if ledger.sales_are_invoiced() else "top_up.unbilled_sale",
                  wallet_id)
        outcome = sell_pack(ledger, container().sales, wallet_id, body["bundle"],
                            by_admin=is_admin(current_principal()), idempotency_key=key)
    return reply(outcome)
