"""Team budgets: how much one member of an organization may spend from the org's wallet.

A *member* is the Kinde user (`kp_...`) spending from an org wallet: the `sub` of a user token,
or the `member` an M2M caller names. An admin sets caps per member (credits per UTC day and
per UTC month; `None` = no cap). Plain Python (stdlib only): the service applies these rules
under the wallet's row lock, in the debit's own transaction, so a cap is exactly as strong as
the balance.

Rules:
- What counts against a cap in a window is what the member spent in that window (usage and
  captured holds, dated by when the ledger wrote them) plus the member's open holds: a hold
  reserves budget, a capture (at most the hold) turns the captured amount into spend and
  frees the rest, a release (or expiry) gives it all back.
- Open holds count against the current day and month whatever day they were placed: the
  credits they reserve will be spent (if at all) in the window where they are captured.
- Windows are UTC calendar days and months: spend on 23:59:59 counts for that day, and at
  00:00:00 the day (and on the 1st, the month) starts from zero.
- A cap lowered below what was already spent leaves nothing to spend, never a negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.ledger import LedgerError

MEMBER_PREFIX = "kp_"
MAX_MEMBER_LENGTH = 64
MAX_CAP = 10**12
_MEMBER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class InvalidMember(LedgerError):
    code = "invalid_request"


class MemberBudgetExceeded(LedgerError):
    """402: this usage would take the member past a cap; the org wallet is untouched."""

    code = "member_budget_exceeded"

    def __init__(self, member: str, needed: int, available_to_member: int, window: str) -> None:
        super().__init__(
            f"This needs {needed:,} credits but member {member} has only "
            f"{max(available_to_member, 0):,} left of their {window} budget."
        )
        self.member = member
        self.needed = needed
        self.available_to_member = max(available_to_member, 0)
        self.window = window


def validate_member(value: Any) -> str:
    """A member is a Kinde user id: `kp_` then letters, digits, `_` or `-` (64 at most)."""
    if not isinstance(value, str):
        raise InvalidMember("member must be a Kinde user id (kp_...)")
    if (
        not value.startswith(MEMBER_PREFIX)
        or len(value) <= len(MEMBER_PREFIX)
        or len(value) > MAX_MEMBER_LENGTH
        or not all(c in _MEMBER_CHARS for c in value)
    ):
        raise InvalidMember(
            f"member {value[:64]!r} is not a Kinde user id (kp_ followed by letters, digits, "
            f"_ or -, {MAX_MEMBER_LENGTH} characters at most)"
        )
    return value


def require_org_wallet(wallet_id: str) -> None:
    """Members and budgets exist only on organization wallets."""
    if not wallet_id.startswith("org_"):
        raise InvalidMember(
            "members and budgets apply to organization wallets (org_...) only; a user's own "
            "wallet has no members"
        )


# -- UTC windows -----------------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("naive datetime: budgets need aware UTC times")
    return now.astimezone(UTC)


def day_key(now: datetime) -> str:
    """The UTC day `now` falls in, e.g. "2026-11-24"."""
    return _utc(now).strftime("%Y-%m-%d")


def month_key(now: datetime) -> str:
    """The UTC month `now` falls in, e.g. "2026-11"."""
    return _utc(now).strftime("%Y-%m")


def day_start(now: datetime) -> datetime:
    moment = _utc(now)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def next_day_start(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
        month=start.month + 1
    )


# -- caps and what counts against them -------------------------------------------------------


@dataclass(frozen=True)
class Caps:
    credits_per_day: int | None = None
    credits_per_month: int | None = None

    @property
    def any(self) -> bool:
        return self.credits_per_day is not None or self.credits_per_month is not None

    def updated(self, data: dict[str, Any]) -> Caps:
        """Apply a PUT body: a given number sets a cap, `None` removes it, absent keeps it."""
        unknown = set(data) - {"credits_per_day", "credits_per_month"}
        if unknown:
            raise InvalidMember(f"unknown budget fields: {', '.join(sorted(unknown))}")
        if not data:
            raise InvalidMember("send credits_per_day and/or credits_per_month (null removes)")
        values = {"credits_per_day": self.credits_per_day,
                  "credits_per_month": self.credits_per_month}
        for name, value in data.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int)
                or not (0 <= value <= MAX_CAP)
            ):
                raise InvalidMember(f"{name} must be a whole number from 0 to {MAX_CAP:,}, "
                                    "or null to remove the cap")
            values[name] = value
        return Caps(**values)

    def as_dict(self) -> dict[str, int | None]:
        return {"credits_per_day": self.credits_per_day,
                "credits_per_month": self.credits_per_month}


@dataclass(frozen=True)
class MemberUsage:
    """A member's committed credits right now: spent today, spent this month, held open."""

    spent_today: int = 0
    spent_month: int = 0
    held: int = 0


def remaining(caps: Caps, usage: MemberUsage) -> tuple[int | None, str | None]:
    """Credits the member may still commit, and the window that binds (None, None = no cap)."""
    best: tuple[int | None, str | None] = (None, None)
    for cap, spent, window in (
        (caps.credits_per_day, usage.spent_today, "daily"),
        (caps.credits_per_month, usage.spent_month, "monthly"),
    ):
        if cap is None:
            continue
        left = max(cap - spent - usage.held, 0)
        if best[0] is None or left < best[0]:
            best = (left, window)
    return best


def admit(
    member: str, caps: Caps, usage: MemberUsage, amount: int, *,
    wallet_spendable: int | None = None,
) -> None:
    """Refuse `amount` more if it would take the member past a cap.

    `wallet_spendable` bounds `available_to_member` in the error, since a member can never
    spend more than the org wallet has either. (A capture needs no admission: it is at most
    its hold, whose reservation it replaces.)
    """
    left, window = remaining(caps, usage)
    if left is None:
        return
    if amount > left:
        shown = left
        if wallet_spendable is not None:
            shown = min(shown, max(wallet_spendable, 0))
        raise MemberBudgetExceeded(member, amount, shown, window or "")
