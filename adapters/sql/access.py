"""SQL repositories for who may spend (tables in access_schema.py): dashboard link sessions,
payment standing, and who placed each hold. Each call runs on the unit of work's connection."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from adapters.sql import access_schema as at
from adapters.sql import dialect
from app.services.ports import LinkSession

_s = at.link_sessions.c
_p = at.payment_standing.c
_h = at.hold_placers.c


class SqlLinkSessionRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def open(self, session: LinkSession) -> bool:
        # ON CONFLICT DO NOTHING: of two opens racing on two instances, exactly one inserts.
        # RETURNING, not rowcount: the PostgreSQL engine does not report rowcounts here.
        inserted = self.conn.execute(dialect.insert_ignore(self.conn, at.link_sessions).values(
            link_id=session.link_id, wallet_id=session.wallet_id,
            opened_at=session.opened_at, expires_at=session.expires_at, ended_at=None,
        ).returning(_s.link_id)).first()
        return inserted is not None

    def get(self, link_id: str) -> LinkSession | None:
        row = self.conn.execute(
            select(_s.link_id, _s.wallet_id, _s.opened_at, _s.expires_at, _s.ended_at)
            .where(_s.link_id == link_id)).first()
        return LinkSession(*row) if row else None

    def end(self, link_id: str, now: datetime) -> None:
        self.conn.execute(update(at.link_sessions)
                          .where(_s.link_id == link_id, _s.ended_at.is_(None))
                          .values(ended_at=now))


class SqlPaymentStandingRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def overdue(self, wallet_id: str) -> bool:
        value = self.conn.execute(
            select(_p.overdue).where(_p.wallet_id == wallet_id)).scalar_one_or_none()
        return bool(value)

    def record(self, wallet_id: str, overdue: bool, event_at: datetime, now: datetime) -> bool:
        inserted = self.conn.execute(
            dialect.insert_ignore(self.conn, at.payment_standing).values(
                wallet_id=wallet_id, overdue=overdue, event_at=event_at, updated_at=now,
            ).returning(_p.wallet_id)).first()
        if inserted is not None:
            return True
        # Events arrive in any order: only a newer (or equally new) one changes the standing.
        changed = self.conn.execute(
            update(at.payment_standing)
            .where(_p.wallet_id == wallet_id, _p.event_at <= event_at)
            .values(overdue=overdue, event_at=event_at, updated_at=now)
            .returning(_p.wallet_id)).first()
        return changed is not None


class SqlHoldPlacerRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def note(self, hold_id: str, placed_by: str) -> None:
        self.conn.execute(at.hold_placers.insert().values(hold_id=hold_id, placed_by=placed_by))

    def placed_by(self, hold_id: str) -> str | None:
        value = self.conn.execute(
            select(_h.placed_by).where(_h.hold_id == hold_id)).scalar_one_or_none()
        return None if value is None else str(value)
