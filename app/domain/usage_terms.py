"""Credits described in use terms: "-50 credits for Report Generation (1 report)",
"about 48 reports left". Pure functions, standard library only."""

from __future__ import annotations

_INVARIANT = {"GB", "MB", "TB", "KB"}


def fmt(n: int) -> str:
    return f"{n:,}"


def plural(unit: str, count: int) -> str:
    if count == 1 or unit in _INVARIANT:
        return unit
    head, _, last = unit.rpartition(" ")
    word = last or unit
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        word = word[:-1] + "ies"
    elif word.endswith(("s", "x", "ch", "sh")):
        word += "es"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def credits_word(n: int) -> str:
    return "credit" if abs(n) == 1 else "credits"


def describe_debit(credits: int, label: str, quantity: int, unit: str) -> str:
    used = f"{fmt(quantity)} {plural(unit, quantity)}"
    return f"-{fmt(credits)} {credits_word(credits)} for {label} ({used})"


def describe_credit(credits: int, reason: str) -> str:
    return f"+{fmt(credits)} {credits_word(credits)}: {reason}"


def units_left(balance: int, credits_per_unit: int) -> int:
    return max(balance, 0) // credits_per_unit if credits_per_unit > 0 else 0


def describe_units_left(balance: int, credits_per_unit: int, unit: str) -> str:
    if balance < 0:
        return f"in arrears by {fmt(-balance)} {credits_word(balance)}"
    n = units_left(balance, credits_per_unit)
    if n == 0:
        return f"no {plural(unit, 0)} left"
    return f"about {fmt(n)} {plural(unit, n)} left"
