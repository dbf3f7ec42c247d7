"""Outbox delivery: claim due rows, hand each to the handler for its kind, settle the outcome.

Retries use exponential backoff with full jitter (so many failing rows don't retry in step),
capped; a 429 waits exactly what Kinde's `RateLimit-Reset` says and does not count as an
attempt; after `max_attempts` a row is dead-lettered, visible in `kinde-credits outbox` and
`/metrics`, and can be requeued by an operator. New work on a backing-off row keeps its next
attempt (see adapters.sql.outbox), and a row is dead-lettered only with work that has itself
failed: if its version moved after the last failed attempt (or during this one), the newer
work goes on retrying with backoff instead of dying with the old. A worker killed mid-send
leaves its lease to expire; the next claim sends again, which every handler makes harmless
(absolute totals, stable message ids).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.services.outbox_kinds import kind_of
from app.services.ports import (
    Clock,
    DeliveryError,
    NeedsConfirmation,
    OutboxMessage,
    UnitOfWorkFactory,
)

log = logging.getLogger("kinde_credits.outbox")

Handler = Callable[[OutboxMessage], None]
MAX_WAIT_SECONDS = 3600.0


@dataclass
class RetryPolicy:
    max_attempts: int = 12
    base_delay: float = 2.0
    max_delay: float = 3600.0
    lease_seconds: float = 60.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        # Full jitter: uniform in [base, min(cap, base * 2^attempt)].
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(attempts - 1, 0)))
        return rng.uniform(self.base_delay, max(ceiling, self.base_delay))


class OutboxDispatcher:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        handlers: dict[str, Handler],
        clock: Clock,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.uow = uow
        self.handlers = handlers
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        # Reactions to a dead-lettered row (auto-recharge suspends itself, for one).
        self.dead_listeners: list[Callable[[OutboxMessage, DeliveryError], None]] = []

    def run_once(self, limit: int = 50) -> int:
        """Claim and deliver up to `limit` due rows; returns how many were handled."""
        with self.uow(True) as uow:
            messages = uow.outbox.claim(self.clock(), self.policy.lease_seconds, limit)
            uow.commit()
        for message in messages:
            self._deliver(message)
        return len(messages)

    def _deliver(self, claimed: OutboxMessage) -> None:
        # A batch is claimed under one lease, but rows are sent one by one: take a fresh
        # lease for this row first, so a slow batch never lets a second worker send it too.
        with self.uow(True) as uow:
            message = uow.outbox.renew(
                claimed, self.clock() + timedelta(seconds=self.policy.lease_seconds)
            )
            uow.commit()
        if message is None:
            log.info("outbox row %s was taken over by another worker; skipped", claimed.id)
            return
        handler = self.handlers.get(kind_of(message))
        try:
            if handler is None:
                raise DeliveryError(f"no handler for outbox kind {message.kind!r}",
                                    retryable=False)
            handler(message)
        except NeedsConfirmation as confirm:
            with self.uow(True) as uow:
                uow.outbox.schedule_confirmation(
                    message, self.clock() + timedelta(seconds=confirm.after_seconds)
                )
                uow.commit()
            return
        except DeliveryError as exc:
            self._failed(message, exc)
            return
        except Exception as exc:  # a bug must not kill the worker, nor lose the row
            log.exception("outbox row %s (%s) failed unexpectedly", message.id, message.kind)
            self._failed(message, DeliveryError(f"{type(exc).__name__}: {exc}"))
            return
        with self.uow(True) as uow:
            if not uow.outbox.mark_sent(message, self.clock()):
                log.info("outbox row %s changed while sending; it goes again", message.id)
            uow.commit()

    def _failed(self, message: OutboxMessage, exc: DeliveryError) -> None:
        now = self.clock()
        died = False
        with self.uow(True) as uow:
            if exc.rate_limited:
                # Trust the server's reset, within reason: a bogus huge value must not park the
                # row for years (or overflow the date).
                wait = min(max(exc.retry_after if exc.retry_after is not None else 60.0, 1.0),
                           MAX_WAIT_SECONDS)
                uow.outbox.release(message, now + timedelta(seconds=wait), exc.message)
                log.warning("outbox row %s rate limited; again in %.0fs", message.id, wait)
            elif (
                not exc.retryable
                or message.attempts >= self.policy.max_attempts
                and not message.newer_than_failure
            ) and uow.outbox.dead(message, exc.message, now):
                log.error("outbox row %s (%s) dead-lettered after %d attempt(s): %s",
                          message.id, message.kind, message.attempts, exc.message)
                died = True
            else:
                wait = min(exc.retry_after or self.policy.delay(message.attempts, self.rng),
                           MAX_WAIT_SECONDS)
                uow.outbox.retry_later(message, now + timedelta(seconds=wait), exc.message)
                log.warning("outbox row %s (%s) attempt %d failed, again in %.1fs: %s",
                            message.id, message.kind, message.attempts, wait, exc.message)
            uow.commit()
        if died:
            # After the commit: listeners run their own transactions (SQLite has one writer).
            self._on_dead(message, exc)

    def _on_dead(self, message: OutboxMessage, exc: DeliveryError) -> None:
        for listener in self.dead_listeners:
            try:
                listener(message, exc)
            except Exception:
                log.exception("dead-letter listener failed for row %s", message.id)


def outbox_status(uow_factory: UnitOfWorkFactory, now: datetime) -> dict[str, Any]:
    with uow_factory(False) as uow:
        counts = uow.outbox.counts()
        age = uow.outbox.oldest_pending_age(now)
    return {"counts": counts, "oldest_pending_seconds": round(age, 1)}
