"""SQL reads behind `kinde-credits report revenue` (see app.services.reports)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection, func, select

from adapters.sql import schema as t
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
