"""`GET /metrics` in the Prometheus text format; the figures come from `MetricsService`,
read from the database at scrape time.

The figures are business-wide (wallets, total balance, arrears), and the listener also serves
customers' browsers, so a scrape is answered only with `Authorization: Bearer <METRICS_TOKEN>`
(compared in constant time) when that setting is set, and only to a loopback peer when it is
not. The peer is the socket's address (`REMOTE_ADDR` as the WSGI server saw it), never a
header a client can write (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.domain.hosts import is_loopback
from app.http.errors import BEARER_CHALLENGE, ApiError

bp = Blueprint("metrics", __name__)


def _peer() -> str | None:
    """The address of the socket's other end, before any proxy middleware rewrote it."""
    original = request.environ.get("werkzeug.proxy_fix.orig") or {}
    peer = original.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR")
    return peer if isinstance(peer, str) else None


def _bearer_matches(expected: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Bytes, so a non-ASCII header cannot make compare_digest raise.
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8"))


def check_scraper(metrics_token: str | None) -> None:
    """Raise the refusal for this request, or return when it may read the figures."""
    if metrics_token is not None:
        if not _bearer_matches(metrics_token):
            raise ApiError(401, "unauthorized",
                           "metrics need Authorization: Bearer <METRICS_TOKEN>",
                           headers={"WWW-Authenticate": BEARER_CHALLENGE})
    elif not is_loopback(_peer()):
        raise ApiError(403, "forbidden",
                       "metrics answer only loopback clients; set METRICS_TOKEN to scrape "
                       "them from elsewhere with Authorization: Bearer <METRICS_TOKEN>")


@bp.get("/metrics")
def metrics() -> Response:
    check_scraper(current_app.extensions["kinde_credits"].settings.metrics_token)
    snapshot = current_app.extensions["kinde_credits"].metrics.snapshot()
    registry = CollectorRegistry()
    rows = Gauge("kinde_credits_outbox_rows", "Outbox rows by status", ["status"],
                 registry=registry)
    for name, count in snapshot.outbox_counts.items():
        rows.labels(status=name).set(count)
    Gauge("kinde_credits_outbox_dead_rows", "Dead-lettered outbox rows",
          registry=registry).set(snapshot.outbox_dead)
    Gauge("kinde_credits_outbox_oldest_pending_seconds", "Age of the oldest pending row",
          registry=registry).set(snapshot.oldest_pending_seconds)
    totals = snapshot.totals
    Gauge("kinde_credits_wallets", "Wallets", registry=registry).set(totals.wallets)
    Gauge("kinde_credits_balance_total", "Sum of all wallet balances (credits)",
          registry=registry).set(totals.balance)
    Gauge("kinde_credits_arrears_total", "Sum of all arrears (credits)",
          registry=registry).set(totals.arrears)
    Gauge("kinde_credits_webhooks_parked", "Kinde events parked until they can apply",
          registry=registry).set(totals.parked_webhooks)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
