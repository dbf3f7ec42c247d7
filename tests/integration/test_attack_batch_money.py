"""Attack pins: one usage batch (one shared transaction, a savepoint per record) keeps the
once-only money rules that racing single requests keep: one alert per threshold crossing, one
auto-recharge however many records cross its threshold, and a refused record in between
changes nothing. Also refactor pins: a pack invoice stored in its legacy form (a `meter_usage`
row naming a bundle) still fails its purchase and suspends auto-recharge when it dies, and the
payment strategy with Kinde plus SALES_PAID_ELSEWHERE. Both databases."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import text

from app.bootstrap import Container
from app.services.ledger import verify_ledger
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde
from tests.integration.test_alerts_recharge import (  # noqa: F401 - fixtures
    billed,
    kinde,
    learn_customer,
    local,
    make_container,
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


def test_a_legacy_pack_invoice_row_that_dies_fails_its_purchase_and_suspends(  # noqa: F811
    billed: Container, kinde: FakeKinde, clock: FakeClock  # noqa: F811
) -> None:
    """A pack invoice queued before pack invoices had their own kind (a `meter_usage` row whose
    payload names a bundle) is still invoiced as one, and its death still has consequences."""
    billed.ledger.grant("kp_rich", 600, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    kinde.fail_next(50, status=400, path_prefix="/api/v1/billing/meter_usage")
    billed.ledger.record_usage("kp_rich", "report_generation", 3)  # 450: buys
    with billed.store.engine.begin() as conn:
        legacy = conn.execute(text(
            "UPDATE outbox SET kind = 'meter_usage' WHERE kind = 'pack_invoice'")).rowcount
    assert legacy == 1
    for _ in range(4):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    assert recharges(billed) == [("starter", "failed")]
    view = billed.ledger.get_wallet("kp_rich")
    assert view["auto_recharge"]["suspended"] is True
    assert "charge failed" in view["auto_recharge"]["suspended_reason"]
    with billed.store.engine.connect() as conn:
        assert conn.execute(text(
            "SELECT status FROM outbox WHERE kind = 'meter_usage'")).scalar() == "dead"


def test_paid_elsewhere_with_kinde_sells_without_invoicing_but_recharges_through_kinde(
    db_url: str, tmp_path: Path, kinde: FakeKinde, clock: FakeClock  # noqa: F811
) -> None:
    """SALES_PAID_ELSEWHERE wins for sales (invoicing through Kinde too would charge twice);
    auto-recharge, which only Kinde can charge, is still invoiced there."""
    container = make_container(
        db_url, tmp_path, clock, KINDE_DOMAIN=kinde.url,
        KINDE_API_AUDIENCE="https://api.example.com", KINDE_M2M_CLIENT_ID=kinde.client_id,
        KINDE_M2M_CLIENT_SECRET=kinde.client_secret, SALES_PAID_ELSEWHERE="true")
    try:
        assert not container.ledger.sales_are_invoiced()
        container.ledger.top_up_bundle("kp_rich", "starter")
        assert recharges(container) == []
        with container.store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM outbox WHERE kind IN "
                                     "('pack_invoice', 'meter_usage')")).scalar() == 0
        learn_customer(container, "kp_rich", "customer_r")  # auto-recharge needs it
        container.ledger.set_auto_recharge(
            "kp_rich", {"enabled": True, "threshold_credits": 4990, "bundle": "starter"})
        container.ledger.record_usage("kp_rich", "api_call", 20)
        assert recharges(container) == [("starter", "pending")]
        with container.store.engine.connect() as conn:
            assert conn.execute(text(
                "SELECT count(*) FROM outbox WHERE kind = 'pack_invoice'")).scalar() == 1
    finally:
        container.close()
