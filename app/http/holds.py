"""Holds: reserve credits for a long job, then capture the real amount or release them.

`POST /v1/wallets/{wallet_id}/holds` is authorized on the path's wallet like every wallet
route. Capture and release name only the hold, so reach is checked by the service against the
hold's wallet (`allowed_wallet`), inside the same look-up: a hold in a wallet out of reach is
404 exactly like one that does not exist. A user token settles only the holds it placed (the
access table's `users_settle_own_holds_only`); M2M tokens any hold in reach.
"""

from __future__ import annotations

from typing import Any

from flask import request

from app.domain.access import RULES
from app.http import schemas
from app.http.api import WALLET_ROUTE, container, idempotency_key, make_blueprint, operation, reply
from app.http.auth import current_principal
from app.http.budgets import spending_member

bp = make_blueprint("holds", "Holds: reserve credits, then capture or release them")


@operation(bp, f"{WALLET_ROUTE}/holds", "POST",
           body=schemas.HoldRequestSchema, response=(201, schemas.HoldResultSchema),
           errors=(401, 402, 403, 404, 409, 503), idempotent=True)
def place_hold(body: dict[str, Any], wallet_id: str) -> Any:
    """Reserve `credits` (or what `quantity` x `feature` costs) until captured, released or
    expired (`expires_in_seconds`, default 900). Lowers `available`, not `balance`."""
    outcome = container().ledger.place_hold(
        wallet_id,
        credits=body.get("credits"),
        feature_key=body.get("feature"),
        quantity=body.get("quantity"),
        expires_in_seconds=body["expires_in_seconds"],
        idempotency_key=idempotency_key(),
        member=spending_member(wallet_id, body.get("member")),
        placed_by=_user(),
    )
    return reply(outcome)


def _reachable(wallet_id: str) -> bool:
    return current_principal().can_reach_wallet(wallet_id)


def _user() -> str | None:
    """The signed-in user behind the request (None for machines)."""
    principal = current_principal()
    return principal.subject if principal.is_user else None


def _settling_user() -> str | None:
    """The user whose own holds are the only ones this settle may find, per the table."""
    rule = RULES[request.endpoint or ""]
    return _user() if rule.users_settle_own_holds_only else None


@operation(bp, "/v1/holds/<hold_id:hold_id>/capture", "POST",
           body=schemas.CaptureRequestSchema, body_required=False,
           response=(200, schemas.SettledHoldSchema), errors=(401, 403, 404, 409, 422, 503),
           idempotent=True)
def capture_hold(body: dict[str, Any], hold_id: str) -> Any:
    """Debit the hold: `credits` (at most the held amount) or, by default, all of it; the rest
    is freed. 409 `hold_not_open` if it was already captured, released or expired; 422
    `capture_exceeds_hold` (nothing changes, the hold stays open) for more than it holds."""
    outcome = container().ledger.capture_hold(
        hold_id,
        body.get("credits"),
        idempotency_key=idempotency_key(),
        allowed_wallet=_reachable,
        user=_settling_user(),
    )
    return reply(outcome)


@operation(bp, "/v1/holds/<hold_id:hold_id>/release", "POST",
           body=schemas.ReleaseRequestSchema, body_required=False,
           response=(200, schemas.SettledHoldSchema), errors=(401, 403, 404, 409, 503),
           idempotent=True)
def release_hold(body: dict[str, Any], hold_id: str) -> Any:
    """Free the held credits unused. 409 `hold_not_open` if no longer open."""
    del body  # nothing to read; parsed only so that unknown fields are refused
    outcome = container().ledger.release_hold(
        hold_id, idempotency_key=idempotency_key(), allowed_wallet=_reachable,
        user=_settling_user(),
    )
    return reply(outcome)
