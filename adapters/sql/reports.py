"""SQL reads behind `kinde-credits report revenue` (see app.services.reports).

Registered as the `reports` repository of a unit of work, so the report's queries run in one
read transaction: one snapshot (REPEATABLE READ on PostgreSQL, one transaction on SQLite).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection, func, select

from adapters.sql import schema as t
from adapters.sql.store import register_repository
from app.services.reports import PurchasedBlock


def purchased_blocks(conn: Connection) -> list[PurchasedBlock]:
    b, e = t.blocks.c, t.entries.c
    expired = dict(
        conn.execute(
            select(e.reason, -func.sum(e.amount)).where(e.kind == "expiry").group_by(e.reason)
        ).all()
    )
    rows = conn.execute(
        select(b.id, b.currency, b.cost_amount, b.original, b.remaining, b.created_at).where(
            b.cost_amount.is_not(None), b.currency.is_not(None)
        )
    )
    return [
        PurchasedBlock(
            currency=r.currency,
            cost=Decimal(r.cost_amount),
            original=r.original,
            remaining=r.remaining,
            expired=int(expired.get(r.id, 0)),
            created_at=r.created_at,
        )
        for r in rows
    ]


def granted_credits(conn: Connection) -> int:
    b = t.blocks.c
    return int(
        conn.execute(
            select(func.coalesce(func.sum(b.original), 0)).where(b.cost_amount.is_(None))
        ).scalar_one()
    )


class SqlRevenueReadings:
    """The report's reads on one unit of work's connection (and so on one snapshot)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def purchased_blocks(self) -> list[PurchasedBlock]:
        return purchased_blocks(self.conn)

    def granted_credits(self) -> int:
        return granted_credits(self.conn)


register_repository("reports", SqlRevenueReadings)
