"""Ports to the outside world that services call: the Kinde Management API's errors and the
notification channels, as types services may catch and build without importing adapters.

`adapters/kinde_api.py` raises these errors and `adapters/notify.py` implements the channels;
both re-export the names for their callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

# -- Kinde Management API errors ----------------------------------------------------------------


class KindeApiError(Exception):
    """Any failure of a call to Kinde. `status` is None when no HTTP answer arrived."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"Kinde API error (status={status}, code={code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class KindeUnavailable(KindeApiError):
    """Transient: connection error, timeout or 5xx. Retry later with backoff.

    `outcome_unknown` is True when the request may have reached Kinde and been applied (read
    timeout, connection dropped after sending, most 5xx). A caller resending a non-idempotent
    request (a `delta` meter usage) must take that into account; an `absolute` total is safe.
    """

    def __init__(
        self, status: int | None, code: str, message: str, *, outcome_unknown: bool
    ) -> None:
        super().__init__(status, code, message)
        self.outcome_unknown = outcome_unknown


class KindeRateLimited(KindeApiError):
    """429. Retry no sooner than `retry_after_seconds` (from the `RateLimit-Reset` header)."""

    def __init__(self, code: str, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(429, code, message)
        self.retry_after_seconds = retry_after_seconds


class KindeAuthError(KindeApiError):
    """Bad client credentials, or the M2M app lacks a scope. Needs a human; retrying won't help."""


class KindeNotFound(KindeApiError):
    """404: the resource (or the route) does not exist."""


class KindeRequestRejected(KindeApiError):
    """Any other 4xx: Kinde refused this request as sent; resending it unchanged won't help."""


# -- notification channels ----------------------------------------------------------------------


class DeliveryFailed(Exception):
    """One delivery attempt failed.

    `retryable` says whether the same message may succeed later (server busy, network down) or
    never will as things stand (rejected, misconfigured). `retry_after` is the receiver's own
    wish in seconds (`Retry-After`), when it stated one.
    """

    def __init__(self, retryable: bool, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """A message for a person or system. `id` must stay the same across delivery attempts."""

    id: str
    type: str
    timestamp: datetime
    data: dict[str, Any]
    recipient_email: str | None
    subject: str
    text: str

    def __post_init__(self) -> None:
        # A naive time would be signed and dated as if it were UTC by some libraries and as
        # local time by others; refuse it rather than send a wrong date.
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("Notification.timestamp must be timezone-aware")
        if not self.id:
            raise ValueError("Notification.id must not be empty")


@runtime_checkable
class NotificationChannel(Protocol):
    name: str

    def send(self, notification: Notification) -> None: ...
