"""Bearer-token authentication and wallet authorization for the `/v1` API.

Every `/v1` route runs `authenticate_and_authorize` as a blueprint `before_request`, i.e. BEFORE
flask-smorest parses the body, so a caller without a good token always gets 401 (never a 422
that would reveal the request shape), and a caller outside a wallet always gets 404 (never a 403
or 422 that would reveal that the wallet exists or what it accepts).

What each route needs is its row in `app.domain.access.RULES`, looked up by the Flask endpoint
name: a `/v1` route without a row is refused (fail closed). A view that does more than one
operation (a top-up that sells or grants) checks the one its body asks for with `authorize`.
This module only connects the table to the request.
"""

from __future__ import annotations

from flask import g, request

from app.domain.access import Decision, Rule, decide, rule_for
from app.domain.principal import Principal
from app.http.errors import ApiError, unauthorized

MAX_TOKEN_LENGTH = 16 * 1024  # far above any Kinde token; stops a multi-MB header early


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    if not header.strip():
        raise unauthorized(
            "missing access token: send 'Authorization: Bearer <token>'", invalid_token=False
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("access token is too long")
    return token


def current_principal() -> Principal:
    principal = g.get("principal")
    if principal is None:  # a view outside the authenticated blueprints asked for one
        raise unauthorized("not authenticated", invalid_token=False)
    return principal


def not_found(what: str = "wallet") -> ApiError:
    # Same words whether it does not exist or is out of reach: existence must not leak.
    return ApiError(404, "not_found", f"no such {what}, or it is not yours to see")


def forbidden(rule: Rule, principal: Principal, wallet_id: str | None) -> ApiError:
    need = rule.need_for(principal, wallet_id)
    if need.value.startswith("credits:"):
        return ApiError(403, "forbidden",
                        f"this needs the {need.value} scope (or a higher credits scope)")
    return ApiError(403, "forbidden", "this token may not do this")


def authorize(operation: str, wallet_id: str | None = None,
              principal: Principal | None = None) -> None:
    """Raise 404 or 403 unless the table lets the caller do `operation` (on `wallet_id`)."""
    principal = principal or current_principal()
    rule = rule_for(operation)
    if rule is None:
        raise ApiError(403, "forbidden", "this endpoint declares no access rule")
    decision = decide(rule, principal, wallet_id)
    if decision is Decision.NOT_FOUND:
        raise not_found()
    if decision is Decision.FORBIDDEN:
        raise forbidden(rule, principal, wallet_id)


def authenticate_and_authorize() -> None:
    """`before_request` for API blueprints: verify the token, then the route's row."""
    if request.method == "OPTIONS":
        return  # let Flask answer the automatic OPTIONS without credentials
    from flask import current_app

    if current_app.view_functions.get(request.endpoint or "") is None:
        return  # routing failed (404/405); the router's own error answers
    principal = current_app.extensions["kinde_credits"].access_verifier.verify(bearer_token())
    g.principal = principal
    wallet_id = (request.view_args or {}).get("wallet_id")
    authorize(request.endpoint or "", None if wallet_id is None else str(wallet_id), principal)
