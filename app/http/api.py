"""Plumbing shared by the `/v1` blueprints: the blueprint factory, `Idempotency-Key`, replies.

Views stay thin (parse, authorize, call a service, render): parsing is flask-smorest's
`@bp.arguments`, authorization is `app.http.auth`, rendering is `@bp.response` plus `reply()`
for the write outcomes that services return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from flask import current_app, request
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser, abort
from werkzeug.routing import BaseConverter

from app.bootstrap import Container
from app.http.auth import authenticate_and_authorize
from app.http.errors import ApiError
from app.http.schemas import HOLD_ID_PATTERN, WALLET_ID_PATTERN, ErrorSchema
from app.services.ledger import Outcome

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY = 255

BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]

IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "in": "header",
    "name": IDEMPOTENCY_HEADER,
    "required": False,
    "description": (
        "Makes the write safe to retry: the same key with the same body returns the first "
        "answer (with `Idempotent-Replayed: true`); with another body it is 409 "
        "idempotency_conflict. Scoped to the wallet."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
}


_ERROR_DESCRIPTIONS = {
    401: "unauthorized: missing or refused access token",
    402: "insufficient_credits (error.needed, error.available) or, for a member of an org "
         "wallet, member_budget_exceeded (error.needed, error.available_to_member)",
    403: "forbidden: the token lacks the scope",
    404: "not_found: no such wallet or hold, or not yours",
    409: "idempotency_conflict (Idempotency-Key reused with another body) or hold_not_open",
    503: "unavailable: signing keys cannot be fetched; retry",
}


def doc_errors(*statuses: int) -> dict[str, Any]:
    """`responses` for `@bp.doc`: the error statuses a route can answer, as ErrorSchema."""
    return {
        str(status): {
            "description": _ERROR_DESCRIPTIONS.get(status, "refused"),
            "content": {"application/json": {"schema": ErrorSchema}},
        }
        for status in statuses
    }


class WalletIdConverter(BaseConverter):
    """Matching ids in the route makes a malformed id a plain 404, like a wallet out of reach,
    and puts the real shape into the OpenAPI document."""

    regex = WALLET_ID_PATTERN


class HoldIdConverter(BaseConverter):
    regex = HOLD_ID_PATTERN


def register_converters(api: Api) -> None:
    """Make `<wallet_id:...>` and `<hold_id:...>` usable in routes; call before blueprints."""
    for name, converter in (("wallet_id", WalletIdConverter), ("hold_id", HoldIdConverter)):
        api._app.url_map.converters[name] = converter
        api.register_converter(
            converter,
            lambda conv: {"type": "string", "pattern": f"^{conv.regex}$"},
        )


class JsonErrorParser(FlaskParser):
    """webargs parser whose unreadable-JSON answer is 422 `invalid_request`, like every other
    unusable body (the contract has one code for it; webargs would say 400)."""

    def _handle_invalid_json_error(self, error: Any, req: Any, *args: Any,
                                   **kwargs: Any) -> NoReturn:
        abort(422, exc=error, messages={"json": ["request body is not valid JSON"]})

    def _raw_load_json(self, req: Any) -> Any:
        try:
            data = super()._raw_load_json(req)
        except RecursionError:
            abort(422, messages={"json": ["request body is nested too deeply"]})
        if not _is_unicode_text(data):
            abort(422, messages={"json": ["request body holds text that is not valid Unicode"]})
        return data


def _is_unicode_text(value: Any) -> bool:
    """JSON can carry strings that are not Unicode text (a lone "\\ud800"); the database
    driver would fail on them with a 500, so they are refused while parsing instead. Walked
    with an explicit stack: a deeply nested body must not exhaust the call stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = JsonErrorParser()


def make_blueprint(name: str, description: str) -> ApiBlueprint:
    """A flask-smorest blueprint whose every request is authenticated first."""
    bp = ApiBlueprint(name, __name__, description=description)
    bp.before_request(authenticate_and_authorize)
    return bp


def container() -> Container:
    return current_app.extensions["kinde_credits"]


def idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422, "invalid_request",
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
        )
    return key


def reply(outcome: Outcome) -> tuple[dict[str, Any], int, Mapping[str, str]]:
    """A service write outcome as (body, status, headers) for `@bp.response`."""
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else {}
    return outcome.body, outcome.status, headers
