"""`simulate` sends agreement and plan events with their billing period, read back by the one
tolerant billing extractor (so local mode can exercise plan credits)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.cli_webhooks import AGREEMENT_EVENTS, build_payload
from app.domain.kinde_events import extract_billing, parse_envelope


@pytest.mark.parametrize("event_type", AGREEMENT_EVENTS)
def test_plan_events_carry_the_period(event_type: str) -> None:
    payload = build_payload(event_type, org="org_x", customer="c_1", agreement="a_1",
                            plan="pro", period_start="2026-11-01T00:00:00Z",
                            period_end="2026-12-01T00:00:00+00:00")
    fields = extract_billing(parse_envelope(payload))
    assert (fields.plan_code, fields.agreement_id) == ("pro", "a_1")
    assert fields.period_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert fields.period_end == datetime(2026, 12, 1, tzinfo=UTC)


def test_other_events_do_not() -> None:
    payload = build_payload("customer.payment_failed", org="org_x", period_end="2026-12-01")
    assert "current_period_end" not in payload["data"]
