"""SQL outbox: rows written with the ledger change they follow, claimed and delivered by workers.

One pending row per topic (a partial unique index): enqueueing onto a pending topic bumps the
row's `version` instead of adding a row, and makes it due now unless it is backing off after a
failed or rate-limited attempt (`failed_version` set): new work never cancels a backoff or a
`RateLimit-Reset`. A worker claims a row by setting a lease
(`claimed_until`), on PostgreSQL after `SELECT ... FOR UPDATE SKIP LOCKED` so concurrent
workers pass over each other's rows; on SQLite the claim runs under `BEGIN IMMEDIATE`. A row is
marked sent only if its version did not move while it was being delivered; otherwise it stays
pending and the next pass delivers the newer state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BindParameter

from adapters.sql import dialect
from adapters.sql import schema as t
from adapters.sql.rows import from_row
from app.services.ports import OutboxMessage

_o = t.outbox.c
# Error text kept per row: enough for any Kinde answer, bounded against a runaway one.
MAX_ERROR_TEXT = 2000


def _message(row: Any) -> OutboxMessage:
    return from_row(OutboxMessage, row, payload=json.loads(row.payload))


@cache
def _enqueue_statement(postgres: bool) -> Insert:
    """The enqueue upsert, built once per dialect (it runs in every reported debit)."""
    now: BindParameter[datetime] = bindparam("now")
    stmt = dialect.upsert_for(postgres, t.outbox).values(
        kind=bindparam("kind"),
        topic=bindparam("topic"),
        wallet_id=bindparam("wallet_id"),
        payload=bindparam("payload"),
        version=0,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    return stmt.on_conflict_do_update(
        index_elements=[_o.topic],
        # A literal predicate: PostgreSQL infers a partial index only from one.
        index_where=text("status = 'pending'"),
        # The payload stays: it may carry a pending confirmation (see UsageReporter).
        set_={
            "version": _o.version + 1,
            # New work is due now, unless the row is backing off after a failure or a 429:
            # then it keeps its next attempt, or steady traffic would retry a failing Kinde on
            # every debit and dead-letter the row within seconds.
            "next_attempt_at": case(
                (_o.failed_version.is_(None),
                 dialect.least_for(postgres, _o.next_attempt_at, now)),
                else_=_o.next_attempt_at,
            ),
        },
    )


class SqlOutboxRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def enqueue(
        self, kind: str, topic: str, wallet_id: str | None, payload: dict[str, Any],
        now: datetime,
    ) -> None:
        self.conn.execute(_enqueue_statement(dialect.is_postgresql(self.conn)), {
            "kind": kind, "topic": topic, "wallet_id": wallet_id,
            "payload": json.dumps(payload, separators=(",", ":"), default=str), "now": now,
        })

    def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[OutboxMessage]:
        due = (
            select(_o.id)
            .where(
                _o.status == "pending",
                _o.next_attempt_at <= now,
                or_(_o.claimed_until.is_(None), _o.claimed_until < now),
            )
            .order_by(_o.next_attempt_at, _o.id)
            .limit(limit)
        )
        # PostgreSQL: concurrent workers pass over each other's rows (SKIP LOCKED).
        due = dialect.for_update(self.conn, due, skip_locked=True)
        ids = list(self.conn.execute(due).scalars())
        if not ids:
            return []
        lease = now + timedelta(seconds=lease_seconds)
        self.conn.execute(
            update(t.outbox)
            .where(_o.id.in_(ids))
            .values(claimed_until=lease, attempts=_o.attempts + 1)
        )
        rows = self.conn.execute(select(t.outbox).where(_o.id.in_(ids)).order_by(_o.id))
        return [_message(r) for r in rows]

    def _mine(self, message: OutboxMessage) -> Any:
        # Only the holder of the current lease may settle a row.
        return and_(_o.id == message.id, _o.claimed_until == message.claimed_until)

    def _unclaim(self, message: OutboxMessage, **values: Any) -> None:
        """Give up our lease (the next claim may take the row) and change `values` with it."""
        self.conn.execute(
            update(t.outbox).where(self._mine(message)).values(claimed_until=None, **values)
        )

    def _unclaim_failed(self, message: OutboxMessage, when: datetime, error: str,
                        **values: Any) -> None:
        """Unclaim after a failed attempt: due again at `when`, and backing off until then
        (`failed_version`) however much new work arrives."""
        self._unclaim(message, next_attempt_at=when, last_error=error[:MAX_ERROR_TEXT],
                      failed_version=message.version, **values)

    def renew(self, message: OutboxMessage, until: datetime) -> OutboxMessage | None:
        """Extend our lease right before sending; None if the row is no longer ours (our
        lease ran out while earlier rows of the batch were sent, and another worker took it)."""
        done = self.conn.execute(
            update(t.outbox)
            .where(self._mine(message), _o.status == "pending")
            .values(claimed_until=until)
        ).rowcount
        return replace(message, claimed_until=until) if done else None

    def mark_sent(self, message: OutboxMessage, now: datetime) -> bool:
        """Sent, unless the row changed meanwhile: then release it to go again (False)."""
        done = self.conn.execute(
            update(t.outbox)
            .where(self._mine(message), _o.version == message.version)
            .values(status="sent", sent_at=now, claimed_until=None, last_error=None)
        ).rowcount
        if done:
            return True
        self._unclaim(message, attempts=0, next_attempt_at=now, failed_version=None)
        return False

    def schedule_confirmation(self, message: OutboxMessage, when: datetime) -> None:
        """Send once more at `when`, marked as a confirmation (see UsageReporter)."""
        payload = json.dumps(
            {**message.payload, "confirm_at": when.isoformat()}, separators=(",", ":")
        )
        self._unclaim(
            message,
            next_attempt_at=when,
            attempts=0,
            payload=payload,
            last_error="confirming: an earlier attempt may still land at Kinde",
            # Not backing off: new usage meanwhile is sent at once (and confirmed later).
            failed_version=None,
        )

    def retry_later(self, message: OutboxMessage, when: datetime, error: str) -> None:
        self._unclaim_failed(message, when, error)

    def release(self, message: OutboxMessage, when: datetime, error: str) -> None:
        """Give the claim back without counting an attempt (e.g. rate limited)."""
        self._unclaim_failed(message, when, error, attempts=_o.attempts - 1)

    def dead(self, message: OutboxMessage, error: str, now: datetime) -> bool:
        """Dead-letter the row, unless new work arrived while this attempt was in flight
        (its version moved): that work was never tried, so it must not die. False then, and
        the row stays claimed for the caller to schedule again."""
        return bool(self.conn.execute(
            update(t.outbox)
            .where(self._mine(message), _o.version == message.version)
            # next_attempt_at keeps when it died: its last attempt may still land at Kinde
            # for a while (see died_since).
            .values(status="dead", claimed_until=None, last_error=error[:MAX_ERROR_TEXT],
                    sent_at=None, next_attempt_at=now)
        ).rowcount)

    def died_since(self, topic: str, since: datetime) -> bool:
        """A row of this topic was dead-lettered at or after `since`."""
        return self.conn.execute(
            select(_o.id).where(_o.topic == topic, _o.status == "dead",
                                _o.next_attempt_at >= since).limit(1)
        ).first() is not None

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute(select(_o.status, func.count()).group_by(_o.status))
        out = {"pending": 0, "sent": 0, "dead": 0}
        out.update({status: int(n) for status, n in rows})
        return out

    def oldest_pending_age(self, now: datetime) -> float:
        oldest = self.conn.execute(
            select(func.min(_o.created_at)).where(_o.status == "pending")
        ).scalar()
        return max((now - oldest).total_seconds(), 0.0) if oldest else 0.0

    def list(self, status: str | None, limit: int) -> list[OutboxMessage]:
        stmt = select(t.outbox).order_by(_o.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(_o.status == status)
        return [_message(r) for r in self.conn.execute(stmt)]

    def requeue_dead(self, ids: Iterable[int] | None, now: datetime) -> int:
        """Send dead rows again; a topic that already has a pending row keeps just that one.

        On PostgreSQL an enqueue may insert a pending row for the topic after our check (READ
        COMMITTED): the partial unique index then refuses our update. That is the same case
        as a pending row found by the check, so each row is requeued under a savepoint and a
        conflict counts as superseded instead of failing the whole requeue."""
        stmt = select(_o.id, _o.topic).where(_o.status == "dead")
        if ids is not None:
            stmt = stmt.where(_o.id.in_(list(ids)))
        count = 0
        for row_id, topic in self.conn.execute(stmt).all():
            pending = self.conn.execute(
                select(_o.id).where(_o.topic == topic, _o.status == "pending")
            ).first()
            if pending is None:
                savepoint = self.conn.begin_nested()
                try:
                    self.conn.execute(
                        update(t.outbox)
                        .where(_o.id == row_id)
                        # attempts=1: its last attempt may have reached Kinde, so the
                        # first send after the requeue is confirmed (see UsageReporter).
                        .values(status="pending", attempts=1, next_attempt_at=now,
                                claimed_until=None, failed_version=None)
                    )
                    savepoint.commit()
                    count += 1
                    continue
                except IntegrityError:
                    savepoint.rollback()  # a pending row appeared meanwhile
            # Only meter topics can repeat (notification topics are unique per message), and
            # a pending meter row reports the newest absolute total, this row's work included.
            self.conn.execute(
                update(t.outbox).where(_o.id == row_id).values(
                    status="sent", last_error="superseded by a newer pending row"
                )
            )
        return count
