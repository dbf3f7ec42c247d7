"""Bearer-token authentication and wallet authorization for the `/v1` API.

Every `/v1` route runs `authenticate_and_authorize` as a blueprint `before_request`, i.e. BEFORE
flask-smorest parses the body, so a caller without a good token always gets 401 (never a 422
that would reveal the request shape), and a caller outside a wallet always gets 404 (never a 403
or 422 that would reveal that the wallet exists or what it accepts).

Each view declares the least it needs with `@requires("read" | "write" | "admin" | "any")`; a
`/v1` view without a declaration is refused (fail closed). The rules themselves live in
`app.domain.principal.Principal`; this module only connects them to the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from flask import current_app, g, request

from app.domain.principal import ACTION_SCOPES, Action, Principal
from app.http.errors import ApiError, unauthorized

# "owner": the wallet's own user (or a member of its org) with no scope, else credits:admin;
# for settings customers may change themselves (their alerts).
Requirement = Literal["read", "write", "admin", "any", "owner"]
F = TypeVar("F", bound=Callable[..., object])

_REQUIREMENT_ATTR = "_kinde_credits_requires"
MAX_TOKEN_LENGTH = 16 * 1024  # far above any Kinde token; stops a multi-MB header early


def requires(requirement: Requirement) -> Callable[[F], F]:
    """Declare what a view needs. Put it right under `@bp.route` (outermost of the rest)."""

    def mark(view: F) -> F:
        setattr(view, _REQUIREMENT_ATTR, requirement)
        return view

    return mark


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


def forbidden(action: Action) -> ApiError:
    scope = ACTION_SCOPES[action]
    return ApiError(
        403, "forbidden", f"this needs the {scope} scope (or a higher credits scope)"
    )


def require_scope(principal: Principal, action: Action) -> None:
    if not principal.required_scope_met(action):
        raise forbidden(action)


def require_wallet(principal: Principal, wallet_id: str, action: Action) -> None:
    """404 when out of reach (checked first), then 403 when the scope is too low."""
    if not principal.can_reach_wallet(wallet_id):
        raise not_found()
    require_scope(principal, action)


def authenticate_and_authorize() -> None:
    """`before_request` for API blueprints: verify the token, then reach and scope."""
    if request.method == "OPTIONS":
        return  # let Flask answer the automatic OPTIONS without credentials
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return  # routing failed (404/405); the router's own error answers
    requirement: Requirement | None = getattr(view, _REQUIREMENT_ATTR, None)
    principal = current_app.extensions["kinde_credits"].access_verifier.verify(bearer_token())
    g.principal = principal
    if requirement is None:
        raise ApiError(403, "forbidden", "this endpoint declares no access rule")
    if requirement == "any":
        return
    wallet_id = (request.view_args or {}).get("wallet_id")
    if requirement == "owner":
        if wallet_id is None or not principal.can_reach_wallet(str(wallet_id)):
            raise not_found()
        if not principal.is_user:
            require_scope(principal, "admin")
        return
    if wallet_id is not None:
        require_wallet(principal, str(wallet_id), requirement)
    else:
        require_scope(principal, requirement)
