"""SQL side of plan periods: the `plan_allotments` rows (exactly once per period, and each
period's bookkeeping), offered by the unit of work as `uow.plans`.

The agreement's current period itself is not kept here: it lives in `billing_agreements`
(`uow.billing`), the one cache of Kinde's agreements that usage reporting reads too.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update

from adapters.sql import dialect
from adapters.sql import schema as t
from adapters.sql.rows import from_row
from app.services.ports import AllotmentRecord

_a = t.plan_allotments.c


def _record(row: Any) -> AllotmentRecord:
    return from_row(AllotmentRecord, row)


class SqlPlanRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def claim(self, record: AllotmentRecord, now: datetime) -> bool:
        """Insert the period's row unless it exists; True when this call inserted it.

        ON CONFLICT DO NOTHING: on PostgreSQL a concurrent claim of the same key waits for the
        first transaction and then inserts nothing, so two grants can never both win.
        """
        ins = dialect.insert_ignore(self.conn, t.plan_allotments).values(
            wallet_id=record.wallet_id,
            agreement_id=record.agreement_id,
            period_start=record.period_start,
            plan_code=record.plan_code,
            period_end=record.period_end,
            credits=record.credits,
            block_id=record.block_id,
            created_at=now,
            status=record.status,
            final=record.final,
            check_at=record.check_at,
        )
        # RETURNING, not rowcount: psycopg's rowcount is not reliable for ON CONFLICT.
        inserted = self.conn.execute(ins.returning(_a.wallet_id))
        return inserted.first() is not None

    def set_block(self, record: AllotmentRecord, block_id: str) -> None:
        self.conn.execute(
            update(t.plan_allotments)
            .where(*self._key(record))
            .values(block_id=block_id)
        )

    def open_periods(self, wallet_id: str) -> list[AllotmentRecord]:
        rows = self.conn.execute(
            select(t.plan_allotments)
            .where(_a.wallet_id == wallet_id, _a.closed_at.is_(None))
            .order_by(_a.period_end, _a.period_start)
        )
        return [_record(r) for r in rows]

    def periods(self, wallet_id: str) -> list[AllotmentRecord]:
        rows = self.conn.execute(
            select(t.plan_allotments)
            .where(_a.wallet_id == wallet_id)
            .order_by(_a.period_start, _a.plan_code)
        )
        return [_record(r) for r in rows]

    def mark_ended(self, record: AllotmentRecord, now: datetime) -> None:
        self.conn.execute(
            update(t.plan_allotments)
            .where(*self._key(record), _a.ended_at.is_(None))
            .values(ended_at=now)
        )

    def close(self, record: AllotmentRecord, now: datetime) -> None:
        """The period is done: its end applied, what follows it handled (or nothing does)."""
        self.conn.execute(
            update(t.plan_allotments)
            .where(*self._key(record), _a.closed_at.is_(None))
            .values(closed_at=now, ended_at=func.coalesce(_a.ended_at, now))
        )

    def update(self, record: AllotmentRecord, *, period_end: datetime | None = None,
               status: str | None = None, check_at: datetime | None = None,
               attempts: int | None = None) -> None:
        values: dict[str, Any] = {}
        if period_end is not None:
            values["period_end"] = period_end
        if status is not None:
            values["status"] = status
        if check_at is not None or status is not None:
            values["check_at"] = check_at
        if attempts is not None:
            values["attempts"] = attempts
        if values:
            self.conn.execute(update(t.plan_allotments).where(*self._key(record))
                              .values(**values))

    def mark_final(self, wallet_id: str, agreement_id: str, final: bool = True) -> None:
        self.conn.execute(
            update(t.plan_allotments)
            .where(_a.wallet_id == wallet_id, _a.agreement_id == agreement_id,
                   _a.closed_at.is_(None))
            .values(final=final)
        )

    def due_wallets(self, now: datetime, limit: int) -> list[str]:
        """Wallets with a period whose end passed unapplied, the longest overdue first."""
        rows = self.conn.execute(
            select(_a.wallet_id, func.min(_a.period_end).label("due"))
            .where(_a.closed_at.is_(None), _a.ended_at.is_(None), _a.period_end <= now)
            .group_by(_a.wallet_id)
            .order_by("due", _a.wallet_id)
            .limit(limit)
        )
        return [r.wallet_id for r in rows]

    def provisional_due(self, now: datetime, limit: int) -> list[AllotmentRecord]:
        rows = self.conn.execute(
            select(t.plan_allotments)
            .where(_a.status == "provisional",
                   or_(_a.check_at.is_(None), _a.check_at <= now))
            .order_by(func.coalesce(_a.check_at, _a.created_at), _a.wallet_id)
            .limit(limit)
        )
        return [_record(r) for r in rows]

    def wallets_without_allotment(self, plan_codes: list[str], limit: int,
                                  skip: Collection[str] = ()) -> list[str]:
        """Wallets on a catalog plan whose current agreement has no allotment yet, leaving out
        `skip` (those backing off), so that waiting wallets never hide the others."""
        if not plan_codes:
            return []
        w = t.wallets.c
        granted = exists().where(
            and_(_a.wallet_id == w.id, _a.agreement_id == w.agreement_id)
        )
        rows = self.conn.execute(
            select(w.id)
            .where(w.agreement_id.is_not(None), w.plan_code.in_(plan_codes), ~granted,
                   w.id.not_in(list(skip)[:1000]))
            .order_by(w.id)
            .limit(limit)
        )
        return [r.id for r in rows]

    @staticmethod
    def _key(record: AllotmentRecord) -> tuple[Any, ...]:
        return (
            _a.wallet_id == record.wallet_id,
            _a.agreement_id == record.agreement_id,
            _a.period_start == record.period_start,
            _a.plan_code == record.plan_code,
        )
