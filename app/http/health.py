"""Liveness and readiness: `GET /healthz` answers only when the database does."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    container = current_app.extensions["kinde_credits"]
    try:
        with container.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return jsonify(status="unavailable", database="unreachable"), 503
    return jsonify(
        status="ok",
        database=container.store.dialect,
        mode="local" if container.settings.local_mode else "kinde",
    )
