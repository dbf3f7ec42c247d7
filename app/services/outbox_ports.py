"""Ports and value objects for the outbox and Kinde usage reporting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    kind: str
    topic: str
    wallet_id: str | None
    payload: dict[str, Any]
    version: int
    attempts: int
    claimed_until: datetime | None
    created_at: datetime
    status: str = "pending"
    last_error: str | None = None
    # The version at the last failed or rate-limited attempt; None when not backing off.
    failed_version: int | None = None

    @property
    def newer_than_failure(self) -> bool:
        """Work arrived after the last failed attempt, so this version has not failed yet."""
        return self.failed_version is not None and self.version != self.failed_version


@dataclass(frozen=True)
class AgreementInfo:
    id: str
    customer_id: str
    plan_code: str | None
    period_start: datetime | None
    period_end: datetime | None
    feature_codes: tuple[str, ...]
    fetched_at: datetime


@dataclass(frozen=True)
class UsageReportState:
    """What Kinde acknowledged for a wallet's feature: see adapters.sql.schema.UsageReportRow."""

    wallet_id: str
    feature: str
    agreement_id: str | None
    period_start: datetime | None
    base_units: int
    last_sent_total: int
    last_sent_at: datetime | None


class NeedsConfirmation(Exception):
    """Delivered, but an earlier attempt whose outcome is unknown may still land after it:
    deliver the same (absolute) state once more after `after_seconds`."""

    def __init__(self, after_seconds: float) -> None:
        super().__init__(f"confirm in {after_seconds}s")
        self.after_seconds = after_seconds


class DeliveryError(Exception):
    """A delivery that did not go through. `retryable` errors are tried again with backoff;
    `retry_after` (seconds) overrides the backoff, e.g. from RateLimit-Reset on a 429."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class OutboxRepository(Protocol):
    def enqueue(
        self, kind: str, topic: str, wallet_id: str | None, payload: dict[str, Any],
        now: datetime,
    ) -> None: ...

    def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[OutboxMessage]: ...

    def renew(self, message: OutboxMessage, until: datetime) -> OutboxMessage | None: ...

    def mark_sent(self, message: OutboxMessage, now: datetime) -> bool: ...

    def retry_later(self, message: OutboxMessage, when: datetime, error: str) -> None: ...

    def schedule_confirmation(self, message: OutboxMessage, when: datetime) -> None: ...

    def release(self, message: OutboxMessage, when: datetime, error: str) -> None: ...

    def dead(self, message: OutboxMessage, error: str, now: datetime) -> bool: ...

    def died_since(self, topic: str, since: datetime) -> bool: ...

    def counts(self) -> dict[str, int]: ...

    def oldest_pending_age(self, now: datetime) -> float: ...

    def list(self, status: str | None, limit: int) -> list[OutboxMessage]: ...

    def requeue_dead(self, ids: Iterable[int] | None, now: datetime) -> int: ...


class BillingRepository(Protocol):
    def agreement(self, agreement_id: str) -> AgreementInfo | None: ...

    def save_agreement(self, info: AgreementInfo) -> None: ...

    def report_state(self, wallet_id: str, feature: str) -> UsageReportState: ...

    def save_report_state(self, state: UsageReportState) -> None: ...

    def units_used(self, wallet_id: str, feature: str) -> int: ...

    def all_report_states(self) -> list[UsageReportState]: ...
