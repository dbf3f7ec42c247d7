"""The dashboard's pure rules: link lifetimes and grants, words for numbers, the chart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.domain.dashboard import (
    DEFAULT_LINK_TTL,
    AccessRefused,
    check_grant,
    daily_usage_chart,
    link_ttl,
    parse_number_list,
    parse_whole_number,
    short_date,
    value_texts,
)
from app.domain.forecast import CreditsLeft, forecast, runway_sentence
from app.domain.ledger import InvalidRequest

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)


def test_link_ttl() -> None:
    assert link_ttl(None) == DEFAULT_LINK_TTL == 900
    assert link_ttl(1) == 1 and link_ttl(3600) == 3600
    for bad in (0, -5, 3601, True, 1.5, "60"):
        with pytest.raises(InvalidRequest):
            link_ttl(bad)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"w": "kp_b", "exp": int(NOW.timestamp()) + 60}, "another wallet"),
        ({"w": "kp_a", "exp": int(NOW.timestamp())}, "expired"),
        ({"w": "kp_a", "exp": int(NOW.timestamp()) - 1}, "expired"),
        ({"w": "kp_a"}, "no expiry"),
        ({"w": "kp_a", "exp": "soon"}, "no expiry"),
        ({"w": "kp_a", "exp": True}, "no expiry"),
    ],
)
def test_grants_refused(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(AccessRefused, match=reason):
        check_grant(payload, "kp_a", NOW)


def test_grant_accepted_until_expiry() -> None:
    check_grant({"w": "kp_a", "exp": int(NOW.timestamp()) + 1}, "kp_a", NOW)


def runway_text(available: int, used_7d: int) -> str:
    """The dashboard's runway line for a wallet that used `used_7d` credits, a seventh each
    day of the last 7 (the line is the API's forecast in words)."""
    daily = [(NOW.date() - timedelta(days=d), "reports", used_7d // 7) for d in range(7)]
    return runway_sentence(forecast(now=NOW, available=available,
                                    blocks=[CreditsLeft(available, None)], daily_usage=daily))


def test_words() -> None:
    assert short_date(NOW, NOW.date()) == "Nov 27"
    assert short_date(NOW - timedelta(days=365), NOW.date()) == "Nov 27, 2025"
    assert runway_text(1200, 700) == "At your pace of the last 7 days, about 12 days left."
    assert runway_text(100, 700) == "At your pace of the last 7 days, about 1 day left."
    assert runway_text(10, 700) == "At your pace of the last 7 days, less than a day left."
    assert runway_text(0, 700) == "At your pace of the last 7 days, you need to top up now."
    assert runway_text(5000, 0) == "No credits used in the last 30 days."
    assert value_texts(5000, [("file conversion", 2), ("report", 50), ("GB", 100)]) == [
        "about 2,500 file conversions", "about 100 reports", "about 50 GB"]


def test_number_lists() -> None:
    assert parse_number_list("50, 25 10", "x") == [50, 25, 10]
    assert parse_number_list("  ", "x") == []
    assert parse_number_list("1_000", "x") == [1000]
    for bad in ("50, a", "-5", "1.5", "٣", "9" * 14):
        with pytest.raises(InvalidRequest):
            parse_number_list(bad, "x")
    assert parse_whole_number(" 1,000 ", "x") == 1000
    with pytest.raises(InvalidRequest):
        parse_whole_number("", "x")


def test_chart_stacks_days_by_feature() -> None:
    today = date(2026, 11, 27)
    rows = [
        (today, "report", 100),
        (today, "api", 20),
        (today - timedelta(days=1), "api", 7),
        (today - timedelta(days=29), "gone", 3),      # not in the catalog any more: Other
        (today - timedelta(days=30), "report", 999),  # before the window
        (today + timedelta(days=1), "report", 999),   # after it
    ]
    chart = daily_usage_chart(rows, [("report", "Reports"), ("api", "API"), ("idle", "Idle")],
                              today)
    assert len(chart.bars) == 30 and chart.bars[-1].day == today
    assert chart.total == 130 and chart.max_value == 200  # 120 rounded up to a nice axis
    assert [(s.feature, s.total) for s in chart.series] == [
        ("report", 100), ("api", 27), ("_other", 3)]
    last = chart.bars[-1]
    assert [(s.feature, s.credits) for s in last.segments] == [("report", 100), ("api", 20)]
    # Stacked from the bottom, heights in proportion to credits.
    assert last.segments[0].y + last.segments[0].height == pytest.approx(chart.plot_bottom)
    assert last.segments[0].height / last.segments[1].height == pytest.approx(5)
    assert last.segments[1].y + last.segments[1].height == pytest.approx(last.segments[0].y)
    assert chart.bars[0].segments[0].label == "Other"
    assert [value for value, _ in chart.ticks] == [0, 50, 100, 150, 200]


def test_empty_chart() -> None:
    chart = daily_usage_chart([], [("report", "Reports")], date(2026, 11, 27))
    assert chart.empty and chart.series == () and all(not b.segments for b in chart.bars)
