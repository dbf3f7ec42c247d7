"""Billing periods as pure rules (app.domain.agreements): calendar, tolerance, plausibility."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.agreements import (
    Calendar,
    Period,
    add_month,
    extends,
    periods_between,
    plausibility_problem,
    retry_delay,
    same_period,
)


def utc(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


NOV = Period(utc(2026, 11, 1), utc(2026, 12, 1))


def test_the_next_period_follows_the_agreements_calendar() -> None:
    monthly = Calendar.of(NOV)
    assert monthly.months == 1
    assert monthly.after(NOV) == Period(utc(2026, 12, 1), utc(2027, 1, 1))
    # Anchored on the 31st: clamped in short months, back to the 31st after them.
    jan31 = Period(utc(2027, 1, 31), utc(2027, 2, 28))
    cal = Calendar.of(jan31)
    feb = cal.after(jan31)
    assert feb == Period(utc(2027, 2, 28), utc(2027, 3, 31))
    assert cal.after(feb) == Period(utc(2027, 3, 31), utc(2027, 4, 30))
    # Neither a month nor a year: the length repeats.
    thirty = Period(utc(2026, 1, 1), utc(2026, 1, 31))
    assert Calendar.of(thirty).after(thirty) == Period(utc(2026, 1, 31), utc(2026, 3, 2))
    yearly = Period(utc(2024, 2, 29), utc(2025, 2, 28))
    assert Calendar.of(yearly).months == 12
    assert add_month(utc(2026, 1, 31)) == utc(2026, 2, 28)


def test_catch_up_rebuilds_missed_months_on_the_calendar_not_by_length() -> None:
    # The case: after a February period, six missed months are six allotments, then
    # Kinde's current one: seven in all (repeating February's 28 days made it eight).
    feb = Period(utc(2026, 2, 1), utc(2026, 3, 1))
    sep = Period(utc(2026, 9, 1), utc(2026, 10, 1))
    got = periods_between(feb, sep, Calendar.of(Period(utc(2026, 1, 1), utc(2026, 2, 1))))
    assert [p.start.month for p in got] == [3, 4, 5, 6, 7, 8, 9]
    assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))


def test_nothing_was_missed_when_kinde_reports_the_next_period_with_drift() -> None:
    cal = Calendar.of(NOV)
    drift = Period(NOV.end + timedelta(seconds=5), NOV.end + timedelta(days=31))
    assert periods_between(NOV, drift, cal) == [drift]
    assert periods_between(NOV, NOV, cal) == []
    same = Period(NOV.start + timedelta(seconds=1), NOV.end)
    assert periods_between(NOV, same, cal) == []  # the same period, a second off


def test_one_period_within_a_day_and_extension() -> None:
    assert same_period(NOV.start, NOV.start + timedelta(hours=23))
    assert not same_period(NOV.start, NOV.start + timedelta(days=1))
    assert extends(NOV, Period(NOV.start, NOV.end + timedelta(days=15)))
    assert not extends(NOV, NOV)
    drifted = Period(NOV.start + timedelta(seconds=1), NOV.end + timedelta(seconds=1))
    assert not extends(NOV, drifted)
    assert not extends(NOV, Period(NOV.end, NOV.end + timedelta(days=30)))


@pytest.mark.parametrize(("start", "end", "problem"), [
    (utc(2026, 1, 1), utc(2026, 1, 1) + timedelta(seconds=5), "shorter than one day"),
    (utc(2026, 1, 2), utc(2026, 1, 1), "before or when it starts"),
    (utc(2026, 1, 1), utc(2026, 1, 1), "before or when it starts"),
    (utc(2026, 1, 1), utc(2027, 3, 1), "longer than 400 days"),
])
def test_implausible_periods(start: datetime, end: datetime, problem: str) -> None:
    found = plausibility_problem(start, end)
    assert found is not None and problem in found


def test_plausible_periods() -> None:
    assert plausibility_problem(NOV.start, NOV.end) is None
    assert plausibility_problem(utc(2026, 1, 1), utc(2027, 1, 1)) is None
    assert plausibility_problem(None, NOV.end) is None
    with pytest.raises(ValueError):
        Period(NOV.end, NOV.start)


def test_one_back_off_schedule() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 6, 7, 50)] == [
        30, 60, 120, 900, 900, 900]


@given(day=st.integers(1, 31), month=st.integers(1, 12), gap=st.integers(0, 30))
def test_missed_monthly_periods_tile_exactly_once(day: int, month: int, gap: int) -> None:
    anchor = utc(2025, month, min(day, 28), 9)
    cal = Calendar.of(Period(anchor, add_month(anchor)))
    last = Period(cal.boundary(3), cal.boundary(4))
    current = Period(cal.boundary(5 + gap), cal.boundary(6 + gap))
    got = periods_between(last, current, cal)
    assert len(got) == gap + 2
    assert got[0].start == last.end and got[-1] == current
    assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))
