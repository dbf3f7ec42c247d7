"""`GET /metrics` in the Prometheus text format, read from the database at scrape time.

Reading the database (not process memory) keeps the figures right with many web processes
and instances behind a load balancer.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from adapters.sql import schema as t
from app.services.outbox import outbox_status

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    container = current_app.extensions["kinde_credits"]
    registry = CollectorRegistry()
    status = outbox_status(container.store, container.clock())
    rows = Gauge("kinde_credits_outbox_rows", "Outbox rows by status", ["status"],
                 registry=registry)
    for name, count in status["counts"].items():
        rows.labels(status=name).set(count)
    Gauge("kinde_credits_outbox_dead_rows", "Dead-lettered outbox rows",
          registry=registry).set(status["counts"].get("dead", 0))
    Gauge("kinde_credits_outbox_oldest_pending_seconds", "Age of the oldest pending row",
          registry=registry).set(status["oldest_pending_seconds"])
    with container.store.engine.connect() as conn:
        wallets, balance, arrears = conn.execute(
            select(func.count(), func.coalesce(func.sum(t.wallets.c.balance), 0),
                   func.coalesce(func.sum(t.wallets.c.arrears), 0))
        ).one()
        parked = conn.execute(
            select(func.count()).where(t.webhook_events.c.status == "parked")
        ).scalar_one()
    Gauge("kinde_credits_wallets", "Wallets", registry=registry).set(wallets)
    Gauge("kinde_credits_balance_total", "Sum of all wallet balances (credits)",
          registry=registry).set(balance)
    Gauge("kinde_credits_arrears_total", "Sum of all arrears (credits)",
          registry=registry).set(arrears)
    Gauge("kinde_credits_webhooks_parked", "Kinde events parked until they can apply",
          registry=registry).set(parked)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
