"""Red-team attacks on the agreement calendar (issue 23): xfail(strict) until fixed."""

from __future__ import annotations

from datetime import UTC, datetime

from app.domain.agreements import Calendar, Period, periods_between


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def test_catch_up_after_a_clamped_period_follows_month_ends() -> None:
    first = Period(at(2026, 2, 28), at(2026, 3, 31))
    current = Period(at(2026, 9, 30), at(2026, 10, 31))
    got = periods_between(first, current, Calendar.of(first))
    assert [p.start for p in got] == [at(2026, 3, 31), at(2026, 4, 30), at(2026, 5, 31),
                                      at(2026, 6, 30), at(2026, 7, 31), at(2026, 8, 31),
                                      at(2026, 9, 30)]


def test_a_yearly_plan_started_on_feb_29_renews_on_feb_29_in_leap_years() -> None:
    first = Period(at(2028, 2, 29), at(2029, 2, 28))
    cal = Calendar.of(first)
    p = first
    for _ in range(4):
        p = cal.after(p)
    assert p.start == at(2032, 2, 29)
