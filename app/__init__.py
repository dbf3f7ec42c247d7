"""kinde-credits: a prepaid-credits wallet service for SaaS products that bill with Kinde.

`create_app()` is the Flask application factory; the wiring lives in `app.bootstrap`. Imports
are inside the factory so that importing `app.domain` never drags in Flask or SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.bootstrap import Container
    from app.settings import Settings


# Blueprint modules (each exposes `bp`), registered in this order.
BLUEPRINT_MODULES = [
    "app.http.health",
    "app.http.wellknown",
    "app.http.metrics",
    "app.http.wallets",
    "app.http.holds",
    "app.http.catalog",
    "app.http.wallet_settings",
    "app.http.corrections",
    "app.http.reports",
    "app.http.budgets",
    "app.http.docs",
    "app.http.webhooks",
    "app.http.dashboard_link",
    "app.http.dashboard",
]


def create_app(settings: Settings | None = None, container: Container | None = None) -> Flask:
    import importlib

    from flask import Flask
    from flask_smorest import Blueprint as ApiBlueprint

    from app.bootstrap import build_container
    from app.http.docs import init_api
    from app.settings import Settings

    if container is None:
        container = build_container(settings or Settings.from_env())
    app = Flask(__name__)
    app.extensions["kinde_credits"] = container
    api = init_api(app)  # OpenAPI + docs (flask-smorest) and JSON errors for every status
    for module in BLUEPRINT_MODULES:
        bp = importlib.import_module(module).bp
        # flask-smorest blueprints register through the Api so they appear in /openapi.json.
        (api.register_blueprint if isinstance(bp, ApiBlueprint) else app.register_blueprint)(bp)
    return app
