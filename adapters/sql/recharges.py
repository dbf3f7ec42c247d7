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
            currency: str, day: str, now: datetime, *, auto: bool = True) -> None:
        self.conn.execute(insert(t.recharges).values(
            id=recharge_id, wallet_id=wallet_id, bundle=bundle, auto=auto, credits=credits,
            price=price, currency=currency, status="pending", day=day, created_at=now,
        ))

    def in_flight(self, wallet_id: str) -> bool:
        """An auto-recharge whose invoice Kinde has not confirmed yet."""
        return self.conn.execute(
            select(_r.id).where(_r.wallet_id == wallet_id, _r.status == "pending",
                                _r.auto.is_(True)).limit(1)
        ).first() is not None

    def count_on_day(self, wallet_id: str, day: str) -> int:
        """Auto-recharges on one UTC day (sales through the API do not count)."""
        return int(self.conn.execute(
            select(func.count()).where(_r.wallet_id == wallet_id, _r.day == day,
                                       _r.auto.is_(True))
        ).scalar_one())

    def billable_count(self, wallet_id: str, bundle: str) -> int:
        """Purchases of a bundle to invoice: every one, since its credits were granted."""
        return int(self.conn.execute(
            select(func.count()).where(_r.wallet_id == wallet_id, _r.bundle == bundle)
        ).scalar_one())

    def mark_invoiced(self, wallet_id: str, bundle: str, before: datetime, now: datetime) -> int:
        return self.conn.execute(
            update(t.recharges)
            .where(_r.wallet_id == wallet_id, _r.bundle == bundle, _r.status == "pending",
                   _r.created_at <= before)
            .values(status="invoiced", settled_at=now)
        ).rowcount


register_repository("recharges", SqlRechargeRepository)
