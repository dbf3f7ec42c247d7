"""SQL repositories for the webhook inbox (`webhook_events`) and meter readings.

Importing this module registers them on every `SqlUnitOfWork` as `uow.inbox` and `uow.meters`
(see `adapters.sql.store.register_repository`), so they share the unit's connection and
transaction with the wallet changes an event causes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from adapters.sql import schema as t
from adapters.sql.store import register_repository
from app.services.inbox_ports import InboxEvent, InboxStatus
from app.services.ports import DuplicateKey

# Declarative `__table__` is typed as a FromClause; these are Tables (for insert/update typing).
_EVENTS = cast(Table, t.webhook_events)
_METERS = cast(Table, t.meter_readings)
_E = _EVENTS.c
_M = _METERS.c
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
    return InboxEvent(
        event_id=row.event_id,
        webhook_id=row.webhook_id,
        type=row.type,
        status=row.status,
        payload=payload if isinstance(payload, dict) else {},
        park_reason=row.park_reason,
        wallet_id=row.wallet_id,
        customer_id=row.customer_id,
        attempts=row.attempts,
        received_at=row.received_at,
        processed_at=row.processed_at,
    )


class SqlInboxRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def get(self, event_id: str, *, lock: bool = False) -> InboxEvent | None:
        stmt = select(*_EVENT_COLUMNS).where(_E.event_id == event_id)
        if lock and self.dialect == "postgresql":
            # SQLite needs no row lock: BEGIN IMMEDIATE already serialises all writers.
            stmt = stmt.with_for_update()
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


class SqlMeterReadingRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None:
        return self.conn.execute(
            select(_M.last_value).where(
                _M.customer_id == customer_key,
                _M.feature_code == feature_code,
                _M.period_key == period_key,
            )
        ).scalar_one_or_none()

    def reading(
        self, customer_key: str, feature_code: str, period_key: str
    ) -> tuple[int, datetime] | None:
        row = self.conn.execute(
            select(_M.last_value, _M.updated_at).where(
                _M.customer_id == customer_key,
                _M.feature_code == feature_code,
                _M.period_key == period_key,
            )
        ).first()
        return (int(row.last_value), row.updated_at) if row else None

    def record(
        self, customer_key: str, feature_code: str, period_key: str, value: int, now: datetime
    ) -> None:
        values = {
            "customer_id": customer_key,
            "feature_code": feature_code,
            "period_key": period_key,
            "last_value": value,
            "updated_at": now,
        }
        stmt: Any
        if self.dialect == "postgresql":
            stmt = postgresql.insert(_METERS).values(**values)
        else:
            stmt = sqlite.insert(_METERS).values(**values)
        # GREATEST/MAX in the upsert: even a racing writer can never lower the running total.
        greatest = func.greatest if self.dialect == "postgresql" else func.max
        stmt = stmt.on_conflict_do_update(
            index_elements=["customer_id", "feature_code", "period_key"],
            set_={
                "last_value": greatest(_M.last_value, stmt.excluded.last_value),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        self.conn.execute(stmt)


register_repository("inbox", SqlInboxRepository)
register_repository("meters", SqlMeterReadingRepository)
