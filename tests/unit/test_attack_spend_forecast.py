"""Red-team (attack-spend): the runway forecast against large, soon-expiring blocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.forecast import CreditsLeft, forecast

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.mark.xfail(strict=True, reason=(
    "_run_out checks the 100-year horizon before the block's expiry: a large block that "
    "expires in 10 days at a slow pace is reported as lasting 100 years with nothing lost"))
def test_big_block_expiring_soon_runs_out_at_its_expiry_not_at_the_horizon() -> None:
    # 100,000 promotional credits expiring in 10 days; 2 credits a day of use.
    daily = [(NOW.date() - timedelta(days=d), "api_call", 2) for d in range(7)]
    f = forecast(now=NOW, available=100_000,
                 blocks=[CreditsLeft(100_000, NOW + timedelta(days=10))], daily_usage=daily)
    assert f.credits_per_day == 2.0
    assert f.days_left == 10, f
    assert f.expiring_before_run_out == 100_000 - 20, f

