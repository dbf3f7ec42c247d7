"""SQL reads behind the revenue roll-forward (app.services.revenue), as `uow.revenue`.

The unit of work it runs in is a read transaction: one snapshot on PostgreSQL (REPEATABLE
READ), and on SQLite a read transaction sees one snapshot too, so blocks and draws agree.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, case, func, select

from adapters.sql import schema as t
from app.services.ports import CostedBlock, CreditFlows, RevenueInputs

_b, _d, _f = t.blocks.c, t.block_draws.c, t.refunds.c
# A void draw is a refund when a `refunds` row names its entry; other voids (a withdrawn
# provisional plan allotment) keep their own kind.
_DRAW_KIND = case((_f.void_entry_id.is_not(None), "refund"), else_=_d.kind)


class SqlRevenueRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def revenue_inputs(self, since: datetime, until: datetime) -> RevenueInputs:
        conn = self.conn
        costed = _b.cost_amount.is_not(None) & _b.currency.is_not(None)
        before = dict(
            conn.execute(
                select(_d.block_id, func.sum(_d.credits))
                .join(t.blocks, _b.id == _d.block_id)
                .where(costed, _d.created_at < since)
                .group_by(_d.block_id)
            ).all()
        )
        during: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for r in conn.execute(
            select(_d.block_id, _d.credits, _DRAW_KIND.label("kind"))
            .join(t.blocks, _b.id == _d.block_id)
            .outerjoin(t.refunds, _f.void_entry_id == _d.entry_id)
            .where(costed, _d.created_at >= since, _d.created_at < until)
            .order_by(_d.block_id, _d.created_at, _d.entry_id)
        ):
            during[r.block_id].append((int(r.credits), r.kind))
        blocks = [
            CostedBlock(
                id=r.id,
                currency=r.currency,
                cost=Decimal(r.cost_amount),
                original=int(r.original),
                created_at=r.created_at,
                consumed_before=int(before.get(r.id) or 0),
                draws=tuple(during.get(r.id, ())),
            )
            for r in conn.execute(
                select(_b.id, _b.currency, _b.cost_amount, _b.original, _b.created_at)
                .where(costed, _b.created_at < until)
                .order_by(_b.created_at, _b.id)
            )
            # Blocks used up before the period add nothing to it.
            if int(before.get(r.id) or 0) < int(r.original) or r.id in during
        ]
        return RevenueInputs(blocks, self._uncosted(since, until))

    def _uncosted(self, since: datetime, until: datetime) -> CreditFlows:
        conn = self.conn
        free = _b.cost_amount.is_(None)
        made_before = int(conn.execute(
            select(func.coalesce(func.sum(_b.original), 0)).where(free, _b.created_at < since)
        ).scalar_one())
        added = int(conn.execute(
            select(func.coalesce(func.sum(_b.original), 0))
            .where(free, _b.created_at >= since, _b.created_at < until)
        ).scalar_one())
        drawn_before = int(conn.execute(
            select(func.coalesce(func.sum(_d.credits), 0))
            .join(t.blocks, _b.id == _d.block_id)
            .where(free, _d.created_at < since)
        ).scalar_one())
        used = expired = 0
        for kind, credits in conn.execute(
            select(_d.kind, func.sum(_d.credits))
            .join(t.blocks, _b.id == _d.block_id)
            .where(free, _d.created_at >= since, _d.created_at < until)
            .group_by(_d.kind)
        ):
            if kind in ("expiry", "void"):  # a void of uncosted credits: taken back unused
                expired += int(credits)
            else:
                used += int(credits)
        return CreditFlows(made_before - drawn_before, added, used, expired)
