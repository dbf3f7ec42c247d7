"""Typed errors of the kinde-credits API: one class per stable error `code`.

Every error carries the HTTP `status`, the API's `code` and `message`, and the whole error
object as `details`; the 402s add the numbers a product shows ("needs 50, you have 12").
"""

from __future__ import annotations

from typing import Any


class CreditsError(Exception):
    """Anything the credits service refused, or could not be reached for."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}


class InsufficientCredits(CreditsError):
    """402: the wallet cannot pay for this. `needed` and `available` say by how much."""

    @property
    def needed(self) -> int:
        return int(self.details.get("needed", 0))

    @property
    def available(self) -> int:
        return int(self.details.get("available", 0))


class MemberBudgetExceeded(CreditsError):
    """402: this member of the org would go past a budget the org's admin set."""

    @property
    def needed(self) -> int:
        return int(self.details.get("needed", 0))

    @property
    def available_to_member(self) -> int:
        return int(self.details.get("available_to_member", 0))


class InvalidRequest(CreditsError):
    """422 (or 400): the request itself is wrong; sending it again will not help."""


class UnknownFeature(InvalidRequest):
    pass


class UnknownBundle(InvalidRequest):
    pass


class Unauthorized(CreditsError):
    """401: the access token is missing, expired or not accepted."""


class Forbidden(CreditsError):
    """403: the token lacks the scope (credits:write for usage, credits:admin for grants)."""


class NotFound(CreditsError):
    """404: no such wallet or hold, or not one this token may see."""


class IdempotencyConflict(CreditsError):
    """409: the idempotency key was used before with a different request."""


class HoldNotOpen(CreditsError):
    """409: the hold was already captured, released, or it expired."""


class PaymentOverdue(CreditsError):
    """402: the customer's last Kinde payment failed; pack sales wait until it succeeds."""


class NoBillingCustomer(CreditsError):
    """409: a pack sale needs the wallet's Kinde billing customer, and it has none yet."""


class NotRefundable(CreditsError):
    """409: only purchases with unused credits are refunded (not grants or allotments)."""


class AlreadyRefunded(CreditsError):
    """409: the pack was refunded before; a pack goes back at most once."""


class CreditsHeld(CreditsError):
    """409: open holds need the pack's credits; capture or release them, then refund."""


class ServiceUnavailable(CreditsError):
    """5xx or 429 after every retry: the service is unwell; nothing was charged twice."""


class TransportError(CreditsError):
    """The service could not be reached (or kept dropping the connection) after every retry.

    A write may or may not have been applied: call again with the same `idempotency_key`,
    which returns the first result if it was.
    """


_BY_CODE: dict[str, type[CreditsError]] = {
    "insufficient_credits": InsufficientCredits,
    "member_budget_exceeded": MemberBudgetExceeded,
    "invalid_request": InvalidRequest,
    "unknown_feature": UnknownFeature,
    "unknown_bundle": UnknownBundle,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "idempotency_conflict": IdempotencyConflict,
    "hold_not_open": HoldNotOpen,
    "payment_overdue": PaymentOverdue,
    "no_billing_customer": NoBillingCustomer,
    "not_refundable": NotRefundable,
    "already_refunded": AlreadyRefunded,
    "credits_held": CreditsHeld,
}
_BY_STATUS: dict[int, type[CreditsError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 422: InvalidRequest,
}


def error_for(status: int, body: Any) -> CreditsError:
    """The typed error for an error answer (`{"error": {"code", "message", ...}}`)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "", "message": f"HTTP {status}"}
    code = str(error.get("code") or "")
    message = str(error.get("message") or f"HTTP {status}")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServiceUnavailable if status >= 500 or status == 429 else CreditsError
    return cls(status, code, message, error)
