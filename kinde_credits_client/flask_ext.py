"""`@requires_credits(feature)`: charge credits for a Flask view of the product's own app.

Before the view runs, the credits are held (402 if the wallet or the member's budget cannot
cover them, and the view does not run); after it, the hold is captured when the view answered
below 400, and released when it raised or answered an error. Flask is imported only when a
decorated view runs, so `kinde_credits_client` works without Flask installed.

Which wallet and member: `wallet_id=` and `member=` callables, or by default
`flask.g.credits_wallet_id` and `flask.g.credits_member`, set by the product's own auth (for a
signed-in user of an org: the org code and the user's Kinde id). Which client: `client=`, or
the one `init_app(app, client)` stored on the app.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kinde_credits_client.client import CreditsClient, Hold
from kinde_credits_client.errors import CreditsError, InsufficientCredits, MemberBudgetExceeded

logger = logging.getLogger("kinde_credits_client")

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "kinde_credits_client"


def init_app(app: Any, client: CreditsClient) -> None:
    """Make `client` the default for `@requires_credits` views of this Flask app."""
    app.extensions[EXTENSION] = client


def current_hold() -> Hold | None:
    """The hold of the running decorated view: set `.capture_credits` to charge less."""
    from flask import g

    return cast(Hold | None, g.get("credits_hold"))


def requires_credits(
    feature: str,
    quantity: int | Callable[[], int] = 1,
    *,
    wallet_id: Callable[[], str] | None = None,
    member: Callable[[], str | None] | None = None,
    client: CreditsClient | Callable[[], CreditsClient] | None = None,
    expires_in_seconds: int | None = None,
) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app, g, jsonify, make_response

            credits_client = _client(client, current_app)
            wallet = wallet_id() if wallet_id is not None else g.get("credits_wallet_id")
            if not wallet:
                raise RuntimeError(
                    "requires_credits: no wallet; pass wallet_id= or set "
                    "flask.g.credits_wallet_id before the view runs"
                )
            who = member() if member is not None else g.get("credits_member")
            units = quantity() if callable(quantity) else quantity
            try:
                hold = credits_client.hold(wallet, feature=feature, quantity=units, member=who,
                                           expires_in_seconds=expires_in_seconds)
            except (InsufficientCredits, MemberBudgetExceeded) as refused:
                return make_response(jsonify(error={**refused.details, "code": refused.code,
                                                    "message": refused.message}), 402)
            g.credits_hold = hold
            try:
                response = make_response(view(*args, **kwargs))
            except BaseException:
                _release_quietly(hold)
                raise
            if response.status_code >= 400:
                _release_quietly(hold)
            else:
                _capture_or_log(hold)
            return response

        return cast(F, wrapper)

    return decorator


def _client(given: CreditsClient | Callable[[], CreditsClient] | None, app: Any
            ) -> CreditsClient:
    if isinstance(given, CreditsClient):
        return given
    if given is not None:
        return given()
    found = app.extensions.get(EXTENSION)
    if found is None:
        raise RuntimeError("requires_credits: pass client= or call init_app(app, client)")
    return cast(CreditsClient, found)


def _capture_or_log(hold: Hold) -> None:
    """Charge for the work the view did. Its response is ready, so a refused capture must not
    turn it into a 500: more than was held is charged as the whole hold, and a hold that can no
    longer be captured (it outlived `expires_in_seconds`) is logged for the operator."""
    try:
        hold.capture(hold.capture_credits)
        return
    except CreditsError as refused:
        if refused.code == "capture_exceeds_hold" and hold.capture_credits is not None:
            try:
                hold.capture(None)
                return
            except CreditsError as again:
                refused = again
        logger.error("requires_credits: hold %s was not captured (%s): %s",
                     hold.hold_id, refused.code, refused.message)


def _release_quietly(hold: Hold) -> None:
    # The view's own outcome matters more; an unreleased hold expires by itself.
    with contextlib.suppress(CreditsError):
        hold.release()
