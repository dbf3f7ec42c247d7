"""The use cases' refusals beyond the ledger rules, and the HTTP status each code maps to."""

from __future__ import annotations

from app.domain.ledger import LedgerError


class NotFound(LedgerError):
    """No such wallet or hold, or not within the caller's reach (the two look the same)."""

    code = "not_found"


class UnknownFeature(LedgerError):
    """Usage or a hold names a feature the catalog does not price."""

    code = "unknown_feature"


class UnknownBundle(LedgerError):
    """A top-up names a bundle the catalog does not sell."""

    code = "unknown_bundle"


class IdempotencyConflict(LedgerError):
    """An `Idempotency-Key` already used for this wallet with another request body."""

    code = "idempotency_conflict"


# A write whose COMMIT answer was lost (ports.CommitOutcomeUnknown): 503, and what to do.
OUTCOME_UNKNOWN = "outcome_unknown"
OUTCOME_UNKNOWN_MESSAGE = (
    "the database connection was lost while this write was being committed, so it may or may "
    "not have been applied; retry with the same Idempotency-Key: if it was applied you get "
    "its first result, otherwise it is applied once (without a key, read the wallet's ledger "
    "before retrying)"
)

_STATUS = {
    "insufficient_credits": 402,
    "member_budget_exceeded": 402,
    "not_found": 404,
    "idempotency_conflict": 409,
    "hold_not_open": 409,
    # Who may spend the customer's money (app.services.payment_standing).
    "no_billing_customer": 409,
    "payment_overdue": 402,
    "unavailable": 503,
    "not_refundable": 409,
    "already_refunded": 409,
    "credits_held": 409,
}


def status_for(exc: LedgerError) -> int:
    """The HTTP status of a refusal: 422 invalid_request unless its code says otherwise."""
    return _STATUS.get(exc.code, 422)
