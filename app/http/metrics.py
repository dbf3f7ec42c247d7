"""`GET /metrics` in the Prometheus text format; the figures come from `MetricsService`,
read from the database at scrape time.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
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
