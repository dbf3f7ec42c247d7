"""Park reasons: typed, stored as readable text, and old rows still read."""

from __future__ import annotations

import pytest

from app.domain.park_reasons import ParkKind, ParkReason


@pytest.mark.parametrize("kind", list(ParkKind))
def test_stored_text_reads_back_as_the_same_reason(kind: ParkKind) -> None:
    reason = ParkReason(kind, "some detail: with a colon")
    assert ParkReason.parse(reason.text) == reason


@pytest.mark.parametrize("stored, kind", [
    ("failed: RuntimeError: database hiccup", ParkKind.FAILED),
    ("period unknown: the absolute meter value states no billing period", ParkKind.PERIOD_UNKNOWN),
    ("malformed billing event: data.customer_id holds a NUL", ParkKind.MALFORMED),
    ("no feature code (data.feature_code / data.billing_feature_code / data.meter_id)",
     ParkKind.MALFORMED),
    ("meter value '2.5' is not a whole number of units", ParkKind.MALFORMED),
    ("unknown feature code 'x': not in the credits catalog (c.toml)", ParkKind.UNKNOWN_FEATURE),
    ("unknown customer customer_x: no wallet is mapped to it yet", ParkKind.NO_WALLET),
    ("no customer id (data.customer_id / data.customer.id) and no data.user_id",
     ParkKind.NO_WALLET),
    ("customer customer_1 belongs to wallet kp_one, but the event names kp_two",
     ParkKind.NO_WALLET),
    ("wallet kp_one is billed as customer customer_1, but the event says customer_2",
     ParkKind.NO_WALLET),
    ("absolute meter value for 2026-11-01 00:00 UTC predates the current period",
     ParkKind.PERIOD_PAST),
    ("user.created without a usable data.user.id (kp_...)", ParkKind.MALFORMED),
    (None, ParkKind.MALFORMED),
])
def test_rows_stored_before_kinds_still_parse(stored: str | None, kind: ParkKind) -> None:
    reason = ParkReason.parse(stored)
    assert reason.kind is kind
    if kind not in (ParkKind.FAILED, ParkKind.PERIOD_UNKNOWN):
        assert reason.detail == (stored or "")  # nothing of the old text is lost
