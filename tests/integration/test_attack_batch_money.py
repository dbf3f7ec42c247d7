"""Attack pins: one usage batch (one shared transaction, a savepoint per record) keeps the
once-only money rules that racing single requests keep: one alert per threshold crossing, one
auto-recharge however many records cross its threshold, and a refused record in between
changes nothing. Both databases."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import text

from app.bootstrap import Container
from app.services.ledger import verify_ledger
from tests.integration.test_alerts_recharge import (  # noqa: F401 - fixtures
    billed,
    kinde,
    local,
    notices,
    recharges,
    threshold_of,
)


def test_one_batch_crossing_every_threshold_alerts_once_each(local: Container) -> None:  # noqa: F811
    local.ledger.grant("kp_a", 1000, "welcome")
    records = []
    for n in range(100):
        records.append({"wallet_id": "kp_a", "feature": "api_call", "quantity": 10})
        if n % 10 == 5:  # refused in the middle: rolled back alone, alerts untouched
            records.append({"wallet_id": "kp_a", "feature": "api_call", "quantity": 10**6})
    results = local.ledger.record_usage_batch(records)
    assert Counter(r["status"] for r in results) == {201: 100, 402: 10}
    fired = Counter(threshold_of(n) for n in notices(local))
    assert fired and all(count == 1 for count in fired.values()), fired
    assert "zero" in fired
    assert local.ledger.get_wallet("kp_a")["balance"] == 0
    assert verify_ledger(local.store) == {}


def test_one_batch_crossing_the_recharge_threshold_buys_once(billed: Container) -> None:  # noqa: F811
    billed.ledger.grant("kp_rich", 1000, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    records = [{"wallet_id": "kp_rich", "feature": "api_call", "quantity": 2}
               for _ in range(400)]  # 800 credits: crosses 500 once, stays far above after
    results = billed.ledger.record_usage_batch(records)
    assert all(r["status"] == 201 for r in results)
    assert recharges(billed) == [("starter", "pending")]
    with billed.store.engine.connect() as conn:
        purchases = conn.execute(text(
            "SELECT count(*) FROM entries WHERE reason = 'auto-recharge:starter'")).scalar()
    assert purchases == 1
    assert billed.ledger.get_wallet("kp_rich")["balance"] == 1000 + 5000 - 800
    assert [n["type"] for n in notices(billed)].count("credits.auto_recharged") == 1
    assert verify_ledger(billed.store) == {}
