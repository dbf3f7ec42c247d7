"""Auto-recharge never stalls after a wallet runs dry while its last purchase is still being
invoiced (issue 23), on both databases, with real Kinde calls to a fake Kinde.

The reproduction: grant 3,100; auto-recharge at 3,000 with the starter pack (5,000 credits);
Kinde down, so the pack invoice stays in the outbox; 150-credit usages buy one pack and then
drain the wallet to 0 while that purchase is pending (one in flight refuses a second); Kinde
comes back and the purchase becomes `invoiced`. Before the fix every usage then answered 402
`insufficient_credits` for good. Now the purchase that waited is made once nothing is in
flight: by the worker right after the outbox settles the pending one, or by the next attempt to
spend (a refused usage below the threshold buys, and succeeds if the pack covers it). Exactly
once under racing requests, never while suspended, never past `max_per_day`.
"""

# The fixtures come from the auto-recharge tests; test parameters name them (F811).
# ruff: noqa: F811

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from app.bootstrap import Container
from app.domain.ledger import InsufficientCredits
from app.services.ledger import verify_ledger
from app.worker import default_steps, run_worker
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde
from tests.integration.test_alerts_recharge import (  # noqa: F401 - fixtures
    billed,
    kinde,
    recharges,
)

WALLET = "kp_rich"
# The worker's outbox and auto-recharge steps (its plan step would grant the fake agreement's
# plan credits, which is not what these tests are about).
STEPS = [step for step in default_steps() if step[0] in ("outbox", "auto_recharge")]
METER_USAGE = "/api/v1/billing/meter_usage"


def _drain_while_the_invoice_is_pending(c: Container, kinde: FakeKinde,
                                        clock: FakeClock) -> None:
    c.ledger.grant(WALLET, 3100, "welcome")
    c.ledger.set_auto_recharge(
        WALLET, {"enabled": True, "threshold_credits": 3000, "bundle": "starter"})
    kinde.fail_next(20, status=503, path_prefix=METER_USAGE)  # Kinde down
    spent = 0
    while True:
        try:
            c.ledger.record_usage(WALLET, "report_generation", 3)  # 150 credits
        except InsufficientCredits:
            break
        spent += 150
        if spent == 150:
            c.dispatcher.run_once()  # the invoice's first delivery fails: stays pending
    assert spent == 3100 + 5000  # the grant and one pack, in 150s, down to 0
    assert c.ledger.get_wallet(WALLET)["balance"] == 0
    assert recharges(c) == [("starter", "pending")]


def _kinde_up(kinde: FakeKinde) -> None:
    with kinde._lock:  # noqa: SLF001 - end the injected failures
        kinde._faults.clear()  # type: ignore[attr-defined]


def _kinde_comes_back(c: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    _kinde_up(kinde)
    for _ in range(3):
        clock.advance(minutes=5)
        c.dispatcher.run_once()
    assert recharges(c)[0] == ("starter", "invoiced")


def test_refused_usage_after_the_purchase_settles_buys_and_succeeds(
        billed: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    _kinde_comes_back(billed, kinde, clock)
    answer = billed.ledger.record_usage(WALLET, "report_generation", 3)
    assert answer.body["balance"] == 5000 - 150
    assert recharges(billed) == [("starter", "invoiced"), ("starter", "pending")]
    assert verify_ledger(billed.store) == {}


def test_the_worker_buys_the_purchase_that_waited_once_the_pending_one_settles(
        billed: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    _kinde_up(kinde)
    clock.advance(minutes=5)
    # One worker pass: the outbox invoices the pending purchase, then the one that waited is
    # bought, with no request needed.
    run_worker(billed, once=True, steps=STEPS)
    assert recharges(billed) == [("starter", "invoiced"), ("starter", "pending")]
    assert billed.ledger.get_wallet(WALLET)["balance"] == 5000
    run_worker(billed, once=True, steps=STEPS)
    assert len(recharges(billed)) == 2  # once: not again on the next pass
    billed.ledger.record_usage(WALLET, "report_generation", 3)
    assert len(recharges(billed)) == 2  # one in flight again
    assert verify_ledger(billed.store) == {}


def _race(billed: Container, n: int, extra: Callable[[], object] | None = None) -> list[int]:
    barrier = threading.Barrier(n + (1 if extra else 0))
    done: list[int] = []
    errors: list[BaseException] = []

    def use() -> None:
        barrier.wait()
        try:
            billed.ledger.record_usage(WALLET, "report_generation", 3)
            done.append(1)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def other() -> None:
        barrier.wait()
        try:
            assert extra is not None
            extra()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(n)]
    if extra:
        threads.append(threading.Thread(target=other))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    return done


def test_racing_refused_usages_buy_exactly_once(billed: Container, kinde: FakeKinde,
                                                clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    _kinde_comes_back(billed, kinde, clock)
    done = _race(billed, 12)
    assert len(done) == 12  # the one pack covers all of them
    assert recharges(billed) == [("starter", "invoiced"), ("starter", "pending")]
    assert billed.ledger.get_wallet(WALLET)["balance"] == 5000 - 12 * 150
    assert verify_ledger(billed.store) == {}


def test_racing_usages_and_the_worker_buy_exactly_once(billed: Container, kinde: FakeKinde,
                                                       clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    _kinde_comes_back(billed, kinde, clock)
    done = _race(billed, 8, lambda: billed.deferred_recharges.run_due())
    assert len(done) == 8
    assert recharges(billed) == [("starter", "invoiced"), ("starter", "pending")]
    assert billed.ledger.get_wallet(WALLET)["balance"] == 5000 - 8 * 150
    assert verify_ledger(billed.store) == {}


def test_no_purchase_while_suspended(billed: Container, kinde: FakeKinde,
                                     clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    assert billed.ledger.suspend_auto_recharge(WALLET, "Kinde reported a failed payment")
    _kinde_comes_back(billed, kinde, clock)
    run_worker(billed, once=True, steps=STEPS)
    with pytest.raises(InsufficientCredits):
        billed.ledger.record_usage(WALLET, "report_generation", 3)
    assert recharges(billed) == [("starter", "invoiced")]


def test_no_purchase_past_the_daily_cap(billed: Container, kinde: FakeKinde,
                                        clock: FakeClock) -> None:
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    today = clock().date().isoformat()
    with billed.store(True) as uow:  # two more bought today: the cap (3) is reached
        for n in range(2):
            uow.recharges.add(f"earlier-{n}", WALLET, "starter", 5000, "44.10", "USD", today,
                              clock() - timedelta(hours=1))
            uow.recharges.mark_invoiced([f"earlier-{n}"], clock())
        uow.commit()
    _kinde_comes_back(billed, kinde, clock)
    run_worker(billed, once=True, steps=STEPS)
    with pytest.raises(InsufficientCredits):
        billed.ledger.record_usage(WALLET, "report_generation", 3)
    assert len(recharges(billed)) == 3
    clock.advance(days=1)  # a new UTC day: the next attempt to spend buys
    assert billed.ledger.record_usage(WALLET, "report_generation", 3).body["balance"] == 4850
    assert len(recharges(billed)) == 4


def test_a_refusal_the_pack_would_not_cover_buys_nothing(
        billed: Container, kinde: FakeKinde, clock: FakeClock) -> None:
    """Decided: a refused usage buys only when the pack then lets it through; otherwise the
    402 stands and the purchase is rolled back with it (no charge for a request that fails)."""
    _drain_while_the_invoice_is_pending(billed, kinde, clock)
    _kinde_comes_back(billed, kinde, clock)
    with pytest.raises(InsufficientCredits):
        billed.ledger.record_usage(WALLET, "report_generation", 101)  # 5,050 > the pack
    assert recharges(billed) == [("starter", "invoiced")]
    assert billed.ledger.get_wallet(WALLET)["balance"] == 0
    assert billed.ledger.record_usage(WALLET, "report_generation", 100).body["balance"] == 0
    assert recharges(billed) == [("starter", "invoiced"), ("starter", "pending")]
    assert verify_ledger(billed.store) == {}
