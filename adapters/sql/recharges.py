"""SQL repository for auto-recharge purchases (see app.services.recharge)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from adapters.sql import schema as t
from adapters.sql.store import register_repository

_r = t.recharges.c


class SqlRechargeRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, recharge_id: str, wallet_id: str, bundle: str, credits: int, price: str,
            currency: str, day: str, now: datetime) -> None:
        self.conn.execute(insert(t.recharges).values(
            id=recharge_id, wallet_id=wallet_id, bundle=bundle, credits=credits, price=price,
            currency=currency, status="pending", day=day, created_at=now,
        ))

    def in_flight(self, wallet_id: str) -> bool:
        return self.conn.execute(
            select(_r.id).where(_r.wallet_id == wallet_id, _r.status == "pending").limit(1)
        ).first() is not None

    def count_on_day(self, wallet_id: str, day: str) -> int:
        return int(self.conn.execute(
            select(func.count()).where(_r.wallet_id == wallet_id, _r.day == day)
        ).scalar_one())

    def billable_count(self, wallet_id: str, bundle: str) -> int:
        """Purchases of a bundle to invoice: all but those whose charge failed."""
        return int(self.conn.execute(
            select(func.count()).where(
                _r.wallet_id == wallet_id, _r.bundle == bundle, _r.status != "failed"
            )
        ).scalar_one())

    def mark_invoiced(self, wallet_id: str, bundle: str, before: datetime, now: datetime) -> int:
        return self.conn.execute(
            update(t.recharges)
            .where(_r.wallet_id == wallet_id, _r.bundle == bundle, _r.status == "pending",
                   _r.created_at <= before)
            .values(status="invoiced", settled_at=now)
        ).rowcount

    def fail_pending(self, wallet_id: str, reason: str, now: datetime) -> int:
        return self.conn.execute(
            update(t.recharges)
            .where(_r.wallet_id == wallet_id, _r.status == "pending")
            .values(status="failed", failure_reason=reason[:500], settled_at=now)
        ).rowcount


register_repository("recharges", SqlRechargeRepository)
