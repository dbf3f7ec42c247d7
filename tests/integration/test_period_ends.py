"""Money at period ends: each state at a boundary is computed as of the boundary's time, on both
databases, in local mode (the calendar is the source) and against the fake Kinde over HTTP.

Plans (tests.integration.plan_fixtures): basic = expire 1,000 a period; team = full rollover,
cap 500; pro = rollover (60 days), cap 1,500; max = full, cap 2,500. One test per defect the
period review reproduced (numbers as in the issue "Money at period ends").
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from app.services.ledger import verify_ledger
from app.services.revenue import revenue_report
from tests.fakes.fake_kinde import FakeKinde
from tests.integration.plan_fixtures import (  # noqa: F401
    PlanWorld,
    day,
    kinde,
    kinde_world,
    world,
)

HOUR = timedelta(hours=1)


def allotments(w: PlanWorld, wallet: str) -> list[tuple[int, str]]:
    return [(e["amount"], e["created_at"][:10]) for e in w.entries(wallet)
            if e["kind"] == "allotment"]


def blocks(w: PlanWorld, wallet: str) -> list[tuple[Any, ...]]:
    with w.container.store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT kind, original, remaining, expires_at FROM blocks WHERE wallet_id = :w "
            "ORDER BY created_at, original"), {"w": wallet})
        return [tuple(r) for r in rows]


def notices(w: PlanWorld) -> list[str]:
    with w.container.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT payload FROM outbox WHERE kind LIKE 'notify%' "
                                 "ORDER BY id"))
        return [r[0] for r in rows]


def hold(w: PlanWorld, wallet: str, credits: int, seconds: int) -> str:
    outcome = w.container.ledger.place_hold(wallet, credits=credits,
                                            expires_in_seconds=seconds)
    assert outcome.status == 201, outcome.body
    return str(outcome.body["hold_id"])


# 1 ----------------------------------------------------------------------------------------

def test_a_hold_that_expired_before_the_end_no_longer_shields_credits_from_the_cap(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    for wallet in ("org_worker", "org_write"):
        w.clock.now = day(0) + HOUR
        w.event("customer.agreement_created", wallet, plan="team", start=day(0), end=day(30))
        w.clock.now = day(29)
        hold(w, wallet, 600, 3600)  # expires on day 29 + 1 h, before the period end
    w.clock.now = day(31)
    w.worker()
    # At the end nothing was held: 1,000 unused, the cap keeps 500, then +1,000.
    assert w.balance("org_worker") == 1500
    # The same through the next write instead of the worker.
    w.use("org_write", 1)
    assert w.balance("org_write") == 1499
    assert verify_ledger(w.container.store) == {}


def test_a_hold_open_at_the_end_still_shields_what_it_reserves(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_h", plan="team", start=day(0), end=day(30))
    w.clock.now = day(29)
    hold_id = hold(w, "org_h", 600, 3 * 86400)  # open across the end
    w.clock.now = day(31)
    w.worker()
    # Available at the end was 400 (1,000 - 600 held): the cap takes at most that.
    assert w.balance("org_h") == 1000 - 400 + 1000
    assert w.container.ledger.capture_hold(hold_id, credits=600).status == 200


# 2 ----------------------------------------------------------------------------------------

def test_an_old_agreements_end_never_cuts_the_new_agreements_allotment(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_new", plan="basic", agreement="agr_a",
            start=day(0), end=day(30))
    w.clock.now = day(10)
    w.use("org_new", 100)
    w.event("customer.agreement_created", "org_new", plan="team", agreement="agr_b",
            start=day(10), end=day(40))
    assert w.balance("org_new") == 1900
    w.clock.now = day(31)
    w.worker()
    # Basic's 900 expire at its end; team's 1,000 is not capped by basic's end.
    assert w.balance("org_new") == 1000
    w.clock.now = day(41)
    w.worker()
    # Team's own end: its cap (500) on its own allotment, then its next period.
    assert w.balance("org_new") == 1500
    assert verify_ledger(w.container.store) == {}


def test_a_plan_change_on_the_same_agreement_keeps_the_new_plans_allotment_whole(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_chg", plan="basic", start=day(0), end=day(30))
    w.clock.now = day(10)
    w.use("org_chg", 100)
    w.event("customer.plan_changed", "org_chg", plan="team", start=day(10), end=day(40))
    w.clock.now = day(31)
    w.worker()
    assert w.balance("org_chg") == 1000
    assert len(allotments(w, "org_chg")) == 2  # nothing follows basic's period


# 3 ----------------------------------------------------------------------------------------

def _kinde_basic(kinde: FakeKinde, wallet: str) -> None:  # noqa: F811
    kinde.add_customer(f"customer_{wallet}", org_code=wallet)
    kinde.add_agreement(f"customer_{wallet}", f"agr_{wallet}", "basic", ["api_calls"],
                        day(0), day(30))


def test_a_late_renewal_costs_the_customer_nothing(
    kinde_world: PlanWorld, kinde: FakeKinde,  # noqa: F811
) -> None:
    w = kinde_world
    for wallet in ("org_late", "org_ontime"):
        w.clock.now = day(0) + HOUR
        _kinde_basic(kinde, wallet)
        w.event("customer.agreement_created", wallet, plan="basic", start=day(0), end=day(30))
        w.clock.now = day(20)
        w.use(wallet, 900)
    # On time: Kinde lists the renewal before the end.
    kinde.roll_period("agr_org_ontime", day(30), day(60))
    # Late: Kinde's list still shows the old period for hours.
    kinde.roll_period("agr_org_late", day(30), day(60), listed=False)
    w.clock.now = day(30) + timedelta(minutes=1)
    w.worker()
    # Usage during the wait is never refused, and nothing fired for a balance that only
    # passed through zero inside the renewal.
    for _ in range(3):
        w.use("org_late", 200)
        w.use("org_ontime", 200)
        w.clock.advance(minutes=20)
        w.worker()
    assert w.balance("org_late") == w.balance("org_ontime") == 400
    assert not any("credits.depleted" in n for n in notices(w))
    kinde.list_new_period("agr_org_late")
    w.clock.advance(hours=2)
    w.worker()
    rows = w.allotment_rows("org_late")
    assert [(r.period_start, r.status) for r in rows] == [(day(0), "granted"),
                                                         (day(30), "granted")]

    def shape(wallet: str) -> list[tuple[Any, ...]]:
        return [(b[0], b[1], b[2], str(b[3])[:19]) for b in blocks(w, wallet)]

    assert shape("org_late") == shape("org_ontime")
    assert allotments(w, "org_late") == allotments(w, "org_ontime")
    assert verify_ledger(w.container.store) == {}


def test_a_renewal_kinde_never_made_is_taken_back(
    kinde_world: PlanWorld, kinde: FakeKinde,  # noqa: F811
) -> None:
    w = kinde_world
    _kinde_basic(kinde, "org_gone")
    w.event("customer.agreement_created", "org_gone", plan="basic", start=day(0),
            end=day(30))
    kinde.outage(True)
    w.clock.now = day(30) + timedelta(minutes=1)
    w.worker()
    assert w.balance("org_gone") == 1000  # provisional
    w.use("org_gone", 100)
    kinde.outage(False)
    kinde.add_agreement("customer_org_gone", "agr_org_gone", "basic", ["api_calls"],
                        day(0), day(30), expires_on=day(30))
    w.clock.advance(hours=1)
    w.worker()
    # The unused 900 go back as a void; the 100 used during the wait stay used.
    entries = w.entries("org_gone")
    assert (entries[-1]["kind"], entries[-1]["amount"]) == ("void", -900)
    assert w.balance("org_gone") == 0
    assert w.allotment_rows("org_gone")[-1].status == "withdrawn"
    w.clock.now = day(61)
    w.worker()
    assert len(allotments(w, "org_gone")) == 2  # nothing more follows
    assert verify_ledger(w.container.store) == {}


# 4 ----------------------------------------------------------------------------------------

def test_an_extended_period_moves_its_end_and_renewals_go_on(
    kinde_world: PlanWorld, kinde: FakeKinde,  # noqa: F811
) -> None:
    w = kinde_world
    _kinde_basic(kinde, "org_ext")
    w.event("customer.agreement_created", "org_ext", plan="basic", start=day(0), end=day(30))
    kinde.roll_period("agr_org_ext", day(0), day(45))  # Kinde extends the period
    w.clock.now = day(30) + timedelta(minutes=1)
    w.worker()
    assert w.balance("org_ext") == 1000  # the allotment now expires on day 45
    assert [r.period_end for r in w.allotment_rows("org_ext")] == [day(45)]
    kinde.roll_period("agr_org_ext", day(45), day(75))
    w.clock.now = day(45) + timedelta(minutes=1)
    w.worker()
    assert allotments(w, "org_ext") == [(1000, "2026-01-01"), (1000, "2026-02-15")]
    assert w.balance("org_ext") == 1000


def test_an_event_extending_the_period_moves_its_end(world: PlanWorld) -> None:  # noqa: F811
    w = world
    w.event("customer.agreement_created", "org_ev", plan="basic", start=day(0), end=day(30))
    w.clock.now = day(20)
    w.event("customer.plan_assigned", "org_ev", plan="basic", start=day(0), end=day(45))
    w.clock.now = day(31)
    w.worker()
    assert w.balance("org_ev") == 1000 and len(allotments(w, "org_ev")) == 1
    w.clock.now = day(46)
    w.worker()
    assert [a[1] for a in allotments(w, "org_ev")] == ["2026-01-01", "2026-02-15"]


# 5 ----------------------------------------------------------------------------------------

def test_a_period_start_a_second_off_is_the_same_period(world: PlanWorld) -> None:  # noqa: F811
    w = world
    w.event("customer.agreement_created", "org_sec", plan="max", start=day(0), end=day(30))
    w.clock.now = day(30) + HOUR
    w.worker()
    assert w.balance("org_sec") == 2000
    assert w.event("customer.plan_assigned", "org_sec", plan="max",
                   start=day(30) + timedelta(seconds=1), end=day(60)) == "processed"
    assert w.balance("org_sec") == 2000
    assert len(w.allotment_rows("org_sec")) == 2


# 6 ----------------------------------------------------------------------------------------

def test_catch_up_rebuilds_missed_months_on_the_agreements_calendar(
    world: PlanWorld,  # noqa: F811
) -> None:
    from datetime import UTC, datetime

    w = world
    feb, mar = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    w.clock.now = feb + HOUR
    w.event("customer.agreement_created", "org_cal", plan="basic", start=feb, end=mar)
    w.clock.now = datetime(2026, 9, 15, tzinfo=UTC)  # down from February to September
    w.worker()
    starts = [r.period_start for r in w.allotment_rows("org_cal")]
    assert [s.month for s in starts] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all(s.day == 1 for s in starts)
    assert w.balance("org_cal") == 1000


# 7 ----------------------------------------------------------------------------------------

def test_a_routine_renewal_of_an_expire_plan_sends_no_used_up_alert(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_rt", plan="basic", start=day(0), end=day(30))
    w.clock.now = day(10)
    w.use("org_rt", 100)
    w.clock.now = day(30) + HOUR
    w.worker()
    w.clock.now = day(60) + HOUR
    w.use("org_rt", 1)  # through the write path this time
    assert w.balance("org_rt") == 999
    assert not any("credits.depleted" in n for n in notices(w))


# 8 ----------------------------------------------------------------------------------------

def test_credits_kept_for_a_hold_expire_when_the_hold_expired(
    world: PlanWorld,  # noqa: F811
) -> None:
    from datetime import UTC, datetime

    w = world
    c = w.container
    w.clock.now = datetime(2026, 1, 25, 12, tzinfo=UTC)
    c.ledger.top_up_bundle("org_hk", "odd")  # 3 credits, 1.00 EUR, expire Jan 30 12:00
    w.clock.now = datetime(2026, 1, 30, 11, tzinfo=UTC)
    hold(w, "org_hk", 3, 7 * 3600)  # until Jan 30 18:00
    w.clock.now = datetime(2026, 2, 2, tzinfo=UTC)  # the service was down until Feb 2
    c.ledger.sweep_due()
    january = revenue_report(c.store, datetime(2026, 1, 1, tzinfo=UTC),
                             datetime(2026, 2, 1, tzinfo=UTC))["currencies"]["EUR"]
    assert (january["breakage"], january["closing_deferred"]) == ("1.00", "0.00")
    expiry = [e for e in w.entries("org_hk") if e["kind"] == "expiry"]
    assert [e["created_at"] for e in expiry] == ["2026-01-30T18:00:00Z"]
    assert Decimal(january["sales"]) == Decimal("1.00")


# 10 ---------------------------------------------------------------------------------------

def test_implausible_periods_are_parked_and_grant_nothing(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    assert w.event("customer.agreement_created", "org_5s", plan="basic",
                   start=day(0), end=day(0) + timedelta(seconds=5)) == "parked"
    assert w.event("customer.agreement_created", "org_back", plan="basic",
                   start=day(1), end=day(0)) == "parked"
    assert w.event("customer.agreement_created", "org_long", plan="basic",
                   start=day(0), end=day(500)) == "parked"
    for _ in range(3):
        w.clock.advance(hours=1)
        w.worker()
    for wallet in ("org_5s", "org_back", "org_long"):
        assert w.allotment_rows(wallet) == []


# Known limits the issue asked to decide --------------------------------------------------

def test_a_cancelled_agreements_last_period_still_ends_with_its_cap(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_bye2", plan="team", start=day(0), end=day(30))
    w.clock.now = day(10)
    assert w.event("customer.agreement_cancelled", "org_bye2") == "processed"
    w.clock.now = day(31)
    w.worker()
    assert w.balance("org_bye2") == 500  # the cap applied at the end; nothing followed
    assert all(r.closed_at is not None for r in w.allotment_rows("org_bye2"))
    w.clock.now = day(70)
    w.worker()
    assert len(allotments(w, "org_bye2")) == 1


def test_a_late_event_of_a_replaced_agreement_does_not_map_the_wallet_back(
    world: PlanWorld,  # noqa: F811
) -> None:
    w = world
    w.event("customer.agreement_created", "org_back2", plan="basic", agreement="agr_a",
            start=day(0), end=day(30))
    w.clock.now = day(10)
    w.event("customer.agreement_created", "org_back2", plan="team", agreement="agr_b",
            start=day(10), end=day(40))
    w.clock.now = day(11)
    assert w.event("customer.agreement_created", "org_back2", plan="basic",
                   agreement="agr_a", start=day(0), end=day(30)) == "processed"
    with w.container.store(False) as uow:
        profile = uow.wallets.profile("org_back2")
    assert profile is not None and (profile.agreement_id, profile.plan_code) == (
        "agr_b", "team")
    w.clock.now = day(41)
    w.worker()
    assert [a[1] for a in allotments(w, "org_back2")] == ["2026-01-01", "2026-01-11",
                                                          "2026-02-10"]
