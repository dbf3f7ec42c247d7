"""The plan policies as pure rules (app.domain.plans) and their catalog validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain.agreements import Period
from app.domain.catalog import CatalogError, Plan, parse_catalog
from app.domain.ledger import Block, Wallet, expiry_description
from app.domain.plans import (
    allotment_expiry,
    allotment_reason,
    cap_expiries,
)

NOV = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
EXPIRE = Plan("basic", 1000, "expire", None, label="Basic")
ROLL = Plan("pro", 1000, "rollover", 60, 500)
FULL = Plan("max", 1000, "full", None, 500)


def block(n: int, remaining: int, expires: datetime | None, kind: str = "allotment") -> Block:
    return Block(f"blk_{n}", "org_x", kind, 1000, remaining, expires,
                 NOV.start + timedelta(minutes=n), "r")


def test_expiry_per_policy() -> None:
    assert allotment_expiry(EXPIRE, NOV) == NOV.end
    assert allotment_expiry(ROLL, NOV) == NOV.end + timedelta(days=60)
    assert allotment_expiry(FULL, NOV) is None


def test_expiry_description_names_what_and_why() -> None:
    b = Block("blk_1", "org_x", "allotment", 1000, 700, NOV.end, NOV.start,
              allotment_reason(EXPIRE, NOV))
    assert expiry_description(b, 700) == (
        "-700 credits: unused Basic plan credits for Nov 2026 expired at period end")
    w = Wallet("org_x", "org", balance=700, blocks=[b])
    [entry] = w.expire_blocks(NOV.end + timedelta(days=3))
    assert entry.created_at == NOV.end  # dated at the expiry, not when the sweep ran
    assert entry.draws == (("blk_1", 700),)


def test_cap_takes_the_excess_soonest_expiring_first_and_ignores_purchases() -> None:
    # DESIGN: cap 500, 700 unused -> 200 expire (the new allotment comes after, uncounted).
    blocks = [block(1, 700, NOV.end + timedelta(days=60))]
    assert [(b.id, n) for b, n in cap_expiries(ROLL, blocks, NOV.end, 10**6)] == [("blk_1", 200)]
    blocks = [block(1, 400, NOV.end + timedelta(days=90)), block(2, 400, NOV.end + timedelta(
        days=30)), block(3, 5000, NOV.end + timedelta(days=5), kind="purchase")]
    assert [(b.id, n) for b, n in cap_expiries(ROLL, blocks, NOV.end, 10**6)] == [
        ("blk_2", 300)]
    # Blocks due at the period end expire anyway and are not counted; no cap for "expire".
    assert cap_expiries(ROLL, [block(1, 900, NOV.end)], NOV.end, 10**6) == []
    assert cap_expiries(EXPIRE, [block(1, 900, None)], NOV.end, 10**6) == []
    assert [(b.id, n) for b, n in cap_expiries(FULL, [block(2, 400, None), block(1, 400, None)],
                                               NOV.end, 10**6)] == [("blk_1", 300)]


def test_cap_never_takes_credits_an_open_hold_reserves() -> None:
    """Full plan, cap 500, 1,400 unused allotment credits of which 1,200 are held over the
    period end: only the 200 available go (not 900), so the capture stays covered."""
    blocks = [block(1, 1400, None)]
    assert [(b.id, n) for b, n in cap_expiries(FULL, blocks, NOV.end, 200)] == [("blk_1", 200)]
    assert cap_expiries(FULL, blocks, NOV.end, 0) == []
    assert cap_expiries(FULL, blocks, NOV.end, -50) == []  # arrears: nothing is available


@pytest.mark.parametrize(
    ("plan", "key", "problem"),
    [
        ({"credits_per_period": 1, "rollover": "rollover"}, "rollover_expires_after_days",
         "required"),
        ({"credits_per_period": 1, "rollover_expires_after_days": 3},
         "rollover_expires_after_days", "applies only"),
        ({"credits_per_period": 1, "rollover_max_credits": 10}, "rollover_max_credits",
         "applies only"),
        ({"credits_per_period": 1, "rollover": "full", "rollover_max_credits": -1},
         "rollover_max_credits", "at least 0"),
        ({"credits_per_period": 1, "price": "1.00"}, "currency", "together"),
        ({"credits_per_period": 1, "price": "1.00", "currency": "usd"}, "currency", "ISO"),
    ],
)
def test_catalog_rejects_bad_plans(plan: dict[str, Any], key: str, problem: str) -> None:
    data = {"features": {"api": {"label": "API", "unit": "call", "credits_per_unit": 1,
                                 "kinde_feature_code": "api", "source": "app"}},
            "plans": {"basic": plan}}
    with pytest.raises(CatalogError) as info:
        parse_catalog(data)
    assert info.value.key == f"plans.basic.{key}" and problem in info.value.problem


def test_catalog_reads_plan_fields() -> None:
    data = {"features": {"api": {"label": "API", "unit": "call", "credits_per_unit": 1,
                                 "kinde_feature_code": "api", "source": "app"}},
            "plans": {"team_plus": {"credits_per_period": 5, "rollover": "full",
                                    "rollover_max_credits": 9, "price": "4.99",
                                    "currency": "EUR"}}}
    plan = parse_catalog(data).plans["team_plus"]
    assert (plan.name, plan.rollover_max_credits, str(plan.price), plan.currency) == (
        "Team Plus", 9, "4.99", "EUR")
