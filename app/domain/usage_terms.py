"""Credits described in use terms: "-50 credits for Report Generation (1 report)",
"about 48 reports left", "2,500 credits left, about 50 reports. ...".

People do not think in credits; they think in reports, conversions or gigabytes. These pure
functions turn ledger numbers into the sentences shown in ledger entries, wallet views, catalog
guidance and low-balance alerts. Standard library only (see the dependency rule in DESIGN.md).
Amounts are passed as positive magnitudes; the sign in the text comes from the function used.
"""

from __future__ import annotations

from app.domain.forecast import Forecast

# Units of measure are symbols, not nouns: "2 GB", never "2 GBs".
_INVARIANT = frozenset({"B", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB"})
_VOWELS = frozenset("aeiou")


def fmt(n: int) -> str:
    """Thousands separators: 2500 -> "2,500"."""
    return f"{n:,}"


def plural(unit: str, count: int) -> str:
    """The unit noun as it reads next to `count`: ("report", 2) -> "reports".

    Only the last word is inflected, so "file conversion" -> "file conversions".
    """
    if abs(count) == 1:
        return unit
    head, _, word = unit.rpartition(" ")
    if not word or word in _INVARIANT:
        return unit
    if word.endswith("y") and word[-2:-1].lower() not in _VOWELS and len(word) > 1:
        word = word[:-1] + "ies"
    elif word.endswith(("s", "x", "z", "ch", "sh")):
        word += "es"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def credits_word(n: int) -> str:
    return "credit" if abs(n) == 1 else "credits"


def _credits(n: int) -> str:
    """Magnitude with its noun, "1 credit" / "2,500 credits"; callers add the sign."""
    return f"{fmt(abs(n))} {credits_word(n)}"


def describe_debit(credits: int, label: str, quantity: int, unit: str) -> str:
    """Usage entry text, e.g. "-50 credits for Report Generation (1 report)"."""
    used = f"{fmt(quantity)} {plural(unit, quantity)}"
    return f"-{_credits(credits)} for {label} ({used})"


def describe_metered_debit(credits: int, label: str, quantity: int, unit: str) -> str:
    """Usage Kinde metered, e.g. "-50 credits for Report Generation (1 report) (metered by
    Kinde)"."""
    return describe_debit(credits, label, quantity, unit) + " (metered by Kinde)"


def describe_credit(credits: int, reason: str) -> str:
    """Credit entry text, e.g. "+5,000 credits: Starter pack", "+1 credit: goodwill"."""
    return f"+{_credits(credits)}: {reason}"


def describe_signup_credit(credits: int) -> str:
    """Sign-up grant text, e.g. "+500 sign-up credits"."""
    return f"+{fmt(abs(credits))} sign-up {credits_word(credits)}"


def describe_hold(credits: int, label: str | None = None) -> str:
    """Hold text, e.g. "Held 50 credits for Report Generation" (no sign: balance unchanged)."""
    return f"Held {_credits(credits)}" + (f" for {label}" if label else "")


def describe_capture(credits: int, label: str | None = None) -> str:
    """Capture text, e.g. "-45 credits for Report Generation (captured hold)"."""
    return f"-{_credits(credits)}" + (f" for {label}" if label else "") + " (captured hold)"


def describe_release(credits: int, label: str | None = None) -> str:
    """Release text, e.g. "Released 5 held credits for Report Generation"."""
    word = "held credit" if abs(credits) == 1 else "held credits"
    return f"Released {fmt(abs(credits))} {word}" + (f" for {label}" if label else "")


def describe_hold_expired(credits: int) -> str:
    """A hold that ran out, e.g. "Hold of 50 credits expired unused"."""
    return f"Hold of {_credits(credits)} expired unused"


def describe_expiry(credits: int, reason: str) -> str:
    """Expiry text, e.g. "-300 credits expired (Starter pack)"."""
    return f"-{_credits(credits)} expired ({reason})"


def describe_unused_expiry(credits: int, what: str, when: str) -> str:
    """Expiry of unused plan credits, e.g. "-700 credits: unused Basic plan credits for Nov
    2026 expired at period end"."""
    return f"-{_credits(credits)}: unused {what} expired {when}"


def units_left(balance: int, credits_per_unit: int) -> int:
    """Whole units the balance still pays for: floored, never negative."""
    # A zero/negative price would divide by zero or invert the answer; such a feature is free
    # or misconfigured, and "0 left" is the answer that never over-promises.
    return max(balance, 0) // credits_per_unit if credits_per_unit > 0 else 0


def describe_units_left(balance: int, credits_per_unit: int, unit: str) -> str:
    """Value in use terms: "about 48 reports left", "no reports left", "in arrears by 9 credits"."""
    if balance < 0:
        return f"in arrears by {_credits(balance)}"
    n = units_left(balance, credits_per_unit)
    if n == 0:
        return f"no {plural(unit, 0)} left"
    return f"about {fmt(n)} {plural(unit, n)} left"


def runway_clause(runway: Forecast | None) -> str | None:
    """The alert's runway sentence from the forecast (app.domain.forecast), or None when
    nothing was used: "At your pace of the last 7 days they last about 3 days." (floored)."""
    if runway is None or runway.days_left is None:
        return None
    if runway.days_left < 1:
        span = "less than a day"
    else:
        span = f"about {fmt(runway.days_left)} {'day' if runway.days_left == 1 else 'days'}"
    if runway.window_days == 1:
        return f"At your pace today they last {span}."
    return f"At your pace of the last {runway.window_days} days they last {span}."


def join_words(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def low_balance_message(
    balance: int,
    unit_hint: tuple[str, int] | None,
    runway: Forecast | None,
    top_up_url: str | None,
    paused: list[str] | None = None,
) -> str:
    """The alert text: "2,500 credits left, about 50 reports. At your pace of the last 7 days
    they last about 3 days. Top up: https://...". Sentences that do not apply are left out.

    `unit_hint` is (unit noun, credits per unit) of the wallet's main feature, if known. At or
    below zero the text says what stops working: "Your credits are used up: reports are paused
    until you top up." naming `paused` (plural nouns) when given, else the hint's unit.
    """
    parts: list[str] = []
    if balance <= 0:
        if paused is None:
            paused = [plural(unit_hint[0], 2)] if unit_hint is not None else []
        stopped = paused
        if stopped:
            parts.append(f"Your credits are used up: {join_words(stopped)} are paused until "
                         f"you top up.")
        else:
            parts.append("Your credits are used up: top up to keep going.")
        if balance < 0:
            parts.append(f"You owe {_credits(balance)}, taken from your next top-up.")
    else:
        head = f"{_credits(balance)} left"
        if unit_hint is not None:
            unit, credits_per_unit = unit_hint
            n = units_left(balance, credits_per_unit)
            if n > 0:
                head += f", about {fmt(n)} {plural(unit, n)}"
            elif credits_per_unit > 0:
                head += f", not enough for one {unit}"
        parts.append(head + ".")
        clause = runway_clause(runway)
        if clause is not None:
            parts.append(clause)
    if top_up_url:
        parts.append(f"Top up: {top_up_url}")
    return " ".join(parts)
