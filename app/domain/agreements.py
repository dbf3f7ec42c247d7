"""Kinde billing agreements and their periods, as pure rules: the one place that knows them.

Every path that meets a billing period (plan allotments, period ends, absolute meter totals,
usage reports) asks this module, so the same boundary is decided the same way everywhere:

- `Period`: one billing period [start, end) of an agreement.
- `plausibility_problem`: a period shorter than a day, longer than 400 days, or ending before
  it starts is implausible; an event stating one is parked, a look-up stating one is not used.
- `same_period`: one period, one allotment. A period of the same agreement whose start differs
  from a known one by less than a day IS that period (Kinde's clock and our catch-up differ by
  seconds); `extends` says a period only moves a known one's end (same start, later end).
- `Calendar`: how an agreement's periods follow one another. Monthly and yearly agreements
  keep the day of the month of their first period (clamped to the month's length: a plan
  started on the 31st renews on Feb 28 and then on Mar 31); anything else repeats its length.
  Catch-up after downtime rebuilds missed periods on this calendar, never by repeating the
  last period's length.
- `is_fresh`: how long a cached agreement without a stated end may be taken as current.
- `retry_delay`: the one back-off schedule for asking Kinde again (30 s doubling to 15 min).

Nothing here reads a clock, a database or Kinde: callers pass the instants in.
"""

from __future__ import annotations

import calendar as _calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

# A period start that differs from a known one by less than this is the same period.
SAME_PERIOD_TOLERANCE = timedelta(days=1)
SHORTEST_PERIOD = timedelta(days=1)
LONGEST_PERIOD = timedelta(days=400)
# A cached agreement that states no period end is taken as current for this long after Kinde
# (or an event) said so; then it is asked again.
FRESH_WITHOUT_END = timedelta(hours=1)
RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=15)
# Catch-up bound per pass: a year of daily periods, far beyond any real outage of monthly ones.
MAX_PERIODS_BETWEEN = 400


@dataclass(frozen=True)
class Period:
    """One billing period of an agreement: [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a billing period must end after it starts ({self.start} .. "
                             f"{self.end})")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def label(self) -> str:
        """How the ledger names a period: the month it starts in ("Nov 2026")."""
        return self.start.strftime("%b %Y")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def plausibility_problem(start: datetime | None, end: datetime | None) -> str | None:
    """Why a stated period cannot be a real billing period, or None when it can."""
    if start is None or end is None:
        return None
    if end <= start:
        return (f"billing period ends ({end.isoformat()}) before or when it starts "
                f"({start.isoformat()})")
    if end - start < SHORTEST_PERIOD:
        return f"billing period of {end - start} is shorter than one day"
    if end - start > LONGEST_PERIOD:
        return f"billing period of {(end - start).days} days is longer than 400 days"
    return None


def same_period(a_start: datetime, b_start: datetime) -> bool:
    """Two periods of one agreement whose starts are less than a day apart are one period."""
    return abs(a_start - b_start) < SAME_PERIOD_TOLERANCE


def extends(known: Period, reported: Period) -> bool:
    """`reported` only moves `known`'s end later: the same start, a later end. (A period
    restated a moment off, start and end, is the same period and moves nothing.)"""
    return reported.start == known.start and reported.end > known.end


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole calendar months, keeping its day (clamped to the month)."""
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day, _calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def add_month(moment: datetime) -> datetime:
    """The same day and time one calendar month later (clamped to the month's last day)."""
    return add_months(moment, 1)


@dataclass(frozen=True)
class Calendar:
    """How an agreement's periods follow one another, from its first known period.

    `months` is 1 (monthly) or 12 (yearly) when the first period is one calendar month or year
    long from its start (also when that start was itself clamped to a month's end: Feb 28 ..
    Mar 31 of a plan started on the 31st); then periods start on `day` of the month, clamped
    to the month's length. Otherwise periods repeat `length`.
    """

    anchor: datetime
    months: int | None
    length: timedelta
    day: int = 1

    @classmethod
    def of(cls, first: Period) -> Calendar:
        start, end = first.start, first.end
        for months in (1, 12):
            if add_months(start, months) == end:
                return cls(start, months, first.length, start.day)
            clamped_start = start.day == _calendar.monthrange(start.year, start.month)[1]
            if clamped_start and end.day > start.day and end.time() == start.time() and (
                end.replace(day=start.day) == add_months(start, months)
            ):
                return cls(start, months, first.length, end.day)
        return cls(start, None, first.length)

    def boundary(self, index: int) -> datetime:
        """The start of the agreement's `index`-th period (0 = the anchor's)."""
        if self.months is None:
            return self.anchor + self.length * index
        moved = add_months(self.anchor.replace(day=1), self.months * index)
        last = _calendar.monthrange(moved.year, moved.month)[1]
        return moved.replace(day=min(self.day, last))

    def index_at(self, moment: datetime) -> int:
        """The index of the calendar period that starts nearest `moment` (within a day)."""
        if self.months is None:
            estimate = round((moment - self.anchor) / self.length)
        else:
            estimate = round((moment - self.anchor).days / (30.436875 * self.months))
        best = min(range(estimate - 2, estimate + 3),
                   key=lambda i: abs(self.boundary(i) - moment))
        return best

    def after(self, period: Period) -> Period:
        """The period that follows `period` on this calendar (it starts at `period.end`)."""
        index = self.index_at(period.end)
        nxt = self.boundary(index + 1)
        if nxt <= period.end:  # period.end is off the calendar: keep the length
            nxt = period.end + self.length
        return Period(period.end, nxt)


def periods_between(last: Period, current: Period, cal: Calendar) -> list[Period]:
    """The periods after `last` up to and including Kinde's `current` one.

    Normally `current` follows `last` (give or take moments) and this is [current]. After an
    outage Kinde reports only its current period: the missed ones in between are rebuilt on the
    agreement's calendar (six missed months after February are six periods), the last missed
    one ending where Kinde's current period starts, so each is granted once and none twice.
    """
    if current.start <= last.start or same_period(current.start, last.start):
        return []
    out: list[Period] = []
    previous = last
    while not same_period(previous.end, current.start) and previous.end < current.start:
        if len(out) >= MAX_PERIODS_BETWEEN:
            break
        nxt = cal.after(previous)
        if nxt.end >= current.start or same_period(nxt.end, current.start):
            nxt = Period(nxt.start, current.start)
        out.append(nxt)
        previous = nxt
    out.append(current)
    return out


def is_fresh(fetched_at: datetime, now: datetime) -> bool:
    """A cached agreement without a stated end is trusted for FRESH_WITHOUT_END."""
    return now - fetched_at < FRESH_WITHOUT_END


def current_period(start: datetime | None, end: datetime | None, fetched_at: datetime,
                   at: datetime, now: datetime) -> datetime | None:
    """The start of the cached period that `at` falls in, or None when the cache cannot say:
    with an end, `at` must be inside [start, end); without one, the cache must be fresh."""
    if start is None or at < start:
        return None
    if end is not None:
        return start if at < end else None
    return start if is_fresh(fetched_at, now) else None


def retry_delay(attempts: int) -> timedelta:
    """How long to wait before asking Kinde again after `attempts` unanswered tries."""
    return min(RETRY_BASE * (2 ** max(min(attempts, 20) - 1, 0)), RETRY_MAX)
