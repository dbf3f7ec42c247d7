"""One write, one transaction, answered once: the idempotent unit of work every API write uses.

A write may carry a key (scope = wallet for the API). The first successful result is stored
with the key in the same transaction; a retry with the same request gets that result back, with
a different request `IdempotencyConflict`. A failed write stores nothing, so its key stays free
for a corrected retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.services.errors import IdempotencyConflict
from app.services.ports import Clock, DuplicateKey, TransactionRunner, UnitOfWork

# A write's work inside its transaction: (uow, now) -> (status, body).
Action = Callable[[UnitOfWork, datetime], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Outcome:
    """A write's answer: HTTP-ish status, the response body, and whether it was a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def request_fingerprint(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def run_write(
    runner: TransactionRunner,
    clock: Clock,
    scope: str,
    idempotency_key: str | None,
    request: dict[str, Any],
    action: Action,
) -> Outcome:
    """Run `action` in a committed write transaction, at most once per (scope, key).

    The runner may share the transaction with concurrent writes (group commit); the answer is
    returned only once it is durable.
    """
    work = keyed_work(clock, scope, idempotency_key, request, action)
    return run_keyed(runner, work, scope, idempotency_key)


def run_keyed(
    runner: TransactionRunner,
    work: Callable[[UnitOfWork], Outcome],
    scope: str,
    idempotency_key: str | None,
) -> Outcome:
    """Run a keyed write's work; a racing duplicate of its key re-reads the winner's answer."""
    for attempt in (1, 2):
        try:
            return runner.run(work, scope)
        except DuplicateKey:
            # Two requests with one key raced (PostgreSQL); the loser re-reads the winner's.
            if attempt == 2 or not idempotency_key:
                raise
    raise AssertionError("unreachable")


def keyed_work(
    clock: Clock,
    scope: str,
    idempotency_key: str | None,
    request: dict[str, Any],
    action: Action,
) -> Callable[[UnitOfWork], Outcome]:
    """The work of one keyed write inside its transaction: claim, act, store the answer."""
    fingerprint = request_fingerprint(request)

    def work(uow: UnitOfWork) -> Outcome:
        if idempotency_key:
            # Claimed before the wallet is locked: racers with one key queue on the key and
            # then read the first answer, instead of finding the state it changed (a
            # captured hold, a spent balance) and answering 409 or 402.
            stored = uow.idempotency.claim(scope, idempotency_key, fingerprint, clock())
            if stored is not None:
                if stored.request_hash != fingerprint:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was already used with a different "
                        "request; use a new key for a new request"
                    )
                return Outcome(stored.status_code, stored.body, replayed=True)
        now = clock()
        status, body = action(uow, now)
        if idempotency_key:
            uow.idempotency.put(scope, idempotency_key, fingerprint, status, body, now)
        return Outcome(status, body)

    return work
