"""SQL side of `verify`: per-wallet totals that the invariant check compares, a page at a time.

Everything is summed in the database (entries, blocks, open holds, the balance_after chain), so
a page of wallets costs a handful of grouped queries whatever the ledger's size.
"""

from __future__ import annotations

from sqlalchemy import Connection, case, func, select

from adapters.sql import schema as t
from app.domain.audit import WalletAudit


def audit_wallets(conn: Connection, after: str | None, limit: int) -> list[WalletAudit]:
    """Per-wallet totals for the invariant check, a page of wallets at a time."""
    page = select(t.wallets).order_by(t.wallets.c.id).limit(limit)
    if after is not None:
        page = page.where(t.wallets.c.id > after)
    wallet_rows = conn.execute(page).all()
    if not wallet_rows:
        return []
    ids = [w.id for w in wallet_rows]
    e = t.entries.c
    sums = dict(
        conn.execute(
            select(e.wallet_id, func.sum(e.amount)).where(e.wallet_id.in_(ids)).group_by(
                e.wallet_id
            )
        ).all()
    )
    b = t.blocks.c
    blocks = {
        r.wallet_id: r
        for r in conn.execute(
            select(
                b.wallet_id,
                func.sum(b.remaining).label("remaining"),
                func.sum(case((b.remaining < 0, 1), else_=0)).label("negative"),
                func.sum(case((b.remaining > b.original, 1), else_=0)).label("overfull"),
            )
            .where(b.wallet_id.in_(ids))
            .group_by(b.wallet_id)
        )
    }
    h = t.holds.c
    held = dict(
        conn.execute(
            select(h.wallet_id, func.sum(h.amount))
            .where(h.wallet_id.in_(ids), h.status == "open")
            .group_by(h.wallet_id)
        ).all()
    )
    # Each entry's balance_after must be the previous one plus its amount.
    chain = (
        select(
            e.wallet_id,
            e.id,
            e.amount,
            e.balance_after,
            func.lag(e.balance_after).over(partition_by=e.wallet_id, order_by=e.id).label("prev"),
            func.row_number()
            .over(partition_by=e.wallet_id, order_by=e.id.desc())
            .label("rank_desc"),
        )
        .where(e.wallet_id.in_(ids))
        .subquery()
    )
    broken: dict[str, int] = {}
    last: dict[str, int] = {}
    for r in conn.execute(
        select(chain).where(
            (chain.c.rank_desc == 1)
            | (func.coalesce(chain.c.prev, 0) + chain.c.amount != chain.c.balance_after)
        )
    ):
        if r.rank_desc == 1:
            last[r.wallet_id] = r.balance_after
        if (r.prev or 0) + r.amount != r.balance_after:
            broken[r.wallet_id] = broken.get(r.wallet_id, 0) + 1
    unrefusable = {
        r.wallet_id
        for r in conn.execute(
            select(e.wallet_id)
            .where(e.wallet_id.in_(ids), e.kind == "usage", e.reason.like("kinde:%"))
            .distinct()
        )
    }
    out = []
    for w in wallet_rows:
        blk = blocks.get(w.id)
        out.append(
            WalletAudit(
                wallet_id=w.id,
                balance=w.balance,
                held=w.held,
                arrears=w.arrears,
                overdraft_limit=w.overdraft_limit,
                sum_entries=int(sums.get(w.id) or 0),
                sum_remaining=int(blk.remaining or 0) if blk else 0,
                sum_open_holds=int(held.get(w.id) or 0),
                negative_blocks=int(blk.negative or 0) if blk else 0,
                overfull_blocks=int(blk.overfull or 0) if blk else 0,
                broken_chain_entries=broken.get(w.id, 0),
                last_balance_after=last.get(w.id),
                has_unrefusable_usage=w.id in unrefusable,
            )
        )
    return out
