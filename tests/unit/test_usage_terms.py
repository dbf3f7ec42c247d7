"""Credits in use terms: table tests for each phrase, properties for the arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.forecast import CreditsLeft, Forecast, forecast
from app.domain.usage_terms import (
    describe_capture,
    describe_credit,
    describe_debit,
    describe_expiry,
    describe_hold,
    describe_hold_expired,
    describe_metered_debit,
    describe_release,
    describe_signup_credit,
    describe_units_left,
    describe_unused_expiry,
    fmt,
    low_balance_message,
    plural,
    units_left,
)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0"), (7, "7"), (999, "999"), (2500, "2,500"), (1234567, "1,234,567"), (-120, "-120")],
)
def test_fmt(n: int, expected: str) -> None:
    assert fmt(n) == expected


@pytest.mark.parametrize(
    ("unit", "count", "expected"),
    [
        ("report", 1, "report"),
        ("report", 2, "reports"),
        ("report", 0, "reports"),
        ("file conversion", 3, "file conversions"),
        ("query", 2, "queries"),
        ("day", 2, "days"),  # vowel before y: just s
        ("pass", 2, "passes"),
        ("fax", 2, "faxes"),
        ("batch", 2, "batches"),
        ("push", 2, "pushes"),
        ("GB", 2, "GB"),
        ("GB", 1, "GB"),
        ("storage GB", 5, "storage GB"),
        ("API call", 1_000, "API calls"),
        ("image", -1, "image"),
    ],
)
def test_plural(unit: str, count: int, expected: str) -> None:
    assert plural(unit, count) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((50, "Report Generation", 1, "report"), "-50 credits for Report Generation (1 report)"),
        ((1, "Ping", 1, "ping"), "-1 credit for Ping (1 ping)"),
        (
            (2500, "File Conversion", 2500, "file conversion"),
            "-2,500 credits for File Conversion (2,500 file conversions)",
        ),
        ((30, "Storage", 3, "GB"), "-30 credits for Storage (3 GB)"),
    ],
)
def test_describe_debit(args: tuple[int, str, int, str], expected: str) -> None:
    assert describe_debit(*args) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (describe_credit(5000, "Starter pack"), "+5,000 credits: Starter pack"),
        (describe_credit(1, "Goodwill"), "+1 credit: Goodwill"),
        (describe_hold(50, "Report Generation"), "Held 50 credits for Report Generation"),
        (
            describe_capture(45, "Report Generation"),
            "-45 credits for Report Generation (captured hold)",
        ),
        (
            describe_release(5, "Report Generation"),
            "Released 5 held credits for Report Generation",
        ),
        (describe_release(1, "Export"), "Released 1 held credit for Export"),
        (describe_expiry(300, "Starter pack"), "-300 credits expired (Starter pack)"),
    ],
)
def test_entry_descriptions(text: str, expected: str) -> None:
    assert text == expected


@pytest.mark.parametrize(
    ("balance", "cpu", "expected"),
    [(2500, 50, 50), (2499, 50, 49), (49, 50, 0), (0, 50, 0), (-120, 50, 0), (100, 0, 0)],
)
def test_units_left(balance: int, cpu: int, expected: int) -> None:
    assert units_left(balance, cpu) == expected


@pytest.mark.parametrize(
    ("balance", "cpu", "unit", "expected"),
    [
        (2400, 50, "report", "about 48 reports left"),
        (50, 50, "report", "about 1 report left"),
        (49, 50, "report", "no reports left"),
        (0, 50, "report", "no reports left"),
        (-120, 50, "report", "in arrears by 120 credits"),
        (-1, 50, "report", "in arrears by 1 credit"),
        (250_000, 100, "file conversion", "about 2,500 file conversions left"),
    ],
)
def test_describe_units_left(balance: int, cpu: int, unit: str, expected: str) -> None:
    assert describe_units_left(balance, cpu, unit) == expected


URL = "https://app.example.com/billing"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def runway(balance: int, used_7d: int) -> Forecast:
    """The forecast of a wallet holding `balance` that used `used_7d` credits over the last
    7 days, spread over each of them (the alert's runway comes from the one forecast)."""
    daily = [(NOW.date() - timedelta(days=d), "reports", used_7d // 7 + (used_7d % 7 if d == 0
                                                                         else 0))
             for d in range(7)]
    return forecast(now=NOW, available=balance, blocks=[CreditsLeft(max(balance, 0), None)],
                    daily_usage=daily)


@pytest.mark.parametrize(
    ("balance", "hint", "used_7d", "url", "expected"),
    [
        (
            2500, ("report", 50), 5000, URL,
            "2,500 credits left, about 50 reports. At your pace of the last 7 days they last "
            f"about 3 days. Top up: {URL}",
        ),
        (2500, ("report", 50), 0, None, "2,500 credits left, about 50 reports."),
        (2500, None, 0, None, "2,500 credits left."),
        (1, None, 0, None, "1 credit left."),
        (30, ("report", 50), 0, None, "30 credits left, not enough for one report."),
        (
            100, ("report", 50), 7000, None,
            "100 credits left, about 2 reports. At your pace of the last 7 days they last "
            "less than a day.",
        ),
        (
            700, None, 700, None,
            "700 credits left. At your pace of the last 7 days they last about 7 days.",
        ),
        (
            100, None, 700, None,
            "100 credits left. At your pace of the last 7 days they last about 1 day.",
        ),
        # Depleted: in use terms, what stops working and how to go on (issue 13).
        (0, ("report", 50), 5000, URL,
         f"Your credits are used up: reports are paused until you top up. Top up: {URL}"),
        (0, ("file conversion", 2), 0, None,
         "Your credits are used up: file conversions are paused until you top up."),
        (0, None, 0, None, "Your credits are used up: top up to keep going."),
        (-120, ("report", 50), 5000, None,
         "Your credits are used up: reports are paused until you top up. You owe 120 credits, "
         "taken from your next top-up."),
    ],
)
def test_low_balance_message(
    balance: int, hint: tuple[str, int] | None, used_7d: int, url: str | None, expected: str
) -> None:
    assert low_balance_message(balance, hint, runway(balance, used_7d), url) == expected


def test_depleted_message_names_every_paused_feature_when_given() -> None:
    message = low_balance_message(0, ("GB", 100), None, None,
                                  paused=["file conversions", "API calls", "reports"])
    assert message == ("Your credits are used up: file conversions, API calls and reports are "
                       "paused until you top up.")


# -- properties ---------------------------------------------------------------------------

balances = st.integers(min_value=0, max_value=10**12)
prices = st.integers(min_value=1, max_value=10**6)
units = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and "  " not in s
)


@given(balances, prices)
def test_units_left_is_the_most_the_balance_pays_for(balance: int, cpu: int) -> None:
    n = units_left(balance, cpu)
    assert n >= 0
    assert n * cpu <= balance < (n + 1) * cpu


@given(st.integers(min_value=-(10**12), max_value=10**12), st.integers(-10, 10**6))
def test_units_left_never_negative(balance: int, cpu: int) -> None:
    assert units_left(balance, cpu) >= 0


@given(
    balances,
    st.none() | st.tuples(units, prices),
    st.integers(min_value=0, max_value=10**9),
    st.none() | st.just("https://app.example.com/billing"),
)
def test_message_has_no_minus_sign_for_non_negative_balance(
    balance: int, hint: tuple[str, int] | None, used_7d: int, url: str | None
) -> None:
    message = low_balance_message(balance, hint, runway(balance, used_7d), url)
    assert "-" not in message
    assert message.endswith((".", url or "."))
    assert (url in message) if url else ("Top up" not in message)


@given(st.integers(min_value=-(10**12), max_value=-1), prices, units)
def test_negative_balance_reads_as_arrears(balance: int, cpu: int, unit: str) -> None:
    assert describe_units_left(balance, cpu, unit).startswith(f"in arrears by {fmt(-balance)} ")


@given(balances, prices, units)
def test_units_left_text_matches_the_number(balance: int, cpu: int, unit: str) -> None:
    text = describe_units_left(balance, cpu, unit)
    n = units_left(balance, cpu)
    expected = f"no {plural(unit, 0)} left" if n == 0 else f"about {fmt(n)} {plural(unit, n)} left"
    assert text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (describe_signup_credit(500), "+500 sign-up credits"),
        (describe_signup_credit(1), "+1 sign-up credit"),
        (describe_hold(1), "Held 1 credit"),
        (describe_capture(1), "-1 credit (captured hold)"),
        (describe_release(2), "Released 2 held credits"),
        (describe_hold_expired(1), "Hold of 1 credit expired unused"),
        (describe_hold_expired(2500), "Hold of 2,500 credits expired unused"),
        (describe_unused_expiry(1, "Basic plan credits for Nov 2026", "at period end"),
         "-1 credit: unused Basic plan credits for Nov 2026 expired at period end"),
        (describe_metered_debit(1, "Ping", 1, "ping"), "-1 credit for Ping (1 ping) (metered by "
         "Kinde)"),
    ],
)
def test_every_entry_description_pluralises_credits(text: str, expected: str) -> None:
    assert text == expected
