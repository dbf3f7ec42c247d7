"""The pure Kinde event layer: envelope, classification and the tolerant billing extractor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.kinde_events import (
    HANDLED_TYPES,
    MAX_METER_VALUE,
    EventKind,
    classify,
    extract_billing,
    parse_envelope,
    parse_meter_value,
    parse_timestamp,
    signup_owner,
)


def event(event_type: str = "customer.meter_usage_updated", **data: Any) -> Any:
    return parse_envelope(
        {
            "type": event_type,
            "event_id": "event_1",
            "source": "api",
            "timestamp": "2026-11-24T12:00:00+10:00",
            "data": data,
        }
    )


def test_classification() -> None:
    assert classify("user.created") is EventKind.USER_CREATED
    assert classify("organization.created") is EventKind.ORG_CREATED
    assert classify("customer.meter_usage_updated") is EventKind.METER_USAGE
    for t in ("customer.agreement_created", "customer.plan_assigned", "customer.plan_changed"):
        assert classify(t) is EventKind.MAPPING
    for t in ("customer.agreement_cancelled", "customer.payment_failed",
              "customer.payment_succeeded", "customer.invoice_overdue"):
        assert classify(t) is EventKind.HISTORY
    for t in ("user.updated", "customer.plan_created", "role.created", "anything"):
        assert classify(t) is EventKind.IGNORED
        assert t not in HANDLED_TYPES


def test_envelope_reads_kinde_shape_and_prefers_event_timestamp() -> None:
    e = parse_envelope({
        "type": " user.created ", "event_id": "event_abc", "source": "admin",
        "timestamp": "2024-05-01T17:41:45.592145+10:00",
        "event_timestamp": "2026-02-03T12:00:00.000Z", "data": {"user": {"id": "kp_1"}},
    })
    assert (e.type, e.event_id, e.source) == ("user.created", "event_abc", "admin")
    assert e.timestamp == datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
    no_event_ts = parse_envelope({"type": "x", "event_id": "e",
                                  "timestamp": "2024-05-01T17:41:45+10:00"})
    assert no_event_ts.timestamp == datetime(2024, 5, 1, 7, 41, 45, tzinfo=UTC)
    assert no_event_ts.data == {}


def _nested(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = [node]
    return {"a": node}


@pytest.mark.parametrize("claims, problem", [
    ({"type": "user.created"}, "event_id"),
    ({"event_id": "e"}, "type"),
    ({"type": "", "event_id": "e"}, "type"),
    ({"type": "x", "event_id": 5}, "event_id"),
    ({"type": "x", "event_id": "e" * 129}, "event_id"),
    ({"type": "x" * 81, "event_id": "e"}, "type"),
    ({"type": "x", "event_id": "e\x00"}, "NUL"),
    ({"type": "x\x00", "event_id": "e"}, "NUL"),
    ({"type": "x", "event_id": "e", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp"),
    ({"type": "x", "event_id": "e", "data": [1]}, "data"),
    ({"type": "x", "event_id": "e", "data": _nested(40)}, "nested"),
])
def test_envelope_lists_what_is_malformed_and_never_raises(
    claims: dict[str, Any], problem: str
) -> None:
    e = parse_envelope(claims, fallback_id="unusable_x")
    assert e.problems and problem in "; ".join(e.problems)
    assert "\x00" not in "; ".join(e.problems)
    # Always storable: an id within the key width, a type within its column, no NUL.
    assert 0 < len(e.event_id) <= 128 and "\x00" not in e.event_id
    assert 0 < len(e.type) <= 80 and "\x00" not in e.type
    if not isinstance(claims.get("event_id"), str) or "\x00" in claims["event_id"] or len(
            claims["event_id"]) > 128:
        assert e.event_id == "unusable_x"
    # Without a fallback the stand-in id is derived from the claims: stable across retries.
    assert parse_envelope(claims).event_id == parse_envelope(dict(claims)).event_id


def test_a_clean_envelope_has_no_problems() -> None:
    assert event("user.created", user={"id": "kp_1"}).problems == ()


def test_timestamps_with_z_and_offsets() -> None:
    assert parse_timestamp("2026-11-01T00:00:00Z") == parse_timestamp("2026-11-01T00:00:00+00:00")
    assert parse_timestamp("2026-11-01T10:00:00+10:00") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_timestamp("2026-11-01T00:00:00") == datetime(2026, 11, 1, tzinfo=UTC)
    for bad in (None, "", "yesterday", 1700000000):
        assert parse_timestamp(bad) is None


@pytest.mark.parametrize("raw, units", [
    (3, 3), ("3", 3), (" 12 ", 12), ("12.0", 12), (2.0, 2), (0, 0), ("0", 0),
    (MAX_METER_VALUE, MAX_METER_VALUE),
])
def test_meter_values_accepted(raw: Any, units: int) -> None:
    assert parse_meter_value(raw) == (units, None)


@pytest.mark.parametrize("raw, why", [
    (None, "no meter value"), ("", "not a number"), ("abc", "not a number"),
    (True, "not a number"), (-1, "negative"), ("-2", "negative"), ("2.5", "whole number"),
    (0.1, "whole number"), ("NaN", "finite"), ("Infinity", "finite"),
    (MAX_METER_VALUE + 1, "implausibly large"), ([], "not a number"),
])
def test_meter_values_refused_with_a_reason(raw: Any, why: str) -> None:
    units, problem = parse_meter_value(raw)
    assert units is None and problem is not None and why in problem


@pytest.mark.parametrize("data", [
    {"customer_id": "customer_1", "agreement_id": "agreement_1", "feature_code": "storage_gb",
     "meter_value": "4"},
    {"customer": {"id": "customer_1"}, "customer_agreement_id": "agreement_1",
     "billing_feature_code": "storage_gb", "quantity": 4},
    {"customer": {"id": "customer_1"}, "agreement_id": "agreement_1", "meter_id": "storage_gb",
     "value": "4.0"},
])
def test_extractor_reads_every_known_spelling(data: dict[str, Any]) -> None:
    f = extract_billing(event(**data))
    assert (f.customer_id, f.agreement_id, f.feature_code, f.value) == (
        "customer_1", "agreement_1", "storage_gb", 4
    )
    assert f.meter_type == "delta"
    assert f.value_problem is None


def test_extractor_owner_hints_are_validated() -> None:
    f = extract_billing(event(org_code="org_abc", user_id="kp_def"))
    assert (f.org_code, f.user_id, f.owner_id) == ("org_abc", "kp_def", "org_abc")
    bad = extract_billing(event(org_code="kp_wrong", user_id="org_wrong"))
    assert bad.org_code is None and bad.user_id is None and bad.owner_id is None
    weird = extract_billing(event(user_id="kp_bad id!"))
    assert weird.user_id is None
    assert extract_billing(event(customer_id="c" * 65)).customer_id is None


def test_meter_type_and_period_key() -> None:
    absolute = extract_billing(event(meter_type_code="ABSOLUTE", meter_value="1",
                                     period_start="2026-11-01T00:00:00Z"))
    same = extract_billing(event(meter_type_code="absolute", meter_value="1",
                                 current_period_start="2026-11-01T00:00:00.000+00:00"))
    assert absolute.meter_type == "absolute"
    assert absolute.period_key == same.period_key == "start:2026-11-01T00:00:00+00:00"
    # Without a stated period start there is no period key: it is never guessed (issue 9).
    by_usage = extract_billing(event(meter_value="1",
                                     meter_usage_timestamp="2026-10-31T23:30:00-02:00"))
    assert by_usage.period_key is None
    assert by_usage.occurred_at == datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
    assert extract_billing(event(meter_value="1")).period_key is None
    # An unknown meter type is not read as "delta" (that would debit a running total again).
    total = extract_billing(event(meter_type_code="total"))
    assert total.meter_type == "delta" and "neither 'delta' nor 'absolute'" in total.problems[0]
    # An unreadable period start is a problem, not a key made from its text.
    odd = extract_billing(event(meter_value="1", period_start="15/11/2026"))
    assert odd.period_key is None and "period_start" in odd.problems[0]
    ended = extract_billing(event(current_period_start="2026-11-15T00:00:00Z",
                                  current_period_end="2026-12-15T00:00:00+00:00"))
    assert (ended.period_start, ended.period_end) == (
        datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 12, 15, tzinfo=UTC))
    no_dates = parse_envelope({"type": "customer.meter_usage_updated", "event_id": "e",
                               "data": {"meter_value": "1"}})
    assert extract_billing(no_dates).period_key is None


def test_extractor_tolerates_odd_shapes() -> None:
    f = extract_billing(event(customer=["not", "a", "dict"], meter_value={"x": 1},
                              feature_code=123))
    assert f.customer_id is None
    assert f.feature_code == "123"
    assert f.value is None and f.value_problem
    garbage = parse_envelope({"type": "customer.meter_usage_updated", "event_id": "e",
                              "data": "not an object"})
    assert extract_billing(garbage).customer_id is None


def test_signup_owner() -> None:
    user = event("user.created", user={"id": "kp_1", "email": "a@example.com"})
    assert signup_owner(user) == ("kp_1", "a@example.com")
    no_email = event("user.created", user={"id": "kp_1", "email": None})
    assert signup_owner(no_email) == ("kp_1", None)
    org = event("organization.created", organization={"code": "org_1", "name": "Acme"})
    assert signup_owner(org) == ("org_1", None)
    bad = event("user.created", user={"id": "org_not_a_user"})
    assert signup_owner(bad) == (None, None)
    assert signup_owner(event("customer.payment_failed")) == (None, None)


# -- issue 9: malformed contents of verified events -------------------------------------------


@pytest.mark.parametrize("raw", [
    "0001-01-01T00:00:00+01:00",  # converting to UTC overflows
    "9999-12-31T23:59:59-01:00",
    "2026-11-24T12:00:00\x00Z",
])
def test_unconvertible_timestamps_read_as_none(raw: str) -> None:
    assert parse_timestamp(raw) is None


@pytest.mark.parametrize("raw", ["1e999999999", "9" * 4000, "1E+100000"])
def test_huge_meter_values_are_refused_without_building_the_number(raw: str) -> None:
    units, problem = parse_meter_value(raw)
    assert units is None and problem is not None and "large" in problem


def test_extractor_falls_through_to_a_later_valid_spelling() -> None:
    f = extract_billing(event(customer_id="c" * 65, customer={"id": "customer_1"},
                              agreement_id="a\x00", agreement={"id": "agreement_1"},
                              user_id="not-a-user", user={"id": "kp_1"},
                              org_code="org_bad id", organization={"code": "org_1"},
                              feature_code="f" * 100, billing_feature_code="storage_gb"))
    assert (f.customer_id, f.agreement_id, f.user_id, f.org_code, f.feature_code) == (
        "customer_1", "agreement_1", "kp_1", "org_1", "storage_gb")


def test_nul_characters_never_pass_as_text() -> None:
    f = extract_billing(event(customer_id="customer\x00", feature_code="storage_gb\x00",
                              plan_code="pro\x00"))
    assert (f.customer_id, f.feature_code, f.plan_code) == (None, None, None)
    user = event("user.created", user={"id": "kp_1", "email": "a\x00@example.com"})
    assert signup_owner(user)[1] is None
