"""SQL repository for refunds (app.services.corrections): the purchase a refund names, and one
`refunds` row per refunded pack, whose primary key (the pack's block) makes a second refund
of it fail on either database, whatever the race."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from adapters.sql import schema as t
from app.services.ports import DuplicateKey, PurchaseRecord, RefundRecord

_e, _r, _f = t.entries.c, t.recharges.c, t.refunds.c


class SqlRefundRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def purchase(self, wallet_id: str, entry_id: int) -> PurchaseRecord | None:
        row = self.conn.execute(
            select(_e.id, _e.wallet_id, _e.kind, _e.block_id, _e.created_at)
            .where(_e.id == entry_id, _e.wallet_id == wallet_id)
        ).first()
        if row is None:
            return None
        sale = None
        if row.block_id is not None:
            sale = self.conn.execute(
                select(_r.id, _r.bundle, _r.meter, _r.auto).where(_r.block_id == row.block_id)
            ).first()
        return PurchaseRecord(
            entry_id=int(row.id), wallet_id=row.wallet_id, kind=row.kind,
            block_id=row.block_id, created_at=row.created_at,
            recharge_id=sale.id if sale else None, bundle=sale.bundle if sale else None,
            meter=sale.meter if sale else None, auto=bool(sale.auto) if sale else False,
        )

    def refunded(self, block_id: str) -> bool:
        return self.conn.execute(
            select(_f.block_id).where(_f.block_id == block_id)).first() is not None

    def add(self, record: RefundRecord) -> None:
        try:
            self.conn.execute(insert(t.refunds).values(
                block_id=record.block_id, wallet_id=record.wallet_id,
                purchase_entry_id=record.purchase_entry_id,
                void_entry_id=record.void_entry_id, recharge_id=record.recharge_id,
                credits=record.credits, amount=str(record.amount), currency=record.currency,
                invoice=record.invoice, reason=record.reason, created_at=record.created_at,
            ))
        except IntegrityError as exc:
            raise DuplicateKey(f"refund of block {record.block_id}") from exc

    def between(self, since: datetime, until: datetime) -> list[RefundRecord]:
        rows = self.conn.execute(
            select(t.refunds).where(_f.created_at >= since, _f.created_at < until)
            .order_by(_f.created_at, _f.void_entry_id)
        )
        return [
            RefundRecord(
                block_id=r.block_id, wallet_id=r.wallet_id,
                purchase_entry_id=int(r.purchase_entry_id), void_entry_id=int(r.void_entry_id),
                recharge_id=r.recharge_id, credits=int(r.credits), amount=Decimal(r.amount),
                currency=r.currency, invoice=r.invoice, reason=r.reason,
                created_at=r.created_at,
            )
            for r in rows
        ]
