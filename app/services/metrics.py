"""The figures behind `GET /metrics`, read from the database at scrape time.

Reading the database (not process memory) keeps the figures right with many web processes and
instances behind a load balancer. Rendering them (Prometheus text) is the HTTP layer's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services.operations import OperationsService
from app.services.ports import StoreTotals


@dataclass(frozen=True)
class MetricsSnapshot:
    outbox_counts: dict[str, int]  # rows by status
    oldest_pending_seconds: float
    totals: StoreTotals

    @property
    def outbox_dead(self) -> int:
        return self.outbox_counts.get("dead", 0)


class MetricsService:
    """The operator figures (`OperationsService`) read as one snapshot per scrape."""

    def __init__(self, operations: OperationsService) -> None:
        self._operations = operations

    def snapshot(self) -> MetricsSnapshot:
        status = self._operations.outbox_status()
        return MetricsSnapshot(
            outbox_counts=status["counts"],
            oldest_pending_seconds=status["oldest_pending_seconds"],
            totals=self._operations.store_totals(),
        )
