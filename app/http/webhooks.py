"""`POST /webhooks/kinde`: Kinde's webhook deliveries (a compact RS256 JWT as the body).

Thin on purpose: bound the body, verify the signature, hand the claims to the webhook service,
render its answer. Status codes and bodies are a contract (DESIGN.md):
200 `{"status": "processed"|"duplicate"|"ignored"|"parked", ...}`; 400 not a JWT; 401 signature,
algorithm or key refused; 413 over 1 MiB; 503 when keys or the database are unavailable (so
Kinde retries), and for nothing else: a verified event with malformed contents is stored as
`parked` (200). No error body carries SQL or exception text. Nothing is written for a refused
delivery: verification happens before the service is called.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from app.services.ports import KeySourceUnavailable, MalformedToken, TokenError

log = logging.getLogger("kinde_credits.webhooks")

bp = Blueprint("webhooks", __name__)

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB; Kinde's events are a few KB


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"code": code, "message": message}), status


def _read_capped() -> bytes | None:
    """The body, or None when it is over the cap. Reads at most one byte past the cap whatever
    Content-Length said (or when it is absent, as with chunked transfer), so a lying client
    can't make us buffer an unbounded body."""
    try:
        body = request.stream.read(MAX_BODY_BYTES + 1)
        # An app-wide MAX_CONTENT_LENGTH of the same size stops the first read exactly at the
        # cap; one more byte tells "exactly 1 MiB" from "more".
        if len(body) == MAX_BODY_BYTES and request.stream.read(1):
            return None
    except RequestEntityTooLarge:
        return None
    return body if len(body) <= MAX_BODY_BYTES else None


@bp.post("/webhooks/kinde")
def kinde_webhook() -> ResponseReturnValue:
    # Any Content-Type is read the same way: application/jwt now, application/json for older
    # deliveries (the verifier unwraps a JSON string literal). Never parsed as JSON first.
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", "webhook body is over 1 MiB")
    body = _read_capped()
    if body is None:
        return _error(413, "payload_too_large", "webhook body is over 1 MiB")

    container = current_app.extensions["kinde_credits"]
    try:
        claims = container.webhook_verifier.verify(body)
    except MalformedToken as exc:
        return _error(400, "invalid_request", exc.message)
    except TokenError as exc:
        return _error(401, "unauthorized", exc.message)
    except KeySourceUnavailable:
        log.warning("webhook refused: signing keys unavailable")
        return _error(503, "unavailable", "signing keys are unavailable; retry later")

    try:
        # The verifier read the body as UTF-8 already; "replace" only guards that promise.
        receipt = container.webhooks.receive(
            claims, body.decode("utf-8", "replace").strip(), request.headers.get("webhook-id")
        )
    except Exception:
        # Only infrastructure failures get here (the database is unreachable): whatever a
        # verified event contains, the service stores it (parked when malformed). Answer
        # non-200 so Kinde delivers again later; the details go to the log, never the body.
        log.exception("could not store webhook")
        return _error(503, "unavailable", "the event could not be stored; retry later")
    return jsonify(receipt.body()), 200
