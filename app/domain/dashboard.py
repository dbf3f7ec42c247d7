"""The customer dashboard's rules, as plain Python: link lifetimes, what its numbers say in
words, and the geometry of the daily-use chart. Standard library only.

Links and sessions are signed elsewhere (an adapter); this module decides whether a verified
payload still grants access, so the rule is testable without keys, Flask or a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.domain.ledger import InvalidRequest
from app.domain.usage_terms import fmt, plural, units_left

DEFAULT_LINK_TTL = 900
MAX_LINK_TTL = 3600
# How long the page keeps working after the link was opened (the cookie session).
SESSION_SECONDS = 3600
CHART_DAYS = 30
HISTORY_PAGE_SIZE = 20

# Colour-blind-safe colours, each at least 3:1 against white (WCAG non-text contrast).
PALETTE = ("#0b5fa5", "#b3450b", "#067a55", "#a0307a", "#6b5900", "#4d4d4d")


class AccessRefused(Exception):
    """A link or session that grants nothing: tampered, expired, or for another wallet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def link_ttl(ttl_seconds: object) -> int:
    """The link lifetime asked for: a whole number of seconds, 1 to MAX_LINK_TTL."""
    if ttl_seconds is None:
        return DEFAULT_LINK_TTL
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not (
        1 <= ttl_seconds <= MAX_LINK_TTL
    ):
        raise InvalidRequest(f"ttl_seconds must be a whole number from 1 to {MAX_LINK_TTL}")
    return ttl_seconds


def check_grant(payload: dict[str, object], wallet_id: str, now: datetime) -> None:
    """A verified link or session payload grants `wallet_id` now, or AccessRefused says why.

    The wallet in the URL must be the one that was signed: a link re-pointed at another wallet
    (or a cookie sent to another wallet's page) grants nothing.
    """
    if payload.get("w") != wallet_id:
        raise AccessRefused("this link is for another wallet")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise AccessRefused("the link has no expiry")
    if now.timestamp() >= exp:
        raise AccessRefused("the link has expired")


def short_date(moment: datetime, today: date) -> str:
    """"Nov 27" this year, "Nov 27, 2025" otherwise (UTC)."""
    text = f"{moment:%b} {moment.day}"
    return text if moment.year == today.year else f"{text}, {moment.year}"


def long_date(moment: datetime) -> str:
    return f"{moment:%b} {moment.day}, {moment.year}"


def value_texts(credits: int, features: Iterable[tuple[str, int]]) -> list[str]:
    """What `credits` buy, one phrase per (unit, credits per unit): "about 2,500 file
    conversions"."""
    out = []
    for unit, per_unit in features:
        n = units_left(credits, per_unit)
        out.append(f"about {fmt(n)} {plural(unit, n)}")
    return out


def parse_number_list(text: str, what: str) -> list[int]:
    """ "50, 25 10" -> [50, 25, 10]; anything that is not whole numbers is refused."""
    items = [part for part in text.replace(",", " ").split() if part]
    numbers: list[int] = []
    for part in items:
        cleaned = part.replace("_", "")
        if not cleaned.isascii() or not cleaned.isdigit() or len(cleaned) > 13:
            raise InvalidRequest(f"{what} must be whole numbers separated by commas, "
                                f"not {part[:20]!r}")
        numbers.append(int(cleaned))
    return numbers


def parse_whole_number(text: str, what: str) -> int:
    cleaned = text.strip().replace(",", "").replace("_", "")
    if not cleaned.isascii() or not cleaned.isdigit() or len(cleaned) > 13:
        raise InvalidRequest(f"{what} must be a whole number of credits")
    return int(cleaned)


# -- the daily-use chart ----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    feature: str
    label: str
    credits: int
    color: str
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    day: date
    x: float
    total: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Series:
    feature: str
    label: str
    color: str
    total: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    bar_width: float
    max_value: int
    ticks: tuple[tuple[int, float], ...]  # (value, y)
    bars: tuple[Bar, ...]
    series: tuple[Series, ...]
    total: int

    @property
    def empty(self) -> bool:
        return self.total == 0


def _nice_ceiling(value: int) -> int:
    """A round axis maximum at or above `value`: 1, 2, 5 times a power of ten."""
    if value <= 0:
        return 1
    power = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def daily_usage_chart(
    rows: Iterable[tuple[date, str | None, int]],
    labels: Sequence[tuple[str, str]],
    today: date,
    days: int = CHART_DAYS,
    width: int = 720,
    height: int = 240,
) -> Chart:
    """Stacked bars of credits used per day and feature, for the `days` ending `today`.

    `rows` are (day, feature key or None, credits used); `labels` are (feature key, label) in
    catalog order. Usage of a feature no longer in the catalog is shown as "Other".
    """
    first = today - timedelta(days=days - 1)
    known = {key for key, _ in labels}
    per_day: dict[date, dict[str, int]] = {}
    for day, feature, credits in rows:
        if not (first <= day <= today) or credits <= 0:
            continue
        key = feature if feature in known else "_other"
        bucket = per_day.setdefault(day, {})
        bucket[key] = bucket.get(key, 0) + credits
    ordered = list(labels) + [("_other", "Other")]
    totals = {key: sum(d.get(key, 0) for d in per_day.values()) for key, _ in ordered}
    series = tuple(
        Series(key, label, PALETTE[i % len(PALETTE)], totals[key])
        for i, (key, label) in enumerate(ordered)
        if totals[key] > 0  # a feature not used in the period would only add zeros
    )
    colors = {s.feature: s.color for s in series}
    label_of = dict(ordered)

    plot_left, plot_top, plot_bottom = 56, 12, height - 28
    plot_height = plot_bottom - plot_top
    slot = (width - plot_left - 8) / days
    bar_width = max(slot * 0.7, 1.0)
    max_day = max((sum(d.values()) for d in per_day.values()), default=0)
    axis_max = _nice_ceiling(max_day)
    scale = plot_height / axis_max

    bars: list[Bar] = []
    for i in range(days):
        day = first + timedelta(days=i)
        used = per_day.get(day, {})
        y = float(plot_bottom)
        segments: list[Segment] = []
        for key, _ in ordered:
            credits = used.get(key, 0)
            if credits <= 0:
                continue
            h = credits * scale
            y -= h
            segments.append(Segment(key, label_of[key], credits, colors[key], y, h))
        bars.append(Bar(day, plot_left + i * slot + (slot - bar_width) / 2,
                        sum(used.values()), tuple(segments)))
    ticks = tuple((axis_max * k // 4, plot_bottom - plot_height * k / 4) for k in range(5))
    return Chart(width, height, plot_top, plot_bottom, plot_left, bar_width, axis_max, ticks,
                 tuple(bars), series, sum(totals.values()))
