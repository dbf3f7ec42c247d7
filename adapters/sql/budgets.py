"""SQL repository for team budgets (see app.services.budgets), offered as `uow.budgets`.

Every statement here runs in the debit's transaction, after the org wallet row was locked, so
the reads see every committed debit of the org and no other debit of it can interleave. The
spend rows are upserted with `credits = credits + excluded.credits` all the same, so even a
caller that forgot the lock could not lose an increment.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from adapters.sql import budget_schema as bt
from adapters.sql import dialect
from adapters.sql import schema as t
from app.domain.budgets import Caps, MemberUsage, day_key, month_key
from app.services.ports import MemberRecord, SpendLine

_b = bt.member_budgets.c
_s = bt.member_spend.c
_mh = bt.member_holds.c
_h = t.holds.c


class SqlBudgetRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def caps(self, wallet_id: str, member: str) -> Caps:
        row = self.conn.execute(
            select(_b.credits_per_day, _b.credits_per_month).where(
                _b.wallet_id == wallet_id, _b.member_id == member
            )
        ).first()
        return Caps(row.credits_per_day, row.credits_per_month) if row else Caps()

    def set_caps(self, wallet_id: str, member: str, caps: Caps, now: datetime) -> None:
        dialect.upsert_row(
            self.conn, bt.member_budgets, {"wallet_id": wallet_id, "member_id": member},
            {"credits_per_day": caps.credits_per_day,
             "credits_per_month": caps.credits_per_month, "updated_at": now},
        )

    def _held(self, wallet_id: str, now: datetime, member: str | None = None) -> dict[str, int]:
        # A hold past its expiry is released by the next sweep; it already reserves nothing.
        stmt = (
            select(_mh.member_id, func.coalesce(func.sum(_h.amount), 0))
            .join(t.holds, _h.id == _mh.hold_id)
            .where(_mh.wallet_id == wallet_id, _h.status == "open", _h.expires_at > now)
            .group_by(_mh.member_id)
        )
        if member is not None:
            stmt = stmt.where(_mh.member_id == member)
        return {m: int(total) for m, total in self.conn.execute(stmt).all()}

    def usage(self, wallet_id: str, member: str, now: datetime) -> MemberUsage:
        day, month = day_key(now), month_key(now)
        spent = dict(
            self.conn.execute(
                select(_s.period, func.sum(_s.credits))
                .where(_s.wallet_id == wallet_id, _s.member_id == member,
                       _s.period.in_((day, month)))
                .group_by(_s.period)
            ).all()
        )
        return MemberUsage(
            spent_today=int(spent.get(day) or 0),
            spent_month=int(spent.get(month) or 0),
            held=self._held(wallet_id, now, member).get(member, 0),
        )

    def add_spend(self, wallet_id: str, member: str, feature: str, credits: int, units: int,
                  now: datetime) -> None:
        for period in (day_key(now), month_key(now)):
            stmt = dialect.upsert(self.conn, bt.member_spend).values(
                wallet_id=wallet_id, member_id=member, period=period, feature=feature,
                credits=credits, units=units, updated_at=now,
            )
            self.conn.execute(stmt.on_conflict_do_update(
                index_elements=[_s.wallet_id, _s.member_id, _s.period, _s.feature],
                set_={"credits": bt.member_spend.c.credits + stmt.excluded.credits,
                      "units": bt.member_spend.c.units + stmt.excluded.units,
                      "updated_at": stmt.excluded.updated_at},
            ))

    def add_hold(self, hold_id: str, wallet_id: str, member: str) -> None:
        self.conn.execute(
            bt.member_holds.insert().values(hold_id=hold_id, wallet_id=wallet_id,
                                            member_id=member)
        )

    def hold_member(self, hold_id: str) -> str | None:
        return self.conn.execute(
            select(_mh.member_id).where(_mh.hold_id == hold_id)
        ).scalar_one_or_none()

    def members(self, wallet_id: str, now: datetime) -> list[MemberRecord]:
        records: dict[str, MemberRecord] = {}

        def record(member: str) -> MemberRecord:
            return records.setdefault(member, MemberRecord(member))

        for cap in self.conn.execute(
            select(_b.member_id, _b.credits_per_day, _b.credits_per_month)
            .where(_b.wallet_id == wallet_id)
        ):
            record(cap.member_id).caps = Caps(cap.credits_per_day, cap.credits_per_month)
        day, month = day_key(now), month_key(now)
        for row in self.conn.execute(
            select(_s.member_id, _s.period, _s.feature, _s.credits, _s.units)
            .where(_s.wallet_id == wallet_id, _s.period.in_((day, month)))
        ):
            line = SpendLine(row.feature, int(row.credits), int(row.units))
            target = record(row.member_id)
            (target.today if row.period == day else target.month).append(line)
        for member, held in self._held(wallet_id, now).items():
            record(member).held = held
        return [records[m] for m in sorted(records)]
