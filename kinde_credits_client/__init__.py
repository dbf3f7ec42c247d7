"""kinde_credits_client: call the kinde-credits service from a product's backend.

    from kinde_credits_client import CreditsClient, InsufficientCredits

    credits = CreditsClient("https://credits.example.com", token=get_m2m_token)
    credits.record_usage("org_acme", "report_generation", 1, member="kp_alice")

Typed, `requests`-based, safe to retry (every write carries an idempotency key); see
`kinde_credits_client.client`. `requires_credits` (a Flask decorator) imports Flask only when a
decorated view runs. Nothing here imports the service's own code.
"""

from __future__ import annotations

from kinde_credits_client.client import (
    CheckResult,
    CreditsClient,
    Hold,
    LedgerEntry,
    LedgerPage,
    UsageResult,
    Wallet,
)
from kinde_credits_client.errors import (
    AlreadyRefunded,
    CreditsError,
    CreditsHeld,
    Forbidden,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidRequest,
    MemberBudgetExceeded,
    NoBillingCustomer,
    NotFound,
    NotRefundable,
    PaymentOverdue,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnknownBundle,
    UnknownFeature,
)
from kinde_credits_client.flask_ext import current_hold, init_app, requires_credits

__all__ = [
    "AlreadyRefunded", "CreditsHeld", "NotRefundable",
    "CheckResult", "CreditsClient", "CreditsError", "Forbidden", "Hold", "HoldNotOpen",
    "IdempotencyConflict", "InsufficientCredits", "InvalidRequest", "LedgerEntry",
    "LedgerPage", "MemberBudgetExceeded", "NoBillingCustomer", "NotFound", "PaymentOverdue",
    "ServiceUnavailable", "TransportError",
    "Unauthorized", "UnknownBundle", "UnknownFeature", "UsageResult", "Wallet",
    "current_hold", "init_app", "requires_credits",
]
