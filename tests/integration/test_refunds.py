# ruff: noqa: F811 - the fake Kinde fixture is imported and then requested by name
"""Refunds of sold packs, against a real (fake) Kinde over HTTP, on both databases: the unused
credits leave as one `void` entry, a wholly unused pack of the open period is taken off
Kinde's count (`reduced`), anything else is a credit note; a pack goes back at most once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from app.bootstrap import Container
from app.domain.ledger import InsufficientCredits
from app.domain.refunds import AlreadyRefunded, CreditsHeld, NotRefundable
from app.services.revenue import revenue_report
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde
from tests.integration.test_alerts_recharge import learn_customer
from tests.integration.test_usage_reporting import PERIOD_END, drain, kinde, make  # noqa: F401

PACK = "credit_pack_starter"


@pytest.fixture
def c(db_url: str, kinde: FakeKinde, tmp_path: Path,  # noqa: F811
      clock: FakeClock) -> Iterator[Container]:
    container = make(db_url, kinde, tmp_path, clock)
    yield container
    container.close()


def buy(c: Container, wallet: str = "kp_alice") -> int:
    return int(c.ledger.top_up_bundle(wallet, "starter").body["entry"]["id"])


def test_unused_pack_still_in_the_outbox_is_taken_off_kinde_count(
        c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    buy(c)
    drain(c, clock)  # Kinde has 1 pack (and we know its open period)
    second = buy(c)  # its report is still in the outbox
    out = c.ledger.refund("kp_alice", second, "bought by mistake").body
    assert (out["refunded_credits"], out["refunded_amount"], out["currency"], out["invoice"]) \
        == (5000, "49.00", "USD", "reduced")
    assert out["balance"] == 5000 and out["entry"]["kind"] == "void"
    drain(c, clock)
    assert kinde.usage_total("agreement_0", PACK) == 1


def test_unused_pack_already_reported_lowers_the_count_kinde_has(
        c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    first, _ = buy(c), buy(c)
    drain(c, clock)
    assert kinde.usage_total("agreement_0", PACK) == 2
    assert c.ledger.refund("kp_alice", first, "duplicate order").body["invoice"] == "reduced"
    drain(c, clock)
    assert kinde.usage_total("agreement_0", PACK) == 1


def test_dead_lettered_pack_refunded_is_not_invoiced_when_requeued(
        c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    buy(c)
    drain(c, clock)
    second = buy(c)
    kinde.outage(True)
    for _ in range(8):
        c.dispatcher.run_once()
        clock.advance(seconds=120)
    with c.store(False) as uow:
        assert uow.outbox.counts()["dead"] == 1
    kinde.outage(False)
    assert c.ledger.refund("kp_alice", second, "card declined").body["invoice"] == "reduced"
    with c.store(True) as uow:
        uow.outbox.requeue_dead(None, clock())
        uow.commit()
    drain(c, clock)
    assert kinde.usage_total("agreement_0", PACK) == 1


def test_refund_after_the_period_rolled_over_is_a_credit_note_and_keeps_the_count(
        c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    entry = buy(c)
    drain(c, clock)
    clock.now = PERIOD_END + timedelta(hours=1)
    out = c.ledger.refund("kp_alice", entry, "late return").body
    assert (out["invoice"], out["refunded_amount"]) == ("credit_note_due", "49.00")
    with c.store(False) as uow:
        assert uow.recharges.billable("kp_alice", "bundle:starter")[0] == 1
        pending = [m.topic for m in uow.outbox.list("pending", 50)]
    assert not any(topic.startswith("meter:") for topic in pending), pending


def test_partly_used_pack_is_a_pro_rata_credit_note(c: Container, clock: FakeClock) -> None:
    entry = buy(c)
    c.ledger.record_usage("kp_alice", "report_generation", 3)  # 150 credits
    out = c.ledger.refund("kp_alice", entry, "unhappy").body
    # 49.00 - round(49.00 * 150 / 5000) = 49.00 - 1.47
    assert (out["refunded_credits"], out["refunded_amount"], out["invoice"]) == (
        4850, "47.53", "credit_note_due")
    report = revenue_report(
        c.store, clock() - timedelta(days=1), clock() + timedelta(seconds=1))
    usd = report["currencies"]["USD"]
    assert (usd["sales"], usd["refunds"], usd["recognised"], usd["closing_deferred"]) == (
        "49.00", "47.53", "1.47", "0.00")
    assert usd["credits"]["refunded"] == 4850


def test_auto_recharge_purchase_is_refunded_on_its_own_code(
        c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    c.ledger.grant("kp_alice", 600, "trial")
    # Auto-recharge buys only once the wallet knows its Kinde billing customer.
    learn_customer(c, "kp_alice", "customer_0")
    c.ledger.set_auto_recharge("kp_alice", {"enabled": True, "threshold_credits": 500,
                                            "bundle": "starter"})
    c.ledger.record_usage("kp_alice", "report_generation", 3)  # 450 left: recharge
    drain(c, clock)
    assert kinde.usage_total("agreement_0", "credit_pack_starter_auto") == 1
    with c.store.engine.connect() as conn:
        [entry_id] = conn.execute(text(
            "SELECT id FROM entries WHERE kind = 'purchase'")).scalars().all()
    out = c.ledger.refund("kp_alice", int(entry_id), "did not want auto-recharge").body
    assert out["invoice"] == "reduced" and out["refunded_amount"] == "44.10"
    drain(c, clock)
    assert kinde.usage_total("agreement_0", "credit_pack_starter_auto") == 0
    assert kinde.usage_total("agreement_0", PACK) == 0


def test_grants_allotments_and_adjustments_are_not_refunded(c: Container) -> None:
    grant = c.ledger.grant("kp_alice", 100, "welcome").body["entry"]["id"]
    adjustment = c.ledger.adjust("kp_alice", 50, "goodwill").body["entry"]["id"]
    for entry in (grant, adjustment):
        with pytest.raises(NotRefundable, match="only purchases"):
            c.ledger.refund("kp_alice", int(entry), "no")
    assert c.ledger.get_wallet("kp_alice")["balance"] == 150


def test_a_pack_is_refunded_once_even_when_two_refunds_race(c: Container) -> None:
    entry = buy(c)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def refund() -> None:
        barrier.wait()
        try:
            c.ledger.refund("kp_alice", entry, "race")
            results.append("ok")
        except (AlreadyRefunded, NotRefundable) as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=refund) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already_refunded"] * 3 + ["ok"]
    with pytest.raises(AlreadyRefunded):
        c.ledger.refund("kp_alice", entry, "again")
    with c.store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM refunds")).scalar_one() == 1


def test_nothing_is_drawn_from_a_pack_after_its_refund_when_usage_races(c: Container) -> None:
    c.ledger.grant("kp_alice", 2000, "other credits")
    entry = buy(c)
    barrier = threading.Barrier(5)

    def spend() -> None:
        barrier.wait()
        for _ in range(10):
            with contextlib.suppress(InsufficientCredits):
                c.ledger.record_usage("kp_alice", "report_generation", 1)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    barrier.wait()
    out = c.ledger.refund("kp_alice", entry, "race with usage").body
    for t in threads:
        t.join()
    with c.store.engine.connect() as conn:
        block = conn.execute(text("SELECT block_id FROM refunds")).scalar_one()
        void_id = conn.execute(text("SELECT void_entry_id FROM refunds")).scalar_one()
        later = conn.execute(text(
            "SELECT COUNT(*) FROM block_draws WHERE block_id = :b AND entry_id > :v"),
            {"b": block, "v": void_id}).scalar_one()
        remaining = conn.execute(text("SELECT remaining FROM blocks WHERE id = :b"),
                                 {"b": block}).scalar_one()
    assert later == 0 and remaining == 0
    assert out["refunded_credits"] + c.ledger.get_wallet("kp_alice")["balance"] == 7000 - 2000


def test_refund_is_refused_while_open_holds_need_the_pack(c: Container) -> None:
    entry = buy(c)
    hold = c.ledger.place_hold("kp_alice", credits=200).body
    with pytest.raises(CreditsHeld):
        c.ledger.refund("kp_alice", entry, "held")
    c.ledger.release_hold(hold["hold_id"])
    assert c.ledger.refund("kp_alice", entry, "held").body["refunded_credits"] == 5000


def test_wallet_in_arrears_refunds_only_what_the_pack_kept(c: Container) -> None:
    _unrefusable(c, "kp_alice", 1200)  # arrears 1,200
    entry = buy(c)  # pays the arrears first: 3,800 left of the pack
    out = c.ledger.refund("kp_alice", entry, "arrears").body
    assert (out["refunded_credits"], out["refunded_amount"], out["invoice"]) == (
        3800, "37.24", "credit_note_due")
    assert out["balance"] == 0
    _unrefusable(c, "kp_bob", 6000)
    spent = buy(c, "kp_bob")  # all of it pays arrears
    with pytest.raises(NotRefundable, match="nothing"):
        c.ledger.refund("kp_bob", spent, "nothing left")


def test_revenue_counts_refunds_and_its_identity_holds(c: Container, clock: FakeClock) -> None:
    start = clock() - timedelta(seconds=1)
    entry = buy(c)
    c.ledger.refund("kp_alice", entry, "mistake")
    usd = revenue_report(c.store, start, clock() + timedelta(seconds=1))["currencies"]["USD"]
    m = {k: Decimal(usd[k]) for k in ("opening_deferred", "sales", "refunds", "recognised",
                                      "breakage", "closing_deferred")}
    assert (m["sales"], m["refunds"], m["recognised"]) == (Decimal("49.00"),) * 2 + (
        Decimal("0.00"),)
    assert m["opening_deferred"] + m["sales"] - m["refunds"] - m["recognised"] - (
        m["breakage"]) == m["closing_deferred"]


def _unrefusable(c: Container, wallet: str, credits: int) -> None:
    with c.store(True) as uow:
        now = c.clock()
        c.ledger.writer.write(
            uow, wallet, now,
            lambda w: w.debit(credits, reason="kinde:test", description=f"-{credits}",
                              now=now, refusable=False),
            create=True)
        uow.commit()
