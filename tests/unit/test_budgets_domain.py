"""Team-budget rules as plain Python: member ids, UTC windows, caps and what counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.budgets import (
    Caps,
    InvalidMember,
    MemberBudgetExceeded,
    MemberUsage,
    admit,
    day_key,
    month_key,
    next_day_start,
    next_month_start,
    remaining,
    require_org_wallet,
    validate_member,
)


@pytest.mark.parametrize("good", ["kp_a", "kp_0b1c2d3e4f", "kp_" + "x" * 61, "kp_a-b_C9"])
def test_member_ids_that_are_kinde_users(good: str) -> None:
    assert validate_member(good) == good


@pytest.mark.parametrize("bad", [
    "", "kp_", "org_acme", "alice", "kp_a\x00b", "kp_" + "x" * 62, "kp_é", "kp_a b",
    "kp_a/b", 7, None, ["kp_a"], "KP_a",
])
def test_odd_member_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidMember):
        validate_member(bad)


def test_members_only_on_org_wallets() -> None:
    require_org_wallet("org_acme")
    with pytest.raises(InvalidMember, match="organization wallets"):
        require_org_wallet("kp_alice")


def test_utc_windows_and_their_ends() -> None:
    late = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert (day_key(late), month_key(late)) == ("2026-11-30", "2026-11")
    midnight = late + timedelta(microseconds=1)
    assert (day_key(midnight), month_key(midnight)) == ("2026-12-01", "2026-12")
    assert next_day_start(late) == midnight == next_month_start(late)
    december = datetime(2026, 12, 31, 10, tzinfo=UTC)
    assert next_month_start(december) == datetime(2027, 1, 1, tzinfo=UTC)
    # Another offset is converted first: 01:00+02:00 on the 1st is still the 30th in UTC.
    local = datetime(2026, 12, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert (day_key(local), month_key(local)) == ("2026-11-30", "2026-11")
    with pytest.raises(ValueError):
        day_key(datetime(2026, 1, 1))


def test_caps_update_like_a_put() -> None:
    caps = Caps().updated({"credits_per_day": 100})
    assert caps == Caps(100, None)
    assert caps.updated({"credits_per_month": 1000}) == Caps(100, 1000)  # absent keeps
    assert Caps(100, 1000).updated({"credits_per_day": None}) == Caps(None, 1000)  # null drops
    assert Caps().updated({"credits_per_day": 0}) == Caps(0, None)
    for bad in ({}, {"credits_per_week": 1}, {"credits_per_day": -1},
                {"credits_per_day": 1.5}, {"credits_per_day": True},
                {"credits_per_day": "10"}, {"credits_per_month": 10**13}):
        with pytest.raises(InvalidMember):
            Caps().updated(bad)


def test_remaining_counts_spend_and_holds_against_the_tighter_window() -> None:
    assert remaining(Caps(), MemberUsage(5, 5, 5)) == (None, None)
    assert remaining(Caps(100, 1000), MemberUsage(30, 950, 10)) == (40, "monthly")
    assert remaining(Caps(100, 1000), MemberUsage(80, 100, 10)) == (10, "daily")
    # A cap lowered below what was spent leaves nothing, never a negative.
    assert remaining(Caps(10, None), MemberUsage(50, 50, 0)) == (0, "daily")


def test_admit_refuses_past_a_cap_with_what_is_left() -> None:
    admit("kp_a", Caps(100, None), MemberUsage(60, 60, 0), 40)
    with pytest.raises(MemberBudgetExceeded) as refused:
        admit("kp_a", Caps(100, None), MemberUsage(60, 60, 0), 41)
    assert (refused.value.needed, refused.value.available_to_member) == (41, 40)
    assert refused.value.code == "member_budget_exceeded"
    assert "daily" in refused.value.message
    # The org wallet bounds what the member could spend too.
    with pytest.raises(MemberBudgetExceeded) as short:
        admit("kp_a", Caps(100, None), MemberUsage(60, 60, 0), 41, wallet_spendable=7)
    assert short.value.available_to_member == 7
    # Open holds count: 70 held leaves 30 of a 100 cap.
    admit("kp_a", Caps(100, None), MemberUsage(0, 0, 70), 30)
    with pytest.raises(MemberBudgetExceeded):
        admit("kp_a", Caps(100, None), MemberUsage(0, 0, 70), 31)
