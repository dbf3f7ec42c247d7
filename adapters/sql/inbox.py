"""SQL webhook inbox (`webhook_events`), offered as `uow.inbox`.

It shares the unit of work's connection and transaction with the wallet changes an event
causes, so an event's effects and its inbox row commit together or not at all.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter

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


# Statements built once (building one costs more than executing it; every delivery runs these).
_INSERT_EVENT = insert(_EVENTS)
_FINISH = (
    update(_EVENTS)
    .where(_E.event_id == bindparam("e_id"))
    .values(status=bindparam("e_status"), park_reason=bindparam("e_reason"),
            wallet_id=bindparam("e_wallet"), customer_id=bindparam("e_customer"),
            attempts=_E.attempts + 1, processed_at=bindparam("e_processed"))
)
_WEBHOOK_ID_TAKEN = select(_E.event_id).where(_E.webhook_id == bindparam("webhook_id")).limit(1)


@cache
def _get_statement(locked: bool) -> Select[Any]:
    stmt = select(*_EVENT_COLUMNS).where(_E.event_id == bindparam("event_id"))
    return stmt.with_for_update() if locked else stmt


@cache
def _search_statement(status: bool, wallet: bool, event_type: bool, customer: bool,
                      after: bool) -> Select[Any]:
    """The search's shape for the filters given; their values are bound at execution."""
    stmt = select(*_EVENT_COLUMNS)
    if status:
        stmt = stmt.where(_E.status == bindparam("status"))
    if wallet:
        stmt = stmt.where(_E.wallet_id == bindparam("wallet_id"))
    if event_type:
        stmt = stmt.where(_E.type == bindparam("event_type"))
    if customer:
        stmt = stmt.where(_E.customer_id == bindparam("customer_id"))
    if after:
        at: BindParameter[datetime] = bindparam("after_at")
        after_id: BindParameter[str] = bindparam("after_id")
        stmt = stmt.where(
            (_E.received_at > at) | ((_E.received_at == at) & (_E.event_id > after_id)))
    return stmt.order_by(_E.received_at, _E.event_id).limit(bindparam("limit"))


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
        stmt = _get_statement(lock and dialect.locks_rows(self.conn))
        row = self.conn.execute(stmt, {"event_id": event_id}).first()
        return _event_from_row(row) if row else None

    def webhook_id_taken(self, webhook_id: str) -> bool:
        return (
            self.conn.execute(_WEBHOOK_ID_TAKEN, {"webhook_id": webhook_id}).first()
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
            self.conn.execute(_INSERT_EVENT, {
                "event_id": event_id, "webhook_id": webhook_id, "type": event_type,
                "status": "received", "payload": payload, "raw_body": raw_body, "attempts": 0,
                "received_at": now})
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
        self.conn.execute(_FINISH, {
            "e_id": event_id, "e_status": status, "e_reason": reason, "e_wallet": wallet_id,
            "e_customer": customer_id, "e_processed": None if status == "parked" else now})

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
        stmt = _search_statement(status is not None, wallet_id is not None,
                                 event_type is not None, customer_id is not None,
                                 after is not None)
        params: dict[str, Any] = {"status": status, "wallet_id": wallet_id,
                                  "event_type": event_type, "customer_id": customer_id,
                                  "limit": limit}
        if after is not None:
            params["after_at"], params["after_id"] = after
        return [_event_from_row(r) for r in self.conn.execute(stmt, params)]

    def count(self, status: str | None = None) -> int:
        stmt = select(func.count()).select_from(_EVENTS)
        if status is not None:
            stmt = stmt.where(_E.status == status)
        return int(self.conn.execute(stmt).scalar_one())
