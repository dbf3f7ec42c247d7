"""SQL webhook inbox (`webhook_events`), offered as `uow.inbox`.

It shares the unit of work's connection and transaction with the wallet changes an event
causes, so an event's effects and its inbox row commit together or not at all.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from adapters.sql import dialect
from adapters.sql import schema as t
from adapters.sql.rows import from_row
from app.services.ports import DuplicateKey, InboxEvent, InboxStatus

# Declarative `__table__` is typed as a FromClause; these are Tables (for insert/update typing).
_EVENTS = cast(Table, t.webhook_events)
_E = _EVENTS.c
_EVENT_COLUMNS = (
    _E.event_id,
    _E.webhook_id,
    _E.type,
    _E.status,
    _E.payload,
    _E.park_reason,
    _E.wallet_id,
    _E.customer_id,
    _E.attempts,
    _E.received_at,
    _E.processed_at,
)


def _event_from_row(row: Any) -> InboxEvent:
    try:
        payload = json.loads(row.payload)
    except (ValueError, RecursionError):  # never let one odd row stop the worker or the CLI
        payload = {}
    return from_row(InboxEvent, row, payload=payload if isinstance(payload, dict) else {})


class SqlInboxRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        stmt = select(*_EVENT_COLUMNS).where(_E.event_id == event_id)
        if lock:
            stmt = dialect.for_update(self.conn, stmt)
        row = self.conn.execute(stmt).first()
        return _event_from_row(row) if row else None

    def webhook_id_taken(self, webhook_id: str) -> bool:
        return (
            self.conn.execute(
                select(_E.event_id).where(_E.webhook_id == webhook_id).limit(1)
            ).first()
            is not None
        )

    def add(
        self,
        event_id: str,
        webhook_id: str | None,
        event_type: str,
        payload: str,
        raw_body: str,
        now: datetime,
    ) -> None:
        # A plain INSERT, not insert-or-ignore: on PostgreSQL a concurrent delivery of the same
        # event waits here on the primary key until the first commits, then fails, so exactly
        # one transaction goes on to apply the event.
        try:
            self.conn.execute(
                insert(_EVENTS).values(
                    event_id=event_id,
                    webhook_id=webhook_id,
                    type=event_type,
                    status="received",
                    payload=payload,
                    raw_body=raw_body,
                    attempts=0,
                    received_at=now,
                )
            )
        except IntegrityError as exc:
            raise DuplicateKey(f"webhook event {event_id}") from exc

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
        self.conn.execute(
            update(_EVENTS)
            .where(_E.event_id == event_id)
            .values(
                status=status,
                park_reason=reason,
                wallet_id=wallet_id,
                customer_id=customer_id,
                attempts=_E.attempts + 1,
                processed_at=None if status == "parked" else now,
            )
        )

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
        stmt = select(*_EVENT_COLUMNS)
        if status is not None:
            stmt = stmt.where(_E.status == status)
        if wallet_id is not None:
            stmt = stmt.where(_E.wallet_id == wallet_id)
        if event_type is not None:
            stmt = stmt.where(_E.type == event_type)
        if customer_id is not None:
            stmt = stmt.where(_E.customer_id == customer_id)
        if after is not None:
            at, event_id = after
            stmt = stmt.where(
                (_E.received_at > at) | ((_E.received_at == at) & (_E.event_id > event_id))
            )
        stmt = stmt.order_by(_E.received_at, _E.event_id).limit(limit)
        return [_event_from_row(r) for r in self.conn.execute(stmt)]

    def count(self, status: str | None = None) -> int:
        stmt = select(func.count()).select_from(_EVENTS)
        if status is not None:
            stmt = stmt.where(_E.status == status)
        return int(self.conn.execute(stmt).scalar_one())
