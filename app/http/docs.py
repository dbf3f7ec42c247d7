"""The OpenAPI document (`GET /openapi.json`) and the browsable docs page (`GET /docs`).

`init_api(app)` sets up flask-smorest, whose document is generated from the marshmallow schemas
in `app.http.schemas` and is the truth about the API. The docs page is rendered on the server
from that same document, with no script at all and nothing from a CDN: it shares its origin
with the customer dashboard, so a third-party script there could read dashboard sessions.
`/docs/swagger` (once Swagger UI from a CDN) redirects to it; load `/openapi.json` into any
OpenAPI tool to try calls. Both send a CSP that allows only the page's own inline style, and
forbid framing.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect, url_for
from flask_smorest import Api
from werkzeug.wrappers import Response as WerkzeugResponse

from app.http import errors
from app.http.api import register_converters
from app.http.schemas import ErrorSchema
from app.http.strict_json import StrictJSONProvider

OPENAPI_INFO_DESCRIPTION = (
    "Prepaid credits for SaaS products that bill with Kinde. Send "
    "`Authorization: Bearer <Kinde access token>`. Users read their own wallet (and their "
    "org's) without a scope; M2M tokens need credits:read < credits:write < credits:admin. "
    "Every error is `{\"error\": {\"code\", \"message\"}}`."
)
MAX_BODY_BYTES = 1024 * 1024


class CreditsApi(Api):
    """flask-smorest's Api, documenting our error shape instead of its default one."""

    ERROR_SCHEMA = ErrorSchema


def init_api(app: Flask) -> Api:
    """Configure flask-smorest and the JSON error handlers; returns the Api to register with."""
    # Request bodies are read through this provider: it refuses duplicate keys.
    app.json = StrictJSONProvider(app)
    app.config.update(
        API_TITLE="kinde-credits",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    # Bodies are small JSON; refuse anything huge before reading it (413, as JSON).
    # (Flask's default config holds the key with None, so setdefault would not do.)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    api = CreditsApi(
        app,
        spec_kwargs={
            "info": {"description": OPENAPI_INFO_DESCRIPTION},
            "security": [{"bearerAuth": []}],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    register_converters(api)
    errors.register(app)  # after Api(): replaces flask-smorest's own HTTPException handler
    return api


bp = Blueprint("docs", __name__)

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
          "padding:0 1rem}section{border-top:1px solid #ddd;padding:.5rem 0}"
          "code{background:#f4f4f4;padding:.1rem .3rem}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
DOCS_HEADERS: dict[str, str] = {
    # Nothing but the page's own inline style (by its hash): no script, image, font or frame.
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@bp.after_request
def _docs_headers(response: Response) -> Response:
    response.headers.update(DOCS_HEADERS)
    return response


def _render(spec: dict[str, Any]) -> str:
    esc = html.escape
    rows: list[str] = []
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            statuses = ", ".join(sorted(op.get("responses", {})))
            summary = op.get("summary") or ""
            description = op.get("description") or ""
            rows.append(
                f"<section><h3><code>{esc(method.upper())} {esc(path)}</code></h3>"
                f"<p><strong>{esc(summary)}</strong></p><p>{esc(description)}</p>"
                f"<p>Responses: {esc(statuses)}</p></section>"
            )
    info = spec.get("info", {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(info.get('title', 'API'))} API</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{esc(info.get('title', 'API'))} v{esc(str(info.get('version', '')))}</h1>"
        f"<p>{esc(info.get('description', ''))}</p>"
        "<p><a href='/openapi.json'>OpenAPI document</a> (load it into any OpenAPI tool "
        "to try calls)</p>"
        + "".join(rows)
        + "</body></html>"
    )


@bp.get("/docs")
def docs_page() -> Response:
    api: Api = current_app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
    return Response(_render(api.spec.to_dict()), mimetype="text/html")


@bp.get("/docs/swagger")
def swagger_moved() -> WerkzeugResponse:
    """Swagger UI loaded its script from a CDN; the same origin serves the dashboard."""
    return redirect(url_for("docs.docs_page"), code=301)
