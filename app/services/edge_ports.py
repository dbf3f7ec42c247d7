"""Ports of the operator-facing services (metrics, operations): small and self-contained.

Kept apart from app/services/ports.py for now; each is reached through a typed factory or
object handed over by the composition root, never through an untyped unit-of-work attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from app.services.outbox_ports import OutboxRepository


@dataclass(frozen=True)
class StoreTotals:
    """Whole-store figures an operator watches: wallets, credits owed both ways, stuck events."""

    wallets: int
    balance: int
    arrears: int
    parked_webhooks: int


class OperationsReader(Protocol):
    """Read-only questions about the whole store (no wallet lock, no transaction to keep)."""

    def totals(self) -> StoreTotals: ...

    def parked_webhook_count(self) -> int: ...

    def billing_customer_ids(self, limit: int) -> tuple[str, ...]:
        """Up to `limit` Kinde billing customer ids of known wallets."""
        ...


class OutboxUnit(Protocol):
    """A unit of work that reaches the outbox; a write one is committed by its user."""

    @property
    def outbox(self) -> OutboxRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


OutboxUnitFactory = Callable[[bool], OutboxUnit]
