"""Spend alerts: thresholds that fire once per crossing, and re-arm when credits arrive.

A threshold is a percentage of the reference balance (the balance right after the latest
credit) or an absolute number of credits, plus zero ("depleted"). It is crossed when the balance
falls to or below it. The set of thresholds that already fired lives on the wallet and changes
only under the wallet's lock, so racing debits cannot fire one twice. A debit crossing several
thresholds sends one alert, for the most severe (lowest); a credit re-arms the thresholds above
the new balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.ledger import InvalidRequest
from app.domain.limits import is_whole_credits


@dataclass(frozen=True)
class Threshold:
    key: str  # "p25" (percent), "c1000" (credits) or "zero": stable ids for the fired set
    credits: int
    percent: int | None = None


@dataclass(frozen=True)
class AlertSettings:
    thresholds_percent: tuple[int, ...] = (50, 25, 10)
    thresholds_credits: tuple[int, ...] = ()
    notify_at_zero: bool = True

    @classmethod
    def parse(cls, data: dict[str, Any], defaults: AlertSettings) -> AlertSettings:
        """Validate user input (PUT /alerts); unknown keys and bad values are refused."""
        unknown = set(data) - {"thresholds_percent", "thresholds_credits", "notify_at_zero"}
        if unknown:
            raise InvalidRequest(f"unknown alert setting(s): {', '.join(sorted(unknown))}")
        percent = data.get("thresholds_percent", list(defaults.thresholds_percent))
        credits = data.get("thresholds_credits", list(defaults.thresholds_credits))
        zero = data.get("notify_at_zero", defaults.notify_at_zero)
        if not isinstance(percent, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 100 for p in percent
        ):
            raise InvalidRequest("thresholds_percent must be whole percentages from 1 to 99")
        if not isinstance(credits, list) or not all(is_whole_credits(c) for c in credits):
            raise InvalidRequest("thresholds_credits must be positive whole numbers of credits")
        if len(percent) + len(credits) > 20:
            raise InvalidRequest("at most 20 thresholds")
        if not isinstance(zero, bool):
            raise InvalidRequest("notify_at_zero must be true or false")
        return cls(
            tuple(sorted(set(percent), reverse=True)),
            tuple(sorted(set(credits), reverse=True)),
            zero,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "thresholds_percent": list(self.thresholds_percent),
            "thresholds_credits": list(self.thresholds_credits),
            "notify_at_zero": self.notify_at_zero,
        }

    def thresholds(self, reference_balance: int) -> list[Threshold]:
        out = [
            Threshold(f"p{p}", reference_balance * p // 100, percent=p)
            for p in self.thresholds_percent
        ]
        out += [Threshold(f"c{c}", c) for c in self.thresholds_credits]
        if self.notify_at_zero:
            out.append(Threshold("zero", 0))
        return out


@dataclass(frozen=True)
class Alert:
    """An alert to send: `credits.depleted` at zero, `credits.balance_low` otherwise."""

    type: str
    balance: int
    reference_balance: int
    threshold: Threshold


def on_debit(
    settings: AlertSettings, reference_balance: int, balance: int, fired: frozenset[str]
) -> tuple[frozenset[str], Alert | None]:
    """Thresholds newly crossed by a debit: mark them all fired, alert for the lowest."""
    crossed = [
        t for t in settings.thresholds(reference_balance)
        if balance <= t.credits and t.key not in fired
        # A percent threshold of an empty reference (0 credits) says nothing: skip it.
        and not (t.percent is not None and reference_balance <= 0)
    ]
    if not crossed:
        return fired, None
    worst = min(crossed, key=lambda t: (t.credits, t.key != "zero"))
    kind = "credits.depleted" if worst.key == "zero" or balance <= 0 else "credits.balance_low"
    return fired | {t.key for t in crossed}, Alert(kind, balance, reference_balance, worst)


def on_credit(
    settings: AlertSettings, reference_balance: int, balance: int, fired: frozenset[str]
) -> frozenset[str]:
    """Re-arm every threshold above the new balance (percentages use the new reference)."""
    still_crossed = {
        t.key for t in settings.thresholds(reference_balance) if balance <= t.credits
    }
    return frozenset(k for k in fired if k in still_crossed)


def final_alert(
    alerts: list[Alert], fired: frozenset[str], balance: int, reference_balance: int
) -> list[Alert]:
    """What one write sends, given the alerts its debits raised in order: nothing if a later
    credit of the same write re-armed them all, else one alert for the most severe threshold
    still crossed, describing the balance the write ends at (not a passing balance)."""
    latest = {a.threshold.key: a for a in alerts}  # a re-armed key may fire again later
    still = [a for a in latest.values()
             if a.threshold.key in fired and balance <= a.threshold.credits]
    if not still:
        return []
    worst = min(still, key=lambda a: (a.threshold.credits, a.threshold.key != "zero"))
    kind = (
        "credits.depleted" if worst.threshold.key == "zero" or balance <= 0
        else "credits.balance_low"
    )
    return [Alert(kind, balance, reference_balance, worst.threshold)]
