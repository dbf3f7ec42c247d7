"""SQL repository for bundle purchases: auto-recharges and sales (see app.services.recharge)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, bindparam, exists, func, insert, select, update

from adapters.sql import schema as t

_r = t.recharges.c
_w = t.wallets.c
# Built once (building a statement costs more than executing it): these run in debits and reads.
_IN_FLIGHT = select(_r.id).where(_r.wallet_id == bindparam("wallet_id"), _r.status == "pending",
                                 _r.auto.is_(True), _r.refunded_at.is_(None)).limit(1)
_COUNT_ON_DAY = select(func.count()).where(_r.wallet_id == bindparam("wallet_id"),
                                           _r.day == bindparam("day"), _r.auto.is_(True))
_LATEST_AUTO = (
    select(t.recharges)
    .where(_r.wallet_id == bindparam("wallet_id"), _r.auto.is_(True))
    .order_by(_r.created_at.desc(), _r.id.desc())
    .limit(1)
)


_DEFER = (
    update(t.wallets)
    .where(_w.id == bindparam("wallet_id"), _w.auto_recharge_deferred_at.is_(None))
    .values(auto_recharge_deferred_at=bindparam("now"))
)
_CLEAR_DEFERRED = (
    update(t.wallets)
    .where(_w.id == bindparam("wallet_id"), _w.auto_recharge_deferred_at.is_not(None))
    .values(auto_recharge_deferred_at=None)
)


class SqlRechargeRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def defer(self, wallet_id: str, now: datetime) -> None:
        """A purchase was due but waited for the one in flight (the first wait is kept)."""
        self.conn.execute(_DEFER, {"wallet_id": wallet_id, "now": now})

    def clear_deferred(self, wallet_id: str) -> None:
        self.conn.execute(_CLEAR_DEFERRED, {"wallet_id": wallet_id})

    def deferred_ready(self, limit: int) -> list[str]:
        """Wallets whose purchase waited and that have none in flight now, longest wait
        first."""
        pending = exists().where(_r.wallet_id == _w.id, _r.status == "pending",
                                 _r.auto.is_(True))
        return list(self.conn.execute(
            select(_w.id).where(_w.auto_recharge_deferred_at.is_not(None), ~pending)
            .order_by(_w.auto_recharge_deferred_at, _w.id).limit(limit)
        ).scalars())

    def add(self, recharge_id: str, wallet_id: str, bundle: str, credits: int, price: str,
            currency: str, day: str, now: datetime, *, auto: bool = True,
            meter: str | None = None, block_id: str | None = None) -> None:
        """Record a purchase; `meter` is the usage-report key that invoices it (default: the
        pack's sale code, "bundle:<key>"); `block_id` the block of credits it sold."""
        self.conn.execute(insert(t.recharges).values(
            id=recharge_id, wallet_id=wallet_id, bundle=bundle, auto=auto, credits=credits,
            price=price, currency=currency, status="pending", day=day, created_at=now,
            meter=meter or f"bundle:{bundle}", block_id=block_id,
        ))

    def mark_refunded(self, recharge_id: str, now: datetime) -> None:
        """Refunded before Kinde invoiced it: no longer counted, pending or in flight."""
        self.conn.execute(update(t.recharges).where(_r.id == recharge_id)
                          .values(refunded_at=now))

    def in_flight(self, wallet_id: str) -> bool:
        """An auto-recharge whose invoice Kinde has not confirmed yet (nor given up on)."""
        return self.conn.execute(_IN_FLIGHT, {"wallet_id": wallet_id}).first() is not None

    def count_on_day(self, wallet_id: str, day: str) -> int:
        """Auto-recharges on one UTC day (sales through the API do not count)."""
        return int(self.conn.execute(
            _COUNT_ON_DAY, {"wallet_id": wallet_id, "day": day}).scalar_one())

    def billable(self, wallet_id: str, meter: str) -> tuple[int, list[str]]:
        """Purchases invoiced on one meter: how many there are (every one, since its credits
        were granted, failed invoices included, except those refunded before Kinde invoiced
        them) and the ids not yet invoiced. One statement, so the ids are exactly those behind
        the count."""
        rows = self.conn.execute(
            select(_r.id, _r.status).where(_r.wallet_id == wallet_id, _r.meter == meter,
                                           _r.refunded_at.is_(None))
        ).all()
        return len(rows), [r.id for r in rows if r.status != "invoiced"]

    def mark_invoiced(self, ids: Iterable[str], now: datetime) -> int:
        """Kinde has a count that includes these purchases."""
        if not ids:
            return 0
        return self.conn.execute(
            update(t.recharges)
            .where(_r.id.in_(list(ids)), _r.status != "invoiced")
            .values(status="invoiced", settled_at=now, failure_reason=None)
        ).rowcount

    def mark_failed(self, wallet_id: str, meter: str, reason: str, now: datetime) -> list[str]:
        """The invoice for a meter was dead-lettered: its purchases not yet invoiced have
        failed (they stay billable: a requeued or later report still counts them). Returns
        the ids marked, so the caller knows whether an auto-recharge was among them."""
        ids = [r.id for r in self.conn.execute(
            select(_r.id).where(_r.wallet_id == wallet_id, _r.meter == meter,
                                _r.status == "pending", _r.refunded_at.is_(None))
        )]
        if ids:
            self.conn.execute(
                update(t.recharges).where(_r.id.in_(ids))
                .values(status="failed", failure_reason=reason[:2000], settled_at=now)
            )
        return ids

    def any_auto(self, ids: Iterable[str]) -> bool:
        if not ids:
            return False
        return self.conn.execute(
            select(_r.id).where(_r.id.in_(list(ids)), _r.auto.is_(True)).limit(1)
        ).first() is not None

    def latest_auto(self, wallet_id: str) -> dict[str, object] | None:
        """The wallet's most recent auto-recharge purchase, for the wallet view."""
        row = self.conn.execute(_LATEST_AUTO, {"wallet_id": wallet_id}).first()
        if row is None:
            return None
        return {
            "id": row.id, "bundle": row.bundle, "credits": row.credits, "price": row.price,
            "currency": row.currency, "status": row.status,
            "failure_reason": row.failure_reason, "created_at": row.created_at,
            "settled_at": row.settled_at,
        }
