"""Domain rules of the wallet aggregate, with no database at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.ledger import (
    CaptureExceedsHold,
    HoldNotOpen,
    InsufficientCredits,
    InvalidRequest,
    InvalidWalletId,
    Wallet,
    owner_type_of,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def wallet_with(*credits: tuple[int, int | None]) -> Wallet:
    """A wallet credited with (amount, expires_in_days or None) blocks, in order."""
    w = Wallet(id="kp_a", owner_type="user")
    for i, (amount, days) in enumerate(credits):
        w.credit(
            amount,
            kind="grant",
            reason=f"g{i}",
            description="test",
            now=NOW + timedelta(seconds=i),
            expires_at=NOW + timedelta(days=days) if days else None,
        )
    return w


def invariant(w: Wallet) -> None:
    assert w.balance == sum(b.remaining for b in w.blocks) - w.arrears
    assert all(0 <= b.remaining <= b.original for b in w.blocks)


def test_owner_types() -> None:
    assert owner_type_of("kp_123") == "user"
    assert owner_type_of("org_abc") == "org"
    for bad in ("", "kp_", "user_1", "org_", "kp_a/b", "kp_" + "x" * 80):
        with pytest.raises(InvalidWalletId):
            owner_type_of(bad)


def test_usage_draws_soonest_expiring_block_first() -> None:
    w = wallet_with((100, None), (100, 30), (100, 10))
    w.debit(150, reason="r", description="d", now=NOW)
    by_reason = {b.reason: b.remaining for b in w.blocks}
    # The 10-day block is emptied first, then the 30-day one; the non-expiring one is untouched.
    assert by_reason == {"g1": 50, "g0": 100}
    assert w.balance == 150
    invariant(w)


def test_same_expiry_draws_oldest_first() -> None:
    w = wallet_with((10, None), (10, None))
    w.debit(5, reason="r", description="d", now=NOW)
    assert [(b.reason, b.remaining) for b in w.blocks] == [("g0", 5), ("g1", 10)]


def test_refusable_usage_cannot_overdraw() -> None:
    w = wallet_with((10, None))
    with pytest.raises(InsufficientCredits) as err:
        w.debit(11, reason="r", description="d", now=NOW)
    assert (err.value.needed, err.value.available) == (11, 10)
    assert w.balance == 10 and not [e for e in w.new_entries if e.kind == "usage"]


def test_overdraft_limit_allows_going_negative_up_to_it() -> None:
    w = wallet_with((10, None))
    w.overdraft_limit = 5
    w.debit(15, reason="r", description="d", now=NOW)
    assert (w.balance, w.arrears) == (-5, 5)
    with pytest.raises(InsufficientCredits):
        w.debit(1, reason="r", description="d", now=NOW)
    invariant(w)


def test_unrefusable_usage_becomes_arrears_and_next_credit_pays_it() -> None:
    w = wallet_with((10, None))
    w.debit(25, reason="kinde:x", description="d", now=NOW, refusable=False)
    assert (w.balance, w.arrears) == (-15, 15)
    invariant(w)
    w.credit(20, kind="purchase", reason="p", description="d", now=NOW)
    assert (w.balance, w.arrears) == (5, 0)
    assert sum(b.remaining for b in w.blocks) == 5
    invariant(w)


def test_expiry_moves_remainder_out_with_an_entry() -> None:
    w = wallet_with((100, 1), (50, None))
    w.debit(30, reason="r", description="d", now=NOW)
    later = NOW + timedelta(days=2)
    expired = w.expire_blocks(later)
    assert [(e.kind, e.amount) for e in expired] == [("expiry", -70)]
    assert w.balance == 50 and w.next_expiry_at is None
    invariant(w)


def test_debit_after_expiry_uses_only_live_blocks() -> None:
    w = wallet_with((100, 1))
    with pytest.raises(InsufficientCredits):
        w.debit(1, reason="r", description="d", now=NOW + timedelta(days=1))
    assert w.balance == 0


def test_entries_carry_running_balance() -> None:
    w = wallet_with((100, None))
    w.debit(30, reason="r", description="d", now=NOW)
    w.debit(20, reason="r", description="d", now=NOW)
    running = 0
    for e in w.new_entries:
        running += e.amount
        assert e.balance_after == running
    assert running == w.balance == 50


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_bad_amounts_refused(bad: object) -> None:
    w = wallet_with((10, None))
    with pytest.raises(InvalidRequest):
        w.debit(bad, reason="r", description="d", now=NOW)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        w.credit(bad, kind="grant", reason="r", description="d", now=NOW)  # type: ignore[arg-type]
    assert w.balance == 10


def test_hold_reserves_available_but_not_balance() -> None:
    w = wallet_with((100, None))
    hold = w.place_hold(60, expires_at=NOW + timedelta(minutes=5), description="h", now=NOW)
    assert (w.balance, w.held, w.available) == (100, 60, 40)
    with pytest.raises(InsufficientCredits):
        w.debit(41, reason="r", description="d", now=NOW)
    w.capture_hold(hold, 45, description="c", now=NOW)
    assert (w.balance, w.held, w.available) == (55, 0, 55)
    with pytest.raises(HoldNotOpen):
        w.capture_hold(hold, 1, description="c", now=NOW)
    with pytest.raises(HoldNotOpen):
        w.release_hold(hold, description="r", now=NOW)
    invariant(w)


def test_capture_within_hold_succeeds_even_after_arrears() -> None:
    w = wallet_with((100, None))
    hold = w.place_hold(60, expires_at=NOW + timedelta(minutes=5), description="h", now=NOW)
    w.debit(90, reason="kinde:x", description="d", now=NOW, refusable=False)
    assert w.available < 0
    w.capture_hold(hold, 60, description="c", now=NOW)
    assert (w.balance, w.held, w.arrears) == (-50, 0, 50)
    invariant(w)


def test_capture_more_than_held_is_refused() -> None:
    w = wallet_with((1000, None))
    hold = w.place_hold(100, expires_at=NOW + timedelta(minutes=5), description="h", now=NOW)
    entries = len(w.new_entries)
    with pytest.raises(CaptureExceedsHold) as refused:
        w.capture_hold(hold, 700, description="c", now=NOW)
    assert refused.value.code == "capture_exceeds_hold"
    assert hold.status == "open" and (w.balance, w.held) == (1000, 100)
    assert len(w.new_entries) == entries and not w.touched_blocks
    w.capture_hold(hold, 100, description="c", now=NOW)
    assert w.balance == 900


def test_held_credits_do_not_expire_while_the_hold_is_open() -> None:
    w = wallet_with((100, 1), (30, None))
    hold = w.place_hold(120, expires_at=NOW + timedelta(days=3), description="h", now=NOW)
    later = NOW + timedelta(days=2)
    # The hold reserves the soonest-expiring credits: the 100 past their expiry stay.
    assert w.expire_blocks(later) == []
    assert (w.balance, w.held, w.available) == (130, 120, 10)
    assert w.next_expiry_at is None and not w.needs_sweep(later)  # no sweep until settled
    w.capture_hold(hold, 50, description="c", now=later)
    # The capture drew the kept-back credits first; the 50 left of them expire with it.
    assert [(e.kind, e.amount) for e in w.new_entries[-2:]] == [("capture", -50),
                                                                ("expiry", -50)]
    assert (w.balance, w.held, w.arrears) == (30, 0, 0)
    invariant(w)


def test_released_hold_lets_kept_credits_expire() -> None:
    w = wallet_with((100, 1))
    hold = w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=NOW)
    later = NOW + timedelta(days=2)
    assert w.expire_blocks(later) == []
    w.release_hold(hold, description="r", now=later)
    assert [(e.kind, e.amount) for e in w.new_entries[-2:]] == [("release", 0),
                                                                ("expiry", -100)]
    assert (w.balance, w.held) == (0, 0)
    invariant(w)


def test_release_and_expired_hold() -> None:
    w = wallet_with((100, None))
    h1 = w.place_hold(10, expires_at=NOW + timedelta(minutes=5), description="h", now=NOW)
    w.release_hold(h1, description="r", now=NOW)
    assert (w.held, h1.status) == (0, "released")
    h2 = w.place_hold(10, expires_at=NOW + timedelta(minutes=5), description="h", now=NOW)
    later = NOW + timedelta(minutes=6)
    with pytest.raises(HoldNotOpen):
        w.capture_hold(h2, 5, description="c", now=later)
    w.release_hold(h2, description="expired", now=later, expired=True)
    assert (w.held, h2.status, w.balance) == (0, "expired", 100)
    assert all(e.amount == 0 for e in w.new_entries if e.kind in ("hold", "release"))


def test_usage_during_a_hold_does_not_spend_the_credits_kept_back_for_it() -> None:
    """Credits past their expiry are kept only for the open hold: other usage must not spend
    them, or placing a hold, spending, then releasing it keeps expired credits for good."""
    w = wallet_with((100, 1), (100, None))
    hold = w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=NOW)
    later = NOW + timedelta(days=2)
    w.debit(100, reason="r", description="d", now=later)  # the unreserved 100
    w.release_hold(hold, description="r", now=later)
    # The 100 past their expiry were kept for the hold; released, they expire.
    assert (w.balance, w.held, w.arrears) == (0, 0, 0)
    assert [(e.kind, e.amount) for e in w.new_entries[-3:]] == [
        ("usage", -100), ("release", 0), ("expiry", -100)]
    invariant(w)


def test_a_hold_placed_after_credits_expired_does_not_capture_them() -> None:
    """The credits kept past their expiry belong to the hold that was open when they expired;
    capturing a later hold from them, then releasing the first, kept them for good."""
    w = wallet_with((100, 1), (100, None))
    first = w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=NOW)
    later = NOW + timedelta(days=2)
    second = w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=later)
    w.capture_hold(second, 100, description="c", now=later)  # from the unreserved 100
    w.release_hold(first, description="r", now=later)
    assert (w.balance, w.held, w.arrears) == (0, 0, 0)
    invariant(w)


def test_rolling_holds_do_not_keep_expired_credits_alive() -> None:
    w = wallet_with((100, 1), (100, None))
    first = w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=NOW)
    later = NOW + timedelta(days=2)
    w.place_hold(100, expires_at=NOW + timedelta(days=3), description="h", now=later)
    w.release_hold(first, description="r", now=later)
    # The first hold is gone: the 100 that expired under it expire now; the second hold
    # reserves the other 100, so nothing is available.
    assert (w.balance, w.held, w.available) == (100, 100, 0)
