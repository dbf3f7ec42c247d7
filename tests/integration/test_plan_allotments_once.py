"""Exactly one allotment per (agreement, period start, plan), whatever the order, repetition or
concurrency of `customer.agreement_created`, `customer.plan_assigned` and
`customer.plan_changed`, on both databases; and the worker's renewal against the fake Kinde
over real HTTP, including Kinde down at the period end."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

from app.services.ledger import verify_ledger
from tests.fakes.fake_kinde import FakeKinde
from tests.integration.plan_fixtures import (  # noqa: F401
    PlanWorld,
    day,
    kinde,
    kinde_world,
    world,
)

TYPES = ("customer.agreement_created", "customer.plan_assigned", "customer.plan_changed")


def allotments(w: PlanWorld, wallet: str) -> list[int]:
    return [e["amount"] for e in w.entries(wallet) if e["kind"] == "allotment"]


def test_every_order_and_repetition_grants_once(world: PlanWorld) -> None:  # noqa: F811
    w = world
    for n, order in enumerate(itertools.permutations(TYPES)):
        wallet = f"org_order{n}"
        for event_type in order + order:  # each type twice, with fresh event ids
            assert w.event(event_type, wallet, plan="basic", start=day(0), end=day(30)) == (
                "processed")
        # A redelivery of one event (same event_id) is a duplicate.
        assert w.event(order[0], wallet, plan="basic", start=day(0), end=day(30),
                       event_id=f"event_fixed_{n}") == "processed"
        assert w.event(order[0], wallet, plan="basic", start=day(0), end=day(30),
                       event_id=f"event_fixed_{n}") == "duplicate"
        # An event without the period finds it in the agreements cache: still once.
        assert w.event(order[1], wallet, plan="basic") == "processed"
        assert allotments(w, wallet) == [1000], (order, allotments(w, wallet))
        assert w.balance(wallet) == 1000
        assert len(w.allotment_rows(wallet)) == 1
    assert verify_ledger(w.container.store) == {}


def test_concurrent_deliveries_grant_once(world: PlanWorld) -> None:  # noqa: F811
    w = world
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def deliver(i: int) -> None:
        try:
            start.wait()
            w.event(TYPES[i % 3], "org_race", plan="pro", start=day(0), end=day(30))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert allotments(w, "org_race") == [1000]
    assert w.balance("org_race") == 1000


def test_late_event_for_an_earlier_period_grants_nothing(world: PlanWorld) -> None:  # noqa: F811
    w = world
    w.clock.now = day(31)
    w.event("customer.plan_assigned", "org_late", plan="basic", start=day(30), end=day(60))
    w.event("customer.agreement_created", "org_late", plan="basic", start=day(0),
            end=day(30))
    assert allotments(w, "org_late") == [1000]
    assert [r.period_start for r in w.allotment_rows("org_late")] == [day(30)]


def test_plan_change_keeps_what_was_granted(world: PlanWorld) -> None:  # noqa: F811
    w = world
    w.event("customer.agreement_created", "org_up", plan="basic", start=day(0), end=day(30))
    w.clock.now = day(10)
    w.use("org_up", 100)
    # Kinde changes a plan by creating a new agreement (and cancelling the old one).
    for _ in range(2):
        w.event("customer.agreement_created", "org_up", plan="max", agreement="agr_new",
                start=day(10), end=day(40))
    assert w.balance("org_up") == 900 + 1000
    # The old agreement's period ends on day 30: its allotment expires, nothing renews it.
    w.clock.now = day(30) + timedelta(hours=1)
    w.worker()
    assert w.balance("org_up") == 1000
    # The new agreement renews on day 40 (full rollover, cap 2,500: nothing expires).
    w.clock.now = day(40) + timedelta(hours=1)
    w.worker()
    assert w.balance("org_up") == 2000
    assert [(r.agreement_id, r.plan_code) for r in w.allotment_rows("org_up")] == [
        ("agr_org_up", "basic"), ("agr_new", "max"), ("agr_new", "max")]


def test_cancelled_agreement_is_not_renewed(world: PlanWorld) -> None:  # noqa: F811
    w = world
    w.event("customer.agreement_created", "org_bye", plan="basic", start=day(0), end=day(30))
    w.clock.now = day(3)
    assert w.event("customer.agreement_cancelled", "org_bye") == "processed"
    w.clock.now = day(31)
    w.worker()
    assert w.balance("org_bye") == 0  # the allotment expired at period end; no new one
    assert allotments(w, "org_bye") == [1000]
    assert all(r.closed_at is not None for r in w.allotment_rows("org_bye"))


# -- the worker against the fake Kinde, over real HTTP ----------------------------------------


def test_worker_renews_from_kinde_and_waits_while_kinde_is_down(  # noqa: F811
    kinde_world: PlanWorld, kinde: FakeKinde,  # noqa: F811
) -> None:
    w = kinde_world
    # The event carries no period: the worker reads it from Kinde's agreements API.
    assert w.event("customer.agreement_created", "org_k", plan="team",
                   customer="customer_org_k") == "processed"
    assert w.balance("org_k") == 0
    w.worker()
    assert allotments(w, "org_k") == [1000]
    w.clock.now = day(5)
    w.use("org_k", 300)

    # The period ends while Kinde is down: the end is applied (cap 500: 200 of the 700 unused
    # expire, dated at the period end) and, in the same transaction, the next period on the
    # agreement's calendar is granted provisionally: the wait costs the customer nothing.
    kinde.outage(True)
    w.clock.now = day(30) + timedelta(minutes=1)
    w.worker()
    assert w.balance("org_k") == 1500
    for _ in range(3):
        w.clock.advance(minutes=20)  # past any back-off
        w.worker()
    assert allotments(w, "org_k") == [1000, 1000]
    assert [r.status for r in w.allotment_rows("org_k")] == ["granted", "provisional"]

    # Kinde answers again but still reports the old period (renewals may lag): still waiting.
    kinde.outage(False)
    w.clock.advance(minutes=20)
    w.worker()
    assert [r.status for r in w.allotment_rows("org_k")] == ["granted", "provisional"]

    # Kinde renews: the provisional period is confirmed; nothing is granted twice and the
    # ledger reads as an on-time renewal, dated at the period end.
    kinde.roll_period("agr_org_k", day(30), day(60))
    w.clock.advance(minutes=20)
    w.worker()
    w.worker()
    assert w.balance("org_k") == 1500
    entries = w.entries("org_k")
    assert [(e["kind"], e["amount"]) for e in entries[-2:]] == [("expiry", -200),
                                                               ("allotment", 1000)]
    assert {e["created_at"] for e in entries[-2:]} == {"2026-01-31T00:00:00Z"}
    assert [(r.period_start, r.status) for r in w.allotment_rows("org_k")] == [
        (day(0), "granted"), (day(30), "granted")]
    assert verify_ledger(w.container.store) == {}
