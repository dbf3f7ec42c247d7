"""SQL reads for the customer dashboard (`uow.dashboard`): credits used per UTC day and
feature, summed in the database so the chart costs one small result whatever the volume.

A day is when the usage happened (`occurred_at`, which the product may send), else when it was
recorded."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Connection, func, select

from adapters.sql import dialect
from adapters.sql import schema as t

_e = t.entries.c


class SqlDashboardRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def daily_usage(self, wallet_id: str, since: datetime) -> list[tuple[date, str | None, int]]:
        """(UTC day, feature, credits used) for usage and captured holds since `since`."""
        when = func.coalesce(_e.occurred_at, _e.created_at)
        day = dialect.utc_day(self.conn, when).label("day")
        rows = self.conn.execute(
            select(day, _e.feature, func.sum(_e.amount))
            .where(_e.wallet_id == wallet_id, _e.kind.in_(("usage", "capture")),
                   when >= since)
            .group_by(day, _e.feature)
        )
        out: list[tuple[date, str | None, int]] = []
        for value, feature, total in rows:
            as_date = value if isinstance(value, date) else date.fromisoformat(str(value))
            out.append((as_date, feature, -int(total)))
        return out
