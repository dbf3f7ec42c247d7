"""Local mode only: the service's own JWKS, so its tokens and webhooks can be verified."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> ResponseReturnValue:
    keyring = current_app.extensions["kinde_credits"].keyring
    if keyring is None:  # with Kinde, keys come from Kinde's JWKS, never from us
        return jsonify(error={"code": "not_found", "message": "no local keys: using Kinde"}), 404
    response = jsonify(keyring.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
