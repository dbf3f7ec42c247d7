"""One error shape for every failure: `{"error": {"code": "...", "message": "..."}}`.

DESIGN.md makes the error body and its `code` a contract, so every path to an error answer goes
through here: our own `ApiError`, the ledger's `LedgerError`s, token failures, werkzeug's
`HTTPException`s (404 for an unknown URL, 405, 413, and the 500 Flask makes of an unhandled
exception) and flask-smorest/webargs validation errors (which arrive as `HTTPException`s with
`data["messages"]`). The handlers only render; they never write anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.domain.budgets import MemberBudgetExceeded
from app.domain.ledger import InsufficientCredits, LedgerError
from app.services.errors import OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_MESSAGE
from app.services.ledger import status_for
from app.services.ports import CommitOutcomeUnknown, KeySourceUnavailable, TokenError

log = logging.getLogger(__name__)

# Codes for statuses that werkzeug or flask-smorest raise; 400 and 422 are both a request we
# cannot use, which the contract calls `invalid_request`.
STATUS_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}

BEARER_CHALLENGE = 'Bearer realm="kinde-credits"'


class ApiError(Exception):
    """An answer the HTTP layer decides on itself (auth, reach, request shape)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> Response:
        """The one JSON error shape: `{"error": {"code", "message", ...extra}}`."""
        response = jsonify(error={"code": self.code, "message": self.message, **self.extra})
        response.status_code = self.status
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def unauthorized(message: str, *, invalid_token: bool = True) -> ApiError:
    """401 with the RFC 6750 challenge; `invalid_token` when a token was sent but refused."""
    challenge = BEARER_CHALLENGE
    if invalid_token:
        # error_description must stay inside a quoted-string: drop quotes and backslashes.
        safe = message.replace('"', "'").replace("\\", "")
        challenge += f', error="invalid_token", error_description="{safe}"'
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def ledger_error_response(exc: LedgerError) -> Response:
    extra: dict[str, Any] = {}
    if isinstance(exc, InsufficientCredits):
        # Clients show "needs 50, you have 12" and offer a top-up without parsing the message.
        extra = {"needed": exc.needed, "available": max(exc.available, 0)}
    elif isinstance(exc, MemberBudgetExceeded):
        extra = {"needed": exc.needed, "available_to_member": exc.available_to_member}
    return ApiError(status_for(exc), exc.code, exc.message, extra=extra).response()


def _summarise(messages: Any, prefix: str = "") -> list[str]:
    """webargs' nested {location: {field: [msg]}} as flat "field: msg" lines."""
    if isinstance(messages, Mapping):
        lines: list[str] = []
        for key, value in messages.items():
            # The location ("json", "query") is noise for a client; field paths are not.
            name = "" if key in ("json", "query", "querystring", "headers", "path",
                                 "view_args", "_schema") else str(key)
            lines.extend(_summarise(value, f"{prefix}.{name}" if prefix and name else
                                    (name or prefix)))
        return lines
    if isinstance(messages, list | tuple):
        out: list[str] = []
        for item in messages:
            out.extend(_summarise(item, prefix))
        return out
    return [f"{prefix}: {messages}" if prefix else str(messages)]


def http_exception_response(error: HTTPException) -> Response:
    status = error.code or 500
    code = STATUS_CODES.get(status, "error" if status < 500 else "internal_error")
    data = getattr(error, "data", None) or {}
    details = data.get("messages") or data.get("errors")
    if details:
        # A webargs/marshmallow validation failure: say which fields and why.
        message = "invalid request: " + "; ".join(_summarise(details))[:1000]
    elif status >= 500:
        # Never leak internals (exception text may hold SQL or data) to the client.
        message = "internal error; the request was not applied"
    else:
        message = (data.get("message") or error.description or error.name or "error")
    extra = {"details": details} if details else None
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() != "content-type"  # keep Allow (405) and the like, not the HTML type
    }
    headers.update(data.get("headers") or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", BEARER_CHALLENGE)
    return ApiError(status, code, message, headers=headers, extra=extra).response()


def register(app: Flask) -> None:
    """Install the handlers; call after flask-smorest's `Api(app)` so ours replace its own."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return exc.response()

    @app.errorhandler(LedgerError)
    def _ledger_error(exc: LedgerError) -> Response:
        return ledger_error_response(exc)

    @app.errorhandler(TokenError)
    def _token_error(exc: TokenError) -> Response:
        # TokenError.message never contains the token itself, so it is safe to echo.
        return unauthorized(f"access token refused: {exc.message}").response()

    @app.errorhandler(KeySourceUnavailable)
    def _no_keys(exc: KeySourceUnavailable) -> Response:
        log.warning("cannot verify access tokens: %s", exc)
        return ApiError(
            503,
            "unavailable",
            "cannot verify access tokens right now (signing keys unavailable); retry shortly",
            headers={"Retry-After": "5"},
        ).response()

    @app.errorhandler(CommitOutcomeUnknown)
    def _outcome_unknown(exc: CommitOutcomeUnknown) -> Response:
        # Never "not applied": the balance may have moved. The same key makes a retry safe.
        log.error("commit outcome unknown: %s", exc)
        return ApiError(503, OUTCOME_UNKNOWN, OUTCOME_UNKNOWN_MESSAGE,
                        headers={"Retry-After": "1"}).response()

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        return http_exception_response(error)
