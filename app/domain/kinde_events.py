"""Kinde webhook events as plain data: the envelope, what kind of event it is, and one tolerant
extractor for the (UNCONFIRMED) billing payload shapes.

Kinde documents the envelope (`type`, `event_id`, `source`, `timestamp`, `data`) and the user /
organization shapes, but no public source shows a billing `data` object, and Kinde's own
integrations guess differently (see /work/shared/kinde/REFERENCE.md). So every billing field is
read here and only here, from every spelling we know of: when Kinde's real shape turns out to
differ, this is the one place to change. Nothing is guessed silently: a field we cannot read is
`None`, and the service parks the event with a reason instead of dropping or mis-applying it.

Pure standard library (plus the ledger's wallet-id rule): no Flask, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Literal

from app.domain.ledger import LedgerError, owner_type_of

# Largest meter value we accept (units). Kinde-reported usage is never refused, so an absurd
# value would put a wallet into absurd arrears and could overflow BIGINT credits: park instead.
MAX_METER_VALUE = 10**12
# Column widths in the inbox / wallets tables; longer ids cannot be ours, so they read as None.
MAX_ID_LENGTH = 64
MAX_EVENT_ID_LENGTH = 128
MAX_TYPE_LENGTH = 80

MeterType = Literal["delta", "absolute"]


class EventKind(Enum):
    """What the service does with an event type."""

    USER_CREATED = "user_created"
    ORG_CREATED = "org_created"
    METER_USAGE = "meter_usage"
    MAPPING = "mapping"  # learn the billing customer / agreement / plan of a wallet
    HISTORY = "history"  # recorded on the wallet's history; later issues act on them
    IGNORED = "ignored"


_KINDS: dict[str, EventKind] = {
    "user.created": EventKind.USER_CREATED,
    "organization.created": EventKind.ORG_CREATED,
    "customer.meter_usage_updated": EventKind.METER_USAGE,
    "customer.agreement_created": EventKind.MAPPING,
    "customer.plan_assigned": EventKind.MAPPING,
    "customer.plan_changed": EventKind.MAPPING,
    "customer.agreement_cancelled": EventKind.HISTORY,
    "customer.payment_failed": EventKind.HISTORY,
    "customer.payment_succeeded": EventKind.HISTORY,
    "customer.invoice_overdue": EventKind.HISTORY,
}
HANDLED_TYPES: frozenset[str] = frozenset(_KINDS)


def classify(event_type: str) -> EventKind:
    """The handling of an event type; anything we don't know is IGNORED (still answered 200)."""
    return _KINDS.get(event_type, EventKind.IGNORED)


class InvalidEvent(ValueError):
    """A verified payload that still cannot be stored (e.g. an event id longer than the key)."""


@dataclass(frozen=True)
class KindeEvent:
    """The envelope of a verified webhook; `data` is kept as Kinde sent it."""

    event_id: str
    type: str
    source: str | None
    timestamp: datetime | None
    data: Mapping[str, Any]
    payload: Mapping[str, Any]

    @property
    def kind(self) -> EventKind:
        return classify(self.type)


def parse_envelope(claims: Mapping[str, Any]) -> KindeEvent:
    """Read the envelope of verified claims. Raises InvalidEvent for what cannot be keyed."""
    event_id = claims.get("event_id")
    event_type = claims.get("type")
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent("webhook payload has no event_id")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent("webhook payload has no type")
    event_id, event_type = event_id.strip(), event_type.strip()
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidEvent(f"event_id is longer than {MAX_EVENT_ID_LENGTH} characters")
    if len(event_type) > MAX_TYPE_LENGTH:
        raise InvalidEvent(f"type is longer than {MAX_TYPE_LENGTH} characters")
    data = claims.get("data")
    source = claims.get("source")
    return KindeEvent(
        event_id=event_id,
        type=event_type,
        source=source if isinstance(source, str) else None,
        # event_timestamp (when it happened) is better than timestamp (when it was sent), but
        # is optional.
        timestamp=parse_timestamp(claims.get("event_timestamp"))
        or parse_timestamp(claims.get("timestamp")),
        data=data if isinstance(data, Mapping) else {},
        payload=claims,
    )


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 with an offset or `Z` (both occur), as aware UTC; anything else is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # A time without an offset is taken as UTC: Kinde documents only offset/Z forms.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# -- tolerant field reading --------------------------------------------------------------------


def _path(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _first_text(data: Mapping[str, Any], *paths: str) -> str | None:
    """The first non-empty string (or integer, as text) among the paths, within id width."""
    for dotted in paths:
        value = _path(data, dotted)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            return text if len(text) <= MAX_ID_LENGTH else None
    return None


def _first_present(data: Mapping[str, Any], *paths: str) -> Any:
    for dotted in paths:
        value = _path(data, dotted)
        if value is not None and value != "":
            return value
    return None


def _owner(value: str | None, prefix: str) -> str | None:
    """A user id / org code usable as a wallet id, else None (never a half-valid id)."""
    if value is None or not value.startswith(prefix):
        return None
    try:
        owner_type_of(value)
    except LedgerError:
        return None
    return value


def parse_meter_value(value: Any) -> tuple[int | None, str | None]:
    """A whole, non-negative number of units from an int, float or string (Kinde's API sends
    meter values as strings). Returns (units, None) or (None, why not)."""
    if value is None:
        return None, "no meter value (data.meter_value / data.quantity / data.value)"
    if isinstance(value, bool):
        return None, f"meter value {value!r} is not a number"
    try:
        # Through str(): a float like 2.0 stays exact, and nothing goes through float math.
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None, f"meter value {str(value)[:40]!r} is not a number"
    if not number.is_finite():
        return None, f"meter value {str(value)[:40]!r} is not a finite number"
    if number < 0:
        return None, f"meter value {number} is negative"
    if number != number.to_integral_value():
        # Credits are integers; rounding a fraction of a unit either way would be a guess.
        return None, f"meter value {number} is not a whole number of units"
    units = int(number)
    if units > MAX_METER_VALUE:
        return None, f"meter value {units} is implausibly large (over {MAX_METER_VALUE:,})"
    return units, None


@dataclass(frozen=True)
class BillingFields:
    """Everything a billing event may tell us, read tolerantly; None where it says nothing."""

    customer_id: str | None
    agreement_id: str | None
    plan_code: str | None
    user_id: str | None
    org_code: str | None
    feature_code: str | None
    value: int | None
    value_problem: str | None
    meter_type: MeterType
    period_key: str | None
    occurred_at: datetime | None
    # The agreement's current billing period, when the event carries it (plan credits).
    period_start: datetime | None = None
    period_end: datetime | None = None

    @property
    def owner_id(self) -> str | None:
        """The wallet the event names directly (org first: billing is usually per org)."""
        return self.org_code or self.user_id


def extract_billing(event: KindeEvent) -> BillingFields:
    """THE tolerant extractor for billing payloads (customer.* events, and customer ids that
    may appear on user/organization events). Every spelling we know of is tried in order."""
    data = event.data
    value, problem = parse_meter_value(
        _first_present(data, "meter_value", "quantity", "value", "usage.meter_value")
    )
    meter_type_raw = _first_text(data, "meter_type_code", "meter_type")
    meter_type: MeterType = (
        "absolute" if meter_type_raw and meter_type_raw.lower() == "absolute" else "delta"
    )
    occurred_at = (
        parse_timestamp(_first_present(data, "meter_usage_timestamp", "timestamp"))
        or event.timestamp
    )
    return BillingFields(
        customer_id=_first_text(
            data,
            "customer_id",
            "customer.id",
            "billing_customer_id",
            "user.billing.customer_id",
            "organization.billing.billing_customer_id",
        ),
        agreement_id=_first_text(
            data, "agreement_id", "customer_agreement_id", "agreement.id"
        ),
        plan_code=_first_text(
            data, "plan_code", "plan.code", "new_plan_code", "agreement.plan_code"
        ),
        user_id=_owner(_first_text(data, "user_id", "user.id", "customer.user_id"), "kp_"),
        org_code=_owner(
            _first_text(data, "org_code", "organization_code", "organization.code",
                        "customer.org_code"),
            "org_",
        ),
        feature_code=_first_text(
            data, "feature_code", "billing_feature_code", "meter_id", "feature.code"
        ),
        value=value,
        value_problem=problem,
        meter_type=meter_type,
        period_key=_period_key(data, occurred_at),
        occurred_at=occurred_at,
        period_start=parse_timestamp(_first_present(
            data, "current_period_start", "period_start", "agreement.current_period_start",
            "billing_period_start",
        )),
        period_end=parse_timestamp(_first_present(
            data, "current_period_end", "period_end", "agreement.current_period_end",
            "billing_period_end",
        )),
    )


def _period_key(data: Mapping[str, Any], occurred_at: datetime | None) -> str | None:
    """Which billing period an absolute (running-total) value belongs to.

    The period start when the event gives one (normalised, so `...Z` and `...+00:00` spellings
    of one instant agree); else the calendar month (UTC) of the usage, since Kinde's periods are
    monthly by default. None when there is no date at all: the event is then parked.
    """
    raw = _first_present(
        data, "period_start", "current_period_start", "billing_period_start",
        "agreement.current_period_start",
    )
    if raw is not None:
        start = parse_timestamp(raw)
        if start is not None:
            return f"start:{start.isoformat()}"
        text = str(raw).strip()
        return f"start:{text}"[:MAX_ID_LENGTH]
    if occurred_at is not None:
        return f"month:{occurred_at:%Y-%m}"
    return None


def signup_owner(event: KindeEvent) -> tuple[str | None, str | None]:
    """Wallet id and e-mail of a user.created / organization.created event."""
    if event.kind is EventKind.USER_CREATED:
        user_id = _owner(_first_text(event.data, "user.id", "user_id"), "kp_")
        return user_id, _email(event.data, "user.email")
    if event.kind is EventKind.ORG_CREATED:
        org = _owner(_first_text(event.data, "organization.code", "org_code"), "org_")
        return org, _email(event.data, "organization.billing_email", "organization.email")
    return None, None


def _email(data: Mapping[str, Any], *paths: str) -> str | None:
    for dotted in paths:
        value = _path(data, dotted)
        if isinstance(value, str) and "@" in value and len(value.strip()) <= 320:
            return value.strip()
    return None
