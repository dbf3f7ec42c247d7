"""Plumbing shared by the `/v1` blueprints: the blueprint factory, `Idempotency-Key`, replies.

Views stay thin (parse, authorize, call a service, render): `@operation` declares a route once
(its path, the scope `app.http.auth` checks, the body or query flask-smorest parses, the
success schema and the documented errors), and `reply()` renders the write outcomes that
services return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, NoReturn, TypeVar

import marshmallow as ma
from flask import current_app, request
from flask_smorest import Api, Blueprint
from webargs.core import is_json, missing
from webargs.flaskparser import FlaskParser, abort
from werkzeug.routing import BaseConverter

from app.bootstrap import Container
from app.domain.text import text_problem
from app.http.auth import Requirement, authenticate_and_authorize, requires
from app.http.errors import ApiError
from app.http.schemas import HOLD_ID_PATTERN, WALLET_ID_PATTERN, ErrorSchema
from app.http.strict_json import DuplicateKey
from app.services.ledger import Outcome

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY = 255

# The path prefix of every wallet route; the converter makes a malformed id a plain 404.
WALLET_ROUTE = "/v1/wallets/<wallet_id:wallet_id>"

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

    def __init__(self) -> None:
        super().__init__()
        self._schemas: dict[type[ma.Schema], ma.Schema] = {}

    def _get_schema(self, argmap: Any, req: Any) -> ma.Schema:
        # flask-smorest hands over the schema class, and webargs would build an instance (which
        # deep-copies every field) on each request. Our schemas keep no per-request state
        # (marshmallow 4 has no context), so one instance per class serves every request.
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas.setdefault(argmap, argmap())
            return schema
        return super()._get_schema(argmap, req)

    def _handle_invalid_json_error(self, error: Any, req: Any, *args: Any,
                                   **kwargs: Any) -> NoReturn:
        abort(422, exc=error, messages={"json": ["request body is not valid JSON"]})

    def _raw_load_json(self, req: Any) -> Any:
        # Read through the app's JSON provider (app.http.strict_json), not webargs' own
        # json.loads, so a duplicate key is refused here for every route.
        if not is_json(req.mimetype):
            return missing
        try:
            data = _read_json(req.get_data(cache=True))
        except DuplicateKey as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        except RecursionError:
            abort(422, messages={"json": ["request body is nested too deeply"]})
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                raise  # webargs answers it through _handle_invalid_json_error
            # Python refuses to convert integers of more than 4,300 digits (a ValueError
            # that is not a JSONDecodeError); no field takes a number anywhere near that long.
            abort(422, messages={"json": ["request body holds a number too long to use"]})
        if not _is_storable_text(data):
            abort(422, messages={"json": [UNSTORABLE_TEXT]})
        return data

    def load_querystring(self, req: Any, schema: Any) -> Any:
        if not all(_is_storable_text(v) for v in req.args.values()):
            abort(422, messages={"query": [UNSTORABLE_TEXT]})
        return super().load_querystring(req, schema)


def _read_json(body: bytes) -> Any:
    """A request body as JSON through the app's provider (`StrictJSONProvider`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # As webargs does: an undecodable body is invalid JSON (answered by the parser).
        raise json.JSONDecodeError(f"not UTF-8: {exc.reason}", doc="", pos=exc.start) from exc
    return current_app.json.loads(text)


UNSTORABLE_TEXT = ("request holds text that cannot be stored: a NUL character (\\u0000) or "
                   "an unpaired surrogate (not valid Unicode)")


def is_storable(text: str) -> bool:
    """Text PostgreSQL can store (and SQLite keeps as sent): valid Unicode without NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_storable_text(value: Any) -> bool:
    """JSON can carry strings that are not Unicode text (a lone "\\ud800") or hold NUL
    ("\\u0000"), which PostgreSQL's text columns refuse: the driver would fail with a 500,
    maybe part-way through a batch, so they are refused while parsing instead, on every
    database alike. Walked with an explicit stack: a deeply nested body must not exhaust
    the call stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_storable(item):
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


View = TypeVar("View", bound=Callable[..., Any])


def operation(
    bp: ApiBlueprint,
    rule: str,
    method: Literal["GET", "POST", "PUT"],
    *,
    scope: Requirement,
    response: tuple[int, Any],
    errors: tuple[int, ...],
    body: Any = None,
    body_required: bool = True,
    query: Any = None,
    idempotent: bool = False,
) -> Callable[[View], View]:
    """Declare one `/v1` operation: route, required scope, parsed body or query, success
    schema, and its OpenAPI entry (bearer security, the `Idempotency-Key` header for an
    `idempotent` write, the error statuses it can answer).

    Applies flask-smorest's decorators in the one order every route used by hand (route,
    `requires`, arguments, response, doc), so the OpenAPI document is the same as written out.
    `body` is parsed as the view's first argument; `query` fields arrive as keyword arguments.
    """
    status, schema = response
    doc: dict[str, Any] = {"security": BEARER_SECURITY}
    if idempotent:
        doc["parameters"] = [IDEMPOTENCY_PARAMETER]
    doc["responses"] = doc_errors(*errors)

    def declare(view: View) -> View:
        declared = bp.response(status, schema)(bp.doc(**doc)(view))
        if query is not None:
            declared = bp.arguments(query, location="query", as_kwargs=True)(declared)
        if body is not None:
            declared = bp.arguments(body, required=body_required)(declared)
        # `requires` sits right under the route, outermost of the rest (see app.http.auth).
        registered: View = bp.route(rule, methods=[method])(requires(scope)(declared))
        return registered

    return declare


def container() -> Container:
    return current_app.extensions["kinde_credits"]


def idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if (why := _header_text_problem(key)) is not None:
        raise ApiError(
            422, "invalid_request",
            f"{IDEMPOTENCY_HEADER} {why}: keys may not hold control or bidi characters",
        )
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422, "invalid_request",
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
        )
    return key


def _header_text_problem(value: str) -> str | None:
    """`text_problem` for a header value. WSGI hands headers over as Latin-1, so a client's
    UTF-8 arrives as Latin-1 characters (U+202E as `â\x80®`, U+FEFF as a printable `ï»¿`,
    and harmless Cyrillic with C1 bytes in it): a value that is UTF-8 is judged as the text
    it encodes, any other value as its Latin-1 reading."""
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        text = value
    return text_problem(text)


def batch_record_key(header_key: str, index: int) -> str:
    """Record `index`'s key in a batch sent with `Idempotency-Key: header_key`.

    `<header>#<index>` while that fits the key column; a longer header is replaced by its
    SHA-256 (64 hex digits), so a 252-255 character header cannot overflow the column part-way
    through a batch, and two long headers still give different keys. Deterministic, so
    retrying the batch with the same header replays what succeeded.
    """
    derived = f"{header_key}#{index}"
    if len(derived) <= MAX_IDEMPOTENCY_KEY:
        return derived
    return f"{hashlib.sha256(header_key.encode()).hexdigest()}#{index}"


def reply(outcome: Outcome) -> tuple[dict[str, Any], int, Mapping[str, str]]:
    """A service write outcome as (body, status, headers) for `@bp.response`."""
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else {}
    return outcome.body, outcome.status, headers
