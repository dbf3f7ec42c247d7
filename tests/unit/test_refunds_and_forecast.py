"""The pure rules behind refunds (app.domain.refunds) and the runway forecast
(app.domain.forecast): amounts in the currency's minor unit, when an invoice is reduced, what
is refused, and the forecast's pace, run-out, expiry losses and suggestion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from app.domain.forecast import BundleOption, CreditsLeft, forecast, runway_sentence
from app.domain.ledger import Wallet
from app.domain.refunds import (
    CreditsHeld,
    KindePeriod,
    NotRefundable,
    RefundInvoice,
    refund_terms,
    refundable_credits,
)

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
PERIOD = KindePeriod(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def terms(**kw: object) -> tuple[str, RefundInvoice]:
    args: dict[str, object] = dict(original=5000, unused=5000, price=Decimal("49.00"),
                                   currency="USD", sold_at=NOW - timedelta(days=1), now=NOW,
                                   invoiced_through_kinde=True, period=PERIOD)
    args.update(kw)
    t = refund_terms(**args)  # type: ignore[arg-type]
    return str(t.amount), t.invoice


def test_wholly_unused_pack_of_the_open_period_is_reduced() -> None:
    assert terms() == ("49.00", RefundInvoice.REDUCED)


@pytest.mark.parametrize("change", [
    {"unused": 4999},                                           # partly used
    {"invoiced_through_kinde": False},                          # paid elsewhere
    {"period": None},                                           # period unknown
    {"sold_at": datetime(2026, 10, 31, tzinfo=UTC)},            # sold in an earlier period
    {"now": datetime(2026, 12, 1, tzinfo=UTC)},                 # the period has closed
    {"period": KindePeriod(PERIOD.start, PERIOD.end,
                           acknowledged_start=datetime(2026, 12, 1, tzinfo=UTC))},  # stale
])
def test_anything_else_is_a_credit_note(change: dict[str, object]) -> None:
    assert terms(**change)[1] is RefundInvoice.CREDIT_NOTE_DUE


def test_amount_is_price_less_the_money_used_in_the_minor_unit() -> None:
    assert terms(unused=3500)[0] == "34.30"
    assert terms(unused=3333, price=Decimal("10.00"))[0] == "6.67"   # 10.00 - round(3.334)
    assert terms(unused=1, original=3, price=Decimal("1000"), currency="JPY")[0] == "333"
    assert terms(unused=1, original=3, price=Decimal("1.000"), currency="KWD")[0] == "0.333"


def _wallet_with_pack(held: int = 0) -> tuple[Wallet, str]:
    w = Wallet(id="kp_a", owner_type="user")
    w.credit(5000, kind="purchase", reason="bundle:starter", description="+5000", now=NOW)
    block = w.blocks[0]
    w.held = held
    return w, block.id


def test_only_purchases_with_credits_left_are_refunded() -> None:
    w, block_id = _wallet_with_pack()
    block = w.blocks[0]
    for kind in ("grant", "allotment", "adjustment"):
        with pytest.raises(NotRefundable, match="only purchases"):
            refundable_credits(w, block, kind, NOW)
    with pytest.raises(NotRefundable, match="nothing"):
        refundable_credits(w, None, "purchase", NOW)
    assert refundable_credits(w, block, "purchase", NOW) == 5000


def test_refund_is_refused_when_open_holds_need_the_pack() -> None:
    w, _ = _wallet_with_pack(held=1)
    with pytest.raises(CreditsHeld):
        refundable_credits(w, w.blocks[0], "purchase", NOW)


def usage(days: list[int], credits: int, feature: str = "reports") -> list[
        tuple[date, str | None, int]]:
    return [(NOW.date() - timedelta(days=d), feature, credits) for d in days]


def test_pace_of_the_last_7_days_and_floored_days_left() -> None:
    f = forecast(now=NOW, available=1000, blocks=[CreditsLeft(1000, None)],
                 daily_usage=usage([0, 1, 2, 3], 70) + usage([20], 5000),
                 bundles=[BundleOption("tiny", 500), BundleOption("small", 1500),
                          BundleOption("big", 5000)])
    assert (f.window_days, f.credits_per_day, f.days_left) == (7, 40.0, 25)
    assert f.runs_out_at == NOW + timedelta(days=25)
    # 1,200 a month: the smallest bundle that covers it.
    assert f.suggested_bundle == "small" and f.expiring_before_run_out == 0
    assert runway_sentence(f) == "At your pace of the last 7 days, about 25 days left."


def test_thirty_days_when_seven_hold_too_little() -> None:
    f = forecast(now=NOW, available=900, blocks=[CreditsLeft(900, None)],
                 daily_usage=usage([1], 30) + usage([10, 20], 300), bundles=[])
    assert (f.window_days, f.credits_per_day, f.days_left) == (30, 21.0, 42)
    assert f.suggested_bundle is None


def test_nothing_used_means_no_run_out() -> None:
    f = forecast(now=NOW, available=900, blocks=[CreditsLeft(900, None)], daily_usage=[])
    assert (f.credits_per_day, f.days_left, f.runs_out_at) == (0.0, None, None)
    assert runway_sentence(f) == "No credits used in the last 30 days."


def test_credits_expiring_before_the_pace_reaches_them_are_lost_and_run_out_is_sooner() -> None:
    # 100 a day; 1,000 expire in 5 days (500 of them used by then), 1,000 never expire.
    f = forecast(now=NOW, available=2000,
                 blocks=[CreditsLeft(1000, NOW + timedelta(days=5)), CreditsLeft(1000, None)],
                 daily_usage=usage(list(range(7)), 100),
                 bundles=[BundleOption("small", 500), BundleOption("big", 5000)])
    assert f.expiring_before_run_out == 500
    assert f.days_left == 15  # 5 days on the expiring block, then 10 on the other
    assert f.suggested_bundle == "big"  # 3,000 a month: nothing smaller covers it
    assert [(p.feature, p.credits_per_day) for p in f.by_feature] == [("reports", 100.0)]


def test_held_credits_are_not_forecast_and_empty_wallet_must_top_up() -> None:
    f = forecast(now=NOW, available=0, blocks=[CreditsLeft(300, None)],
                 daily_usage=usage(list(range(7)), 10))
    assert f.days_left == 0
    assert runway_sentence(f) == "At your pace of the last 7 days, you need to top up now."


def test_a_run_out_beyond_a_century_is_reported_at_the_horizon() -> None:
    f = forecast(now=NOW, available=10**12, blocks=[CreditsLeft(10**12, None)],
                 daily_usage=usage([0, 1, 2], 1))
    assert f.days_left == 36_500
