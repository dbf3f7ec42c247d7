"""Team budgets on org wallets and the spend pre-check.

- `PUT /v1/wallets/{org_id}/members/{user_id}/budget` (admin): caps per member.
- `GET /v1/wallets/{org_id}/members` (read): each member's spend today and this month, by
  feature, with caps. A signed-in member without the admin scope sees only their own row.
- `GET /v1/wallets/{wallet_id}/check?feature=&quantity=[&member=]` (read): would this usage be
  allowed now? Nothing is written.

`spending_member` is the one rule for who spends: a user token spending from its org's wallet
spends as its own `sub`; an M2M caller names the member (or no one).
"""

from __future__ import annotations

from typing import Any

from app.domain.principal import SCOPE_ADMIN
from app.http import budget_schemas as schemas
from app.http.api import WALLET_ROUTE, container, idempotency_key, make_blueprint, operation, reply
from app.http.auth import current_principal
from app.http.errors import ApiError
from app.services.budgets import BudgetService

bp = make_blueprint("budgets", "Team budgets: per-member caps on org wallets, spend pre-check")


def spending_member(wallet_id: str, named: str | None) -> str | None:
    """Who spends: a user token on its org's wallet is that user; M2M names the member."""
    principal = current_principal()
    if principal.is_user and wallet_id.startswith("org_"):
        if named is not None and named != principal.subject:
            raise ApiError(403, "forbidden",
                           "a user token spends as its own user: leave member out, or an "
                           "M2M token may name another member")
        return principal.subject
    # M2M, or a user on their own wallet (where naming a member is refused with 422).
    return named


def _service() -> BudgetService:
    return BudgetService(container().ledger)


@operation(bp, f"{WALLET_ROUTE}/members/<user_id>/budget", "PUT",
           body=schemas.BudgetRequestSchema, response=(200, schemas.BudgetResultSchema),
           errors=(401, 403, 404, 409, 503), idempotent=True)
def put_budget(body: dict[str, Any], wallet_id: str, user_id: str) -> Any:
    """Cap what one member (a Kinde user, kp_...) may spend from an org wallet per UTC day
    and/or month. Usage and holds past a cap are refused with 402 member_budget_exceeded.
    `null` removes a cap; an omitted field keeps its current value."""
    return reply(_service().set_budget(wallet_id, user_id, body,
                                       idempotency_key=idempotency_key()))


@operation(bp, f"{WALLET_ROUTE}/members", "GET",
           response=(200, schemas.MembersSchema), errors=(401, 403, 404, 503))
def get_members(wallet_id: str) -> dict[str, Any]:
    """Each member's spend today and this month (UTC), by feature, with caps and open holds.

    Members are listed once they have a budget, spend this month or an open hold. A user token
    without credits:admin sees only its own row."""
    principal = current_principal()
    only = None
    if principal.is_user and not principal.has_scope(SCOPE_ADMIN):
        only = principal.subject
    return _service().members(wallet_id, only=only)


@operation(bp, f"{WALLET_ROUTE}/check", "GET",
           query=schemas.CheckQuerySchema, response=(200, schemas.CheckResultSchema),
           errors=(401, 403, 404, 503))
def check(wallet_id: str, feature: str, quantity: int, member: str | None = None) -> Any:
    """Would `quantity` units of `feature` be allowed now? Takes open holds, the overdraft
    limit and the member's budget into account, exactly as a debit would; writes nothing.
    Grey out a button or plan a job with it; the debit itself still decides."""
    return _service().check(wallet_id, feature, quantity, spending_member(wallet_id, member))
