"""`kinde-credits report revenue`: what was sold, what has been earned, what is still owed.

Every purchased block carries its cost basis (price paid for its credits), so money follows
credits exactly:
- sales: purchases made in the period (cash booked);
- recognised: the share of each purchased block used so far (revenue earned);
- breakage: the share that expired unused (also earned, reported apart);
- deferred: the share still in wallets (a liability until used or expired).
recognised + breakage + deferred = everything ever sold, per currency; all Decimal, no floats.
Granted credits (sign-up, goodwill) have no cost basis and appear only as credit counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from app.services.ports import UnitOfWorkFactory

CENT = Decimal("0.01")


@dataclass(frozen=True)
class PurchasedBlock:
    currency: str
    cost: Decimal
    original: int
    remaining: int
    expired: int
    created_at: datetime


class RevenueReadings(Protocol):
    """What the report reads; a unit of work offers it as `uow.reports`."""

    def purchased_blocks(self) -> list[PurchasedBlock]: ...

    def granted_credits(self) -> int: ...


def build_revenue_report(
    uow_factory: UnitOfWorkFactory, since: datetime, until: datetime
) -> dict[str, Any]:
    """Read everything the report needs in ONE read transaction, then compute it.

    The reads are several queries (blocks, expiries, grants); a sweep or a sale committing
    between two of them would mix two states (e.g. a block already emptied by expiry but its
    expiry not yet counted shows as used). One snapshot keeps the figures reconciling.
    """
    with uow_factory(False) as uow:
        readings: RevenueReadings = uow.reports  # type: ignore[attr-defined]
        blocks = readings.purchased_blocks()
        granted = readings.granted_credits()
    return revenue_report(blocks, granted, since, until)


def revenue_report(
    blocks: list[PurchasedBlock], granted_credits: int, since: datetime, until: datetime
) -> dict[str, Any]:
    per: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    credits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for b in blocks:
        row, c = per[b.currency], credits[b.currency]
        unit = b.cost / b.original
        used = b.original - b.remaining - b.expired
        row["recognised"] += unit * used
        row["breakage"] += unit * b.expired
        row["deferred"] += unit * b.remaining
        row["sold_total"] += b.cost
        c["sold"] += b.original
        c["used"] += used
        c["expired"] += b.expired
        c["outstanding"] += b.remaining
        if since <= b.created_at < until:
            row["sales_in_period"] += b.cost
            c["sold_in_period"] += b.original
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "currencies": {
            cur: {
                **{k: str(v.quantize(CENT, rounding=ROUND_HALF_UP)) for k, v in sorted(
                    per[cur].items())},
                "credits": dict(sorted(credits[cur].items())),
            }
            for cur in sorted(per)
        },
        "granted_credits": granted_credits,
    }
