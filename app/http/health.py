"""Liveness and readiness: `GET /healthz` answers only when the database does."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    container = current_app.extensions["kinde_credits"]
    operations = container.operations
    if not operations.database_answers():
        return jsonify(status="unavailable", database="unreachable"), 503
    return jsonify(
        status="ok",
        database=operations.database(),
        mode="local" if container.settings.local_mode else "kinde",
    )
