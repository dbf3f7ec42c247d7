"""SQL meter readings (`meter_readings`), offered as `uow.meters`: the running total Kinde
reported for each customer, feature and billing period, which only ever rises.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, select

from adapters.sql import dialect
from adapters.sql import schema as t

# Declarative `__table__` is typed as a FromClause; this is a Table (for insert typing).
_METERS = cast(Table, t.meter_readings)
_M = _METERS.c


class SqlMeterReadingRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def last_value(self, customer_key: str, feature_code: str, period_key: str) -> int | None:
        return self.conn.execute(
            select(_M.last_value).where(
                _M.customer_id == customer_key,
                _M.feature_code == feature_code,
                _M.period_key == period_key,
            )
        ).scalar_one_or_none()

    def period_keys(self, customer_key: str, feature_code: str) -> list[str]:
        """The periods with a stored total for this wallet and feature, latest first."""
        rows = self.conn.execute(
            select(_M.period_key)
            .where(_M.customer_id == customer_key, _M.feature_code == feature_code)
            .order_by(_M.updated_at.desc())
            .limit(50)
        )
        return [r.period_key for r in rows]

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
        stmt = dialect.upsert(self.conn, _METERS).values(**values)
        # GREATEST/MAX in the upsert: even a racing writer can never lower the running total.
        stmt = stmt.on_conflict_do_update(
            index_elements=["customer_id", "feature_code", "period_key"],
            set_={
                "last_value": dialect.greatest(self.conn, _M.last_value, stmt.excluded.last_value),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        self.conn.execute(stmt)
