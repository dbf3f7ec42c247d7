"""Ports for the webhook inbox and the meter readings, and the unit of work that offers them.

The SQL adapter (`adapters/sql/inbox.py`) registers these as `uow.inbox` and `uow.meters` on
the store's unit of work (`uow.billing`, the agreement cache, comes from adapters/sql/outbox.py);
unit tests use `tests/fakes/memory_inbox.py`. All live in the same transaction as the wallet
changes, which is what lets an event's effects and its inbox row commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from app.services.outbox_ports import BillingRepository
from app.services.ports import UnitOfWork

InboxStatus = Literal["received", "processed", "ignored", "parked"]


@dataclass(frozen=True)
class InboxEvent:
    """One stored webhook delivery. The rows with a `wallet_id` are that wallet's history."""

    event_id: str
    webhook_id: str | None
    type: str
    status: str
    payload: dict[str, Any]
    park_reason: str | None  # why parked; for processed rows, a note (e.g. "app-source")
    wallet_id: str | None
    customer_id: str | None
    attempts: int
    received_at: datetime
    processed_at: datetime | None


class InboxRepository(Protocol):
    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        """One event; `lock` holds its row until the unit ends (PostgreSQL FOR UPDATE), so two
        workers retrying one parked event apply it once."""

    def webhook_id_taken(self, webhook_id: str) -> bool: ...

    def add(
        self,
        event_id: str,
        webhook_id: str | None,
        event_type: str,
        payload: str,
        raw_body: str,
        now: datetime,
    ) -> None:
        """Insert with status `received`. A concurrent insert of the same event raises
        `DuplicateKey` (the primary key decides who applies it)."""

    def finish(
        self,
        event_id: str,
        status: InboxStatus,
        *,
        reason: str | None,
        wallet_id: str | None,
        customer_id: str | None,
        now: datetime,
    ) -> None:
        """Set the outcome of one attempt (counting it)."""

    def search(
        self,
        *,
        status: str | None = None,
        wallet_id: str | None = None,
        event_type: str | None = None,
        customer_id: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> list[InboxEvent]:
        """Oldest first by (received_at, event_id); `after` is the keyset cursor."""

    def count(self, status: str | None = None) -> int: ...


class MeterReadingRepository(Protocol):
    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None: ...

    def reading(
        self, customer_key: str, feature_code: str, period_key: str
    ) -> tuple[int, datetime] | None:
        """The stored total and when it was last raised."""

    def record(
        self, customer_key: str, feature_code: str, period_key: str, value: int, now: datetime
    ) -> None:
        """Store `value` as the period's running total (callers only ever raise it)."""


class AgreementDirectory(Protocol):
    """What the webhook service asks Kinde (adapters.kinde_api.KindeManagementClient): a
    billing customer's agreements, each with `id`, `plan_code`, `current_period_start`,
    `current_period_end`, `expires_on` and `feature_codes`."""

    def list_agreements(self, customer_id: str) -> list[Any]: ...


class WebhookUnitOfWork(UnitOfWork, Protocol):
    inbox: InboxRepository
    meters: MeterReadingRepository
    # The agreement cache (current billing periods), shared with usage reporting.
    billing: BillingRepository
