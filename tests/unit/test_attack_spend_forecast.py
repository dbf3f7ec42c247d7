"""Red-team (attack-spend): the runway forecast against large, soon-expiring blocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.forecast import CreditsLeft, forecast

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_big_block_expiring_soon_runs_out_at_its_expiry_not_at_the_horizon() -> None:
    # 100,000 promotional credits expiring in 10 days; 2 credits a day of use.
    daily = [(NOW.date() - timedelta(days=d), "api_call", 2) for d in range(7)]
    f = forecast(now=NOW, available=100_000,
                 blocks=[CreditsLeft(100_000, NOW + timedelta(days=10))], daily_usage=daily)
    assert f.credits_per_day == 2.0
    assert f.days_left == 10, f
    assert f.expiring_before_run_out == 100_000 - 20, f



def test_a_new_busy_wallet_is_not_told_it_has_months_left() -> None:
    today = NOW.date()
    daily = [(today - timedelta(days=1), "api_call", 1000), (today, "api_call", 1000)]
    f = forecast(now=NOW, available=10_000, blocks=[CreditsLeft(10_000, None)],
                 daily_usage=daily)
    # 2,000 credits in the last 2 days: about 10 days of credits left, not 150.
    assert f.days_left is not None and f.days_left < 30, f
