"""The runway forecast, as one pure function: how fast a wallet spends, when it runs out,
what expires unused before then, and which bundle would last about a month.

Every place that tells a customer their runway (`GET /v1/wallets/{id}/forecast`, the
dashboard's runway line, alert texts, both client libraries through the API) uses `forecast`,
so they always agree.

Rules:
- pace: credits used (usage and captured holds) over the last 7 days, per day; when fewer
  than `MIN_ACTIVE_DAYS` of those 7 days saw any use, the last 30 days instead (a quiet week
  after a busy month should not read as "lasts for ever"); `window_days` says which;
- run-out: the available credits are spent at that pace, in the ledger's order (soonest
  expiring first); credits that expire before the pace reaches them are lost on the way
  (`expiring_before_run_out`) and the run-out comes that much sooner. Credits that open holds
  reserve are not available and are left out (the latest-expiring ones, as the ledger would);
- nothing used in the window: `credits_per_day` 0, `days_left` and `runs_out_at` None;
- `days_left` is floored (never over-promise); 0 when nothing is available; a run-out more
  than `HORIZON_DAYS` away is reported at that horizon;
- suggested bundle: the smallest bundle whose credits cover 30 days at this pace, else the
  largest; None without use or bundles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

SHORT_WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 30
MIN_ACTIVE_DAYS = 3
MONTH_DAYS = 30
# A run-out further away than this is reported at this horizon (dates stop at year 9999).
HORIZON_DAYS = 36_500


@dataclass(frozen=True)
class CreditsLeft:
    """A block's unused credits and when they expire (None: never)."""

    remaining: int
    expires_at: datetime | None


@dataclass(frozen=True)
class BundleOption:
    key: str
    credits: int


@dataclass(frozen=True)
class FeaturePace:
    feature: str
    credits_per_day: float


@dataclass(frozen=True)
class Forecast:
    available: int
    window_days: int
    credits_per_day: float
    days_left: int | None
    runs_out_at: datetime | None
    by_feature: tuple[FeaturePace, ...]
    expiring_before_run_out: int
    suggested_bundle: str | None


def usage_window(daily: Iterable[tuple[date, str | None, int]], today: date) -> int:
    """7, or 30 when fewer than MIN_ACTIVE_DAYS of the last 7 days saw use."""
    first = today - timedelta(days=SHORT_WINDOW_DAYS - 1)
    active = {day for day, _, credits in daily if day >= first and credits > 0}
    return SHORT_WINDOW_DAYS if len(active) >= MIN_ACTIVE_DAYS else LONG_WINDOW_DAYS


def forecast(
    *,
    now: datetime,
    available: int,
    blocks: Sequence[CreditsLeft],
    daily_usage: Sequence[tuple[date, str | None, int]],
    bundles: Sequence[BundleOption] = (),
) -> Forecast:
    """The forecast from a wallet's state and its daily usage of the last 30 days (UTC days,
    today included: (day, feature, credits used))."""
    today = now.date()
    window = usage_window(daily_usage, today)
    first = today - timedelta(days=window - 1)
    per_feature: dict[str, int] = {}
    used_since = today
    for day, feature, credits in daily_usage:
        if day >= first and credits > 0:
            per_feature[feature or "other"] = per_feature.get(feature or "other", 0) + credits
            used_since = min(used_since, day)
    total = sum(per_feature.values())
    # The long window stands in for a quiet week; a wallet whose every use falls in the last
    # week (it just began) is paced over the days since its first use instead, never told it
    # has months left (the forecast never over-promises).
    days = window
    if window == LONG_WINDOW_DAYS and (today - used_since).days < SHORT_WINDOW_DAYS:
        days = (today - used_since).days + 1
    pace = total / days
    by_feature = tuple(sorted(
        (FeaturePace(f, round(c / days, 2)) for f, c in per_feature.items()),
        key=lambda p: (-p.credits_per_day, p.feature)))
    if total == 0:
        return Forecast(available, window, 0.0, None, None, by_feature, 0, None)
    runs_out_at, lost = _run_out(now, max(available, 0), blocks, pace)
    days_left = math.floor((runs_out_at - now) / timedelta(days=1))
    # `window_days` says over how many days the pace was taken.
    return Forecast(available, days, round(pace, 2), days_left, runs_out_at, by_feature,
                    lost, _suggest(bundles, pace))


def _run_out(now: datetime, available: int, blocks: Sequence[CreditsLeft],
             pace: float) -> tuple[datetime, int]:
    """When `available` credits, spent at `pace` a day soonest-expiring first, are gone, and
    how many of them expire unused on the way."""
    ordered = sorted(blocks, key=lambda b: (b.expires_at is None, b.expires_at or now))
    spendable: list[CreditsLeft] = []
    left = available
    for block in ordered:  # holds reserve the latest credits: keep the first `available`
        take = min(block.remaining, left)
        if take > 0:
            spendable.append(CreditsLeft(take, block.expires_at))
            left -= take
    if left > 0:
        spendable.append(CreditsLeft(left, None))
    at, lost = now, 0
    horizon = now + timedelta(days=HORIZON_DAYS)
    for block in spendable:
        days = block.remaining / pace
        # A block that expires before it is used up ends there, however far the horizon.
        if block.expires_at is not None and days > (block.expires_at - at) / timedelta(days=1):
            usable = max((block.expires_at - at) / timedelta(days=1), 0.0) * pace
            lost += block.remaining - min(block.remaining, math.floor(usable))
            at = max(at, block.expires_at)
            continue
        if days >= (horizon - at) / timedelta(days=1):
            return horizon, lost
        at = at + timedelta(days=days)
    return at, lost


def _suggest(bundles: Sequence[BundleOption], pace: float) -> str | None:
    if not bundles:
        return None
    month = pace * MONTH_DAYS
    fits = [b for b in bundles if b.credits >= month]
    chosen = min(fits, key=lambda b: (b.credits, b.key)) if fits else max(
        bundles, key=lambda b: (b.credits, b.key))
    return chosen.key


def runway_sentence(f: Forecast) -> str:
    """"At your pace of the last 7 days, about 12 days left." (the dashboard's runway line)."""
    pace = ("At your pace today" if f.window_days == 1
            else f"At your pace of the last {f.window_days} days")
    if f.days_left is None:
        return f"No credits used in the last {f.window_days} days."
    if f.available <= 0:
        return f"{pace}, you need to top up now."
    if f.days_left < 1:
        return f"{pace}, less than a day left."
    return f"{pace}, about {f.days_left:,} {'day' if f.days_left == 1 else 'days'} left."
