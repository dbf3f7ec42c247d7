"""Operator tools behind the CLI and the admin API: the outbox's state, dead-letter
requeueing, known customers, the revenue roll-forward.

The CLI and HTTP call these instead of running SQL or reaching into units of work themselves.
"""

from __future__ import annotations

from typing import Any

from app.services.outbox import outbox_status
from app.services.ports import (
    Clock,
    OperationsReader,
    OutboxMessage,
    StoreTotals,
    UnitOfWorkFactory,
)
from app.services.refund_report import refunds_report
from app.services.revenue import report_bounds, revenue_report


class OperationsService:
    def __init__(self, units: UnitOfWorkFactory, reader: OperationsReader,
                 clock: Clock) -> None:
        self._units = units
        self._reader = reader
        self._clock = clock

    def requeue_dead_outbox(self) -> int:
        """Send every dead-lettered outbox row again; returns how many."""
        with self._units(True) as uow:
            count = uow.outbox.requeue_dead(None, self._clock())
            uow.commit()
        return count

    def revenue_report(self, since: str | None, until: str | None) -> dict[str, Any]:
        """The revenue roll-forward for [since, until) (ISO dates; defaults: see
        `report_bounds`); `InvalidRequest` for bounds that make no period."""
        start, end = report_bounds(since, until, self._clock())
        return revenue_report(self._units, start, end)

    def refunds_report(self, since: str | None, until: str | None) -> dict[str, Any]:
        """The refunds made in [since, until) (same bounds as the revenue report)."""
        start, end = report_bounds(since, until, self._clock())
        return refunds_report(self._units, start, end)

    def outbox_status(self) -> dict[str, Any]:
        """`{"counts": {status: rows}, "oldest_pending_seconds": age}`."""
        return outbox_status(self._units, self._clock())

    def outbox_rows(self, status: str | None, limit: int) -> list[OutboxMessage]:
        with self._units(False) as uow:
            return uow.outbox.list(status, limit)

    def database(self) -> str:
        """The database's kind, for the health answer."""
        return self._reader.database()

    def database_answers(self) -> bool:
        """Readiness: whether the database answers now."""
        return self._reader.answers()

    def store_totals(self) -> StoreTotals:
        """Whole-store figures: wallets, balances, arrears, parked webhook events."""
        return self._reader.totals()

    def parked_webhook_count(self) -> int:
        """Kinde events waiting in the inbox until they can apply."""
        return self._reader.parked_webhook_count()

    def billing_customer_ids(self, limit: int) -> tuple[str, ...]:
        """A few billing customers of known wallets (whose plans `setup-kinde` checks)."""
        return self._reader.billing_customer_ids(limit)
