"""The limits a request's numbers must keep, named once, and the validators that apply them.

The HTTP schemas and the use cases check the same bounds with these, so an out-of-range value
is refused with the same words wherever it arrives (422 invalid_request).
"""

from __future__ import annotations

from typing import Any, TypeGuard

from app.domain.catalog import Feature
from app.domain.ledger import InvalidRequest

MAX_QUANTITY = 10**9
MAX_CREDITS = 10**12
MAX_HOLD_SECONDS = 7 * 24 * 3600
DEFAULT_HOLD_SECONDS = 15 * 60
MAX_PAGE_SIZE = 200


def is_whole_credits(value: Any) -> TypeGuard[int]:
    """A whole number of credits from 1 to MAX_CREDITS (a bool is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, int) and 0 < value <= MAX_CREDITS


def require_credits(value: Any, message: str = "credits must be a positive whole number") -> int:
    if not is_whole_credits(value):
        raise InvalidRequest(message)
    return int(value)


def usage_credits(feature: Feature, quantity: Any) -> int:
    """The credits `quantity` units of `feature` cost, refusing a quantity out of range."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidRequest(f"quantity must be a whole number, got {quantity!r}")
    if not (0 < quantity <= MAX_QUANTITY):
        raise InvalidRequest(f"quantity must be from 1 to {MAX_QUANTITY:,}, got {quantity}")
    return quantity * feature.credits_per_unit


def looks_like_email(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 320 or any(c.isspace() for c in value):
        return False
    local, _, domain = value.rpartition("@")
    return bool(local) and "." in domain and not domain.startswith(".")
