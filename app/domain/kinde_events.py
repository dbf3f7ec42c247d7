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

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Literal

from app.domain.agreements import same_period
from app.domain.ledger import LedgerError, owner_type_of
from app.domain.text import text_problem, unsafe_char  # the one character rule (re-exported)

# Largest meter value we accept (units). Kinde-reported usage is never refused, so an absurd
# value would put a wallet into absurd arrears and could overflow BIGINT credits: park instead.
MAX_METER_VALUE = 10**12
# A meter value as text: ASCII digits, optionally with a fraction (2.0 is two units).
_ASCII_NUMBER = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?", re.ASCII)
_START_KEY = "start:"
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
    """Kept for callers of the earlier API: `parse_envelope` no longer raises it. A verified
    payload whose envelope is unusable is parked (see `KindeEvent.problems`), not refused."""


# How deep a payload may nest. Kinde's payloads are a few levels deep; much deeper ones are
# malformed, and would otherwise exhaust the stack when they are serialised or read back.
MAX_DEPTH = 32
UNUSABLE_ID_PREFIX = "unusable_"


@dataclass(frozen=True)
class KindeEvent:
    """The envelope of a verified webhook; `data` is kept as Kinde sent it.

    `problems` lists why the envelope itself is malformed (an event id or type that cannot be
    stored, a timestamp that cannot be read, `data` that is not an object, deep nesting): such
    an event is kept, parked with those reasons. When the event id is unusable, `event_id` is a
    stand-in derived from the delivery (so a redelivery is still recognised as a duplicate).
    """

    event_id: str
    type: str
    source: str | None
    timestamp: datetime | None
    data: Mapping[str, Any]
    payload: Mapping[str, Any]
    problems: tuple[str, ...] = ()

    @property
    def kind(self) -> EventKind:
        return classify(self.type)


def show(value: Any, limit: int = 40) -> str:
    """A value for a park reason: escaped (never a raw NUL or control character), shortened."""
    if isinstance(value, str):
        text = repr(value[:limit]) + ("..." if len(value) > limit else "")
    elif value is None or isinstance(value, bool | float):
        text = repr(value)
    elif isinstance(value, int):
        text = repr(value) if value.bit_length() < 3 * limit else f"an int of over {limit} digits"
    else:
        text = f"a {type(value).__name__}"
    return text


def _sanitized(value: str, limit: int) -> str:
    return "".join("?" if unsafe_char(ch) else ch for ch in value)[:limit]


def _depth_over(value: Any, limit: int) -> bool:
    """Does `value` nest deeper than `limit`? Iterative, so a deep payload can't blow the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, Mapping):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((child, depth + 1) for child in node)
    return False


def _derived_id(claims: Mapping[str, Any]) -> str:
    try:
        basis = json.dumps(claims, sort_keys=True, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        basis = repr(sorted(str(k) for k in claims))
    return UNUSABLE_ID_PREFIX + hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()[:48]


def parse_envelope(claims: Mapping[str, Any], *, fallback_id: str | None = None) -> KindeEvent:
    """Read the envelope of verified claims. Never raises: what is malformed is listed in
    `problems` (the event is then parked). `fallback_id` keys an event whose own id is unusable
    (the service derives it from the delivery's body); without one it is derived from the claims.
    """
    problems: list[str] = []
    if _depth_over(claims, MAX_DEPTH):
        problems.append(f"payload is nested deeper than {MAX_DEPTH} levels")

    raw_id = claims.get("event_id")
    event_id: str | None = None
    if not isinstance(raw_id, str) or not raw_id.strip():
        problems.append(f"event_id {show(raw_id)} is not a non-empty string")
    elif (why := text_problem(raw_id.strip())) is not None:
        problems.append(f"event_id {show(raw_id)} {why}")
    elif len(raw_id.strip()) > MAX_EVENT_ID_LENGTH:
        problems.append(f"event_id is longer than {MAX_EVENT_ID_LENGTH} characters")
    else:
        event_id = raw_id.strip()
    if event_id is None:
        event_id = fallback_id or _derived_id(claims)

    raw_type = claims.get("type")
    event_type = raw_type.strip() if isinstance(raw_type, str) else ""
    if not event_type:
        problems.append(f"type {show(raw_type)} is not a non-empty string")
        event_type = "(none)"
    elif (why := text_problem(event_type)) is not None:
        problems.append(f"type {show(raw_type)} {why}")
        event_type = _sanitized(event_type, MAX_TYPE_LENGTH)
    elif len(event_type) > MAX_TYPE_LENGTH:
        problems.append(f"type is longer than {MAX_TYPE_LENGTH} characters")
        event_type = event_type[:MAX_TYPE_LENGTH]

    # event_timestamp (when it happened) is better than timestamp (when it was sent), but is
    # optional. One that is there but cannot be read makes the event malformed: park it.
    stamps: dict[str, datetime | None] = {}
    for name in ("event_timestamp", "timestamp"):
        raw = claims.get(name)
        if raw is None or raw == "":
            stamps[name] = None
            continue
        stamps[name] = parse_timestamp(raw)
        if stamps[name] is None:
            problems.append(f"{name} {show(raw)} {_time_problem(raw)}")

    data = claims.get("data")
    if data is not None and not isinstance(data, Mapping):
        problems.append(f"data is {show(data)}, not an object")
    source = claims.get("source")
    return KindeEvent(
        event_id=event_id,
        type=event_type,
        source=source if isinstance(source, str) and not text_problem(source) else None,
        timestamp=stamps["event_timestamp"] or stamps["timestamp"],
        data=data if isinstance(data, Mapping) else {},
        payload=claims,
        problems=tuple(problems),
    )


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 with an offset or `Z` (both occur), as aware UTC; anything else is None,
    including a time that cannot be converted to UTC (e.g. 0001-01-01T00:00:00+01:00)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    text = value.strip()
    if text_problem(text) is not None:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            # A time without an offset is taken as UTC: Kinde documents only offset/Z forms.
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _time_problem(value: Any) -> str:
    """Why a given timestamp was not read (for a park reason)."""
    why = text_problem(value) if isinstance(value, str) else None
    return why or "cannot be read as a date and time"


# -- tolerant field reading --------------------------------------------------------------------


def _path(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


Check = Callable[[str], str | None]


def _read_text(
    data: Mapping[str, Any], *paths: str, max_length: int = MAX_ID_LENGTH,
    check: Check | None = None,
) -> tuple[str | None, str | None]:
    """The first USABLE non-empty string (or integer, as text) among the paths: a spelling that
    is too long, holds a control character, has the wrong type or fails `check` is skipped, so
    a later valid spelling still counts. Returns (text, None), or (None, why the first unusable
    spelling was refused) when none is usable, or (None, None) when none is given at all."""
    problem: str | None = None
    for dotted in paths:
        value = _path(data, dotted)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            problem = problem or f"data.{dotted} is {show(value)}, not text"
            continue
        if isinstance(value, int):
            if value.bit_length() > 4 * max_length:  # str() of a huge int is slow or refused
                problem = problem or f"data.{dotted} is longer than {max_length} characters"
                continue
            value = str(value)
        text = value.strip()
        if not text:
            continue
        why = text_problem(text)
        if why is None and len(text) > max_length:
            why = f"is longer than {max_length} characters"
        if why is None and check is not None:
            why = check(text)
        if why is not None:
            problem = problem or f"data.{dotted} {show(value)} {why}"
            continue
        return text, None
    return None, problem


def _first_text(data: Mapping[str, Any], *paths: str) -> str | None:
    return _read_text(data, *paths)[0]


def _first_present(data: Mapping[str, Any], *paths: str) -> Any:
    for dotted in paths:
        value = _path(data, dotted)
        if value is not None and value != "":
            return value
    return None


def _read_time(data: Mapping[str, Any], *paths: str) -> tuple[datetime | None, str | None]:
    """The first readable timestamp among the paths (later spellings count when an earlier one
    is unreadable); (None, why) when one is given but none can be read."""
    problem: str | None = None
    for dotted in paths:
        value = _path(data, dotted)
        if value is None or value == "":
            continue
        parsed = parse_timestamp(value)
        if parsed is not None:
            return parsed, None
        problem = problem or f"data.{dotted} {show(value)} {_time_problem(value)}"
    return None, problem


def _owner_check(prefix: str) -> Check:
    def check(value: str) -> str | None:
        """A user id / org code usable as a wallet id (never a half-valid id)."""
        if not value.startswith(prefix):
            return f"does not start with {prefix!r}"
        try:
            owner_type_of(value)
        except LedgerError:
            return "is not a valid id"
        return None

    return check


def _owner(value: str | None, prefix: str) -> str | None:
    """A user id / org code usable as a wallet id, else None (never a half-valid id)."""
    if value is None or _owner_check(prefix)(value) is not None:
        return None
    return value


def parse_meter_value(value: Any) -> tuple[int | None, str | None]:
    """A whole, non-negative number of units from an int, float or string (Kinde's API sends
    meter values as strings). Returns (units, None) or (None, why not)."""
    if value is None:
        return None, "no meter value (data.meter_value / data.quantity / data.value)"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f"meter value {show(value)} is not a number"
    if isinstance(value, int) and value.bit_length() > 64:
        # Checked before any conversion: str() of a huge int is slow (or refused outright).
        return None, f"meter value {show(value)} is implausibly large (over {MAX_METER_VALUE:,})"
    text = str(value).strip()
    if text_problem(text) is not None:
        return None, f"meter value {show(value)} is not a number we accept"
    try:
        # Through str(): a float like 2.0 stays exact, and nothing goes through float math.
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None, f"meter value {show(value)} is not a number"
    if not number.is_finite():
        return None, f"meter value {show(value)} is not a finite number"
    if number < 0:
        return None, f"meter value {show(value)} is negative"
    # Compared as a Decimal BEFORE int(): int(Decimal("1e999999999")) would build a number
    # with a billion digits (minutes of CPU and gigabytes of memory).
    if number > MAX_METER_VALUE:
        return None, f"meter value {show(value)} is implausibly large (over {MAX_METER_VALUE:,})"
    if not _ASCII_NUMBER.fullmatch(text):
        # ASCII digits only: Decimal() also reads "1e3", "1_000" and other scripts' digits,
        # each a way for a signed payload to mean more units than it shows.
        return None, f"meter value {show(value)} is not a number we accept (ASCII digits only)"
    if number != number.to_integral_value():
        # Credits are integers; rounding a fraction of a unit either way would be a guess.
        return None, f"meter value {show(value)} is not a whole number of units"
    return int(number), None


@dataclass(frozen=True)
class BillingFields:
    """Everything a billing event may tell us, read tolerantly; None where it says nothing.

    `problems` lists fields that were given but could not be used by any spelling (wrong type,
    NUL or other control characters, too long, an unreadable date): the service parks such an
    event instead of acting on part of it.
    """

    customer_id: str | None
    agreement_id: str | None
    plan_code: str | None
    user_id: str | None
    org_code: str | None
    feature_code: str | None
    value: int | None
    value_problem: str | None
    meter_type: MeterType
    period_start: datetime | None
    period_end: datetime | None
    occurred_at: datetime | None
    problems: tuple[str, ...] = ()

    @property
    def owner_id(self) -> str | None:
        """The wallet the event names directly (org first: billing is usually per org)."""
        return self.org_code or self.user_id

    @property
    def period_key(self) -> str | None:
        """The key of the period the event states, if it states one (never guessed)."""
        return period_key(self.period_start) if self.period_start else None


def known_period_key(start: datetime, known_keys: list[str]) -> str:
    """The key of the known period that `start` belongs to (a start within a day of a known
    one is that period: Kinde's clocks drift by seconds), else `start`'s own key. One period
    per agreement, whatever the drift: a total restated with a start a second later is not a
    new period whose whole total would be debited again."""
    for key in known_keys:
        if not key.startswith(_START_KEY):
            continue
        try:
            known = datetime.fromisoformat(key[len(_START_KEY):])
        except ValueError:
            continue
        if same_period(known, start if start.tzinfo else start.replace(tzinfo=UTC)):
            return key
    return period_key(start)


def absolute_increase(total: int, last_total: int | None) -> int:
    """Kinde's absolute meter value is the period's running total: only its increase over the
    last total seen for the period is new usage (never negative: totals are not lowered)."""
    return max(0, total - (last_total or 0))


def period_key(start: datetime) -> str:
    """The meter-readings key of the billing period that starts at `start`. Normalised to UTC,
    so `...Z` and `...+00:00` spellings of one instant (from events or from Kinde's API) agree.
    """
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return f"{_START_KEY}{start.astimezone(UTC).isoformat()}"


def extract_billing(event: KindeEvent) -> BillingFields:
    """THE tolerant extractor for billing payloads (customer.* events, and customer ids that
    may appear on user/organization events). Every spelling we know of is tried in order; the
    first usable one wins."""
    data = event.data
    problems: list[str] = []

    def text(*paths: str, check: Check | None = None) -> str | None:
        value, problem = _read_text(data, *paths, check=check)
        if problem:
            problems.append(problem)
        return value

    def time(*paths: str) -> datetime | None:
        value, problem = _read_time(data, *paths)
        if problem:
            problems.append(problem)
        return value

    value, value_problem = parse_meter_value(
        _first_present(data, "meter_value", "quantity", "value", "usage.meter_value")
    )
    meter_type: MeterType = "delta"
    occurred_at: datetime | None = event.timestamp
    if event.kind is EventKind.METER_USAGE:
        # Reading an unknown meter type as "delta" would debit a running total in full every
        # time it is reported: park instead.
        raw_type = text("meter_type_code", "meter_type", check=_meter_type_check)
        meter_type = "absolute" if raw_type and raw_type.lower() == "absolute" else "delta"
        occurred_at = time("meter_usage_timestamp", "timestamp") or event.timestamp
    return BillingFields(
        customer_id=text(
            "customer_id",
            "customer.id",
            "billing_customer_id",
            "user.billing.customer_id",
            "organization.billing.billing_customer_id",
        ),
        agreement_id=text("agreement_id", "customer_agreement_id", "agreement.id"),
        plan_code=text("plan_code", "plan.code", "new_plan_code", "agreement.plan_code"),
        user_id=text("user_id", "user.id", "customer.user_id", check=_owner_check("kp_")),
        org_code=text("org_code", "organization_code", "organization.code", "customer.org_code",
                      check=_owner_check("org_")),
        feature_code=text("feature_code", "billing_feature_code", "meter_id", "feature.code"),
        value=value,
        value_problem=value_problem,
        meter_type=meter_type,
        period_start=time("period_start", "current_period_start", "billing_period_start",
                          "agreement.current_period_start"),
        period_end=time("period_end", "current_period_end", "billing_period_end",
                        "agreement.current_period_end"),
        occurred_at=occurred_at,
        problems=tuple(problems),
    )


def _meter_type_check(value: str) -> str | None:
    return None if value.lower() in ("absolute", "delta") else "is neither 'delta' nor 'absolute'"


def signup_owner(event: KindeEvent) -> tuple[str | None, str | None]:
    """Wallet id and e-mail of a user.created / organization.created event."""
    owner, email, _ = read_signup(event)
    return owner, email


def read_signup(event: KindeEvent) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Wallet id, e-mail and the problems of a user.created / organization.created event (an
    id or address that is given but unusable, e.g. it holds a NUL character)."""
    problems: list[str] = []
    owner: str | None = None
    email: str | None = None
    if event.kind is EventKind.USER_CREATED:
        owner, problem = _read_text(event.data, "user.id", "user_id", check=_owner_check("kp_"))
        email, email_problem = _email(event.data, "user.email")
    elif event.kind is EventKind.ORG_CREATED:
        owner, problem = _read_text(event.data, "organization.code", "org_code",
                                    check=_owner_check("org_"))
        email, email_problem = _email(event.data, "organization.billing_email",
                                      "organization.email")
    else:
        return None, None, ()
    problems.extend(p for p in (problem, email_problem) if p)
    return owner, email, tuple(problems)


def _email_check(value: str) -> str | None:
    # Not an address at all (no "@"): not an e-mail we could use, and not stored.
    return None if "@" in value else "is not an e-mail address"


def _email(data: Mapping[str, Any], *paths: str) -> tuple[str | None, str | None]:
    email, problem = _read_text(data, *paths, max_length=320, check=_email_check)
    if problem and problem.endswith("is not an e-mail address"):
        problem = None  # harmless: ignored as before, never stored
    return email, problem
