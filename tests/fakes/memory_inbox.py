"""In-memory webhook inbox and meter readings on top of `MemoryStore`, for unit tests of the
webhook service.

`MemoryWebhookStore(write)` gives a unit of work with `wallets`, `idempotency` (from the inner
MemoryStore), `inbox`, `meters` and `billing` (the agreement cache); all are copied on enter and
swapped in on commit under the inner store's writer lock, so a unit is all or nothing, like the
SQL store.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from app.services.inbox_ports import InboxEvent, InboxStatus
from app.services.outbox_ports import AgreementInfo
from app.services.ports import DuplicateKey
from tests.fakes.memory_store import MemoryStore, MemoryUnitOfWork


class MemoryInbox:
    def __init__(self, events: dict[str, InboxEvent], raw: dict[str, str]) -> None:
        self.events = events
        self.raw = raw

    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        return self.events.get(event_id)

    def webhook_id_taken(self, webhook_id: str) -> bool:
        return any(e.webhook_id == webhook_id for e in self.events.values())

    def add(self, event_id: str, webhook_id: str | None, event_type: str, payload: str,
            raw_body: str, now: datetime) -> None:
        import json

        if event_id in self.events or (webhook_id and self.webhook_id_taken(webhook_id)):
            raise DuplicateKey(event_id)
        self.events[event_id] = InboxEvent(
            event_id=event_id, webhook_id=webhook_id, type=event_type, status="received",
            payload=json.loads(payload), park_reason=None, wallet_id=None, customer_id=None,
            attempts=0, received_at=now, processed_at=None,
        )
        self.raw[event_id] = raw_body

    def finish(self, event_id: str, status: InboxStatus, *, reason: str | None,
               wallet_id: str | None, customer_id: str | None, now: datetime) -> None:
        e = self.events[event_id]
        self.events[event_id] = replace(
            e, status=status, park_reason=reason, wallet_id=wallet_id, customer_id=customer_id,
            attempts=e.attempts + 1, processed_at=None if status == "parked" else now,
        )

    def search(self, *, status: str | None = None, wallet_id: str | None = None,
               event_type: str | None = None, customer_id: str | None = None,
               after: tuple[datetime, str] | None = None, limit: int = 100) -> list[InboxEvent]:
        rows = sorted(self.events.values(), key=lambda e: (e.received_at, e.event_id))
        out = [
            e for e in rows
            if (status is None or e.status == status)
            and (wallet_id is None or e.wallet_id == wallet_id)
            and (event_type is None or e.type == event_type)
            and (customer_id is None or e.customer_id == customer_id)
            and (after is None or (e.received_at, e.event_id) > after)
        ]
        return out[:limit]

    def count(self, status: str | None = None) -> int:
        return sum(1 for e in self.events.values() if status is None or e.status == status)


class MemoryMeters:
    def __init__(self, readings: dict[tuple[str, str, str], int],
                 raised: dict[tuple[str, str, str], datetime]) -> None:
        self.readings = readings
        # When each reading was last raised (kept beside the values the tests read).
        self.raised = raised

    def reading(self, customer_key: str, feature_code: str,
                period_key: str) -> tuple[int, datetime] | None:
        key = (customer_key, feature_code, period_key)
        if key not in self.readings:
            return None
        return self.readings[key], self.raised.get(key, datetime.min.replace(tzinfo=UTC))

    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None:
        return self.readings.get((customer_key, feature_code, period_key))

    def record(self, customer_key: str, feature_code: str, period_key: str, value: int,
               now: datetime) -> None:
        key = (customer_key, feature_code, period_key)
        if value >= self.readings.get(key, value):
            self.raised[key] = now
        self.readings[key] = max(value, self.readings.get(key, value))


class MemoryBilling:
    """The agreement cache part of `BillingRepository` (what the webhook service uses)."""

    def __init__(self, agreements: dict[str, AgreementInfo]) -> None:
        self.agreements = agreements

    def agreement(self, agreement_id: str) -> AgreementInfo | None:
        return self.agreements.get(agreement_id)

    def save_agreement(self, info: AgreementInfo) -> None:
        self.agreements[info.id] = info


class MemoryWebhookUnitOfWork:
    def __init__(self, store: MemoryWebhookStore, write: bool) -> None:
        self.store = store
        self.inner: MemoryUnitOfWork = store.ledger_store(write)

    def __enter__(self) -> Self:
        self.inner.__enter__()
        self.wallets = self.inner.wallets
        self.idempotency = self.inner.idempotency
        self._events = copy.copy(self.store.events)
        self._raw = copy.copy(self.store.raw)
        self._readings = copy.copy(self.store.readings)
        self._agreements = copy.copy(self.store.agreements)
        self._raised = copy.copy(self.store.raised)
        self.inbox = MemoryInbox(self._events, self._raw)
        self.meters = MemoryMeters(self._readings, self._raised)
        self.billing = MemoryBilling(self._agreements)
        return self

    def commit(self) -> None:
        self.inner.commit()
        self.store.events = self._events
        self.store.raw = self._raw
        self.store.readings = self._readings
        self.store.agreements = self._agreements
        self.store.raised = self._raised

    def rollback(self) -> None:
        self.inner.rollback()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.inner.__exit__(exc_type, exc, tb)


class MemoryWebhookStore:
    """Callable like SqlStore; `ledger_store` is the inner MemoryStore (wallets, keys)."""

    def __init__(self) -> None:
        self.ledger_store = MemoryStore()
        self.events: dict[str, InboxEvent] = {}
        self.raw: dict[str, str] = {}
        self.readings: dict[tuple[str, str, str], int] = {}
        self.agreements: dict[str, AgreementInfo] = {}
        self.raised: dict[tuple[str, str, str], datetime] = {}

    def __call__(self, write: bool) -> Any:
        return MemoryWebhookUnitOfWork(self, write)
