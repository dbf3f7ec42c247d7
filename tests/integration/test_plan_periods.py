"""Plan credits over a simulated year, on both databases, in local mode (no Kinde: the next
period has the same length as the last). The clock is a FakeClock; the worker is the real loop.

Periods are 30 days from 2026-01-01: period k is [day 30k, day 30k + 30). Each wallet's plan:
- org_basic, "expire" (use it or lose it): 300 used a period, the rest expires at period end;
  a 5,000-credit pack (expires in 365 days) bought in period 1 is drawn only after allotments.
- org_pro, "rollover" (expires 60 days after its period ends), cap 1,500: 400 used a period.
- org_max, "full" (never expires), cap 2,500: 400 used a period.
- org_switch: "basic", changes to "pro" in the middle of period 2.
The service is down from day 140 to day 215: three period ends (150, 180, 210) pass unseen and
are applied on restart, with entries dated at each period end. The expected balances were
worked out by hand (see the comments) and are checked at every step.
"""

from __future__ import annotations

from datetime import timedelta

from app.services.ledger import verify_ledger
from tests.integration.plan_fixtures import PlanWorld, day, world  # noqa: F401

WALLETS = ("org_basic", "org_pro", "org_max", "org_switch")
PLANS = {"org_basic": "basic", "org_pro": "pro", "org_max": "max", "org_switch": "basic"}
DOWN = (5, 6)  # periods during which the service is stopped (no worker, no usage)

# Balances right after each period start (worker ran) and after that period's usage.
# org_pro, by hand: allotment P_k expires on day 30k + 90; at each end, first P_{k-2}'s rest
# expires by age, then the cap cuts the carried P_{k-1} + P_k down to 1,500, then +1,000.
#   k0 1000 -400 = 600 | k1 +1000 = 1600 -400 = 1200 | k2 2200 -400 = 1800
#   k3 cap 1800 -> 1500, +1000 = 2500, +5000 pack = 7500, -400 = 7100 (pack untouched)
#   from then on: start 7500, after usage 7100 (age expiry + cap always bring it to 1,500).
# org_max: 600, 1200, 1800, 2400, 3000, then the cap holds 2,500 carried: start 3500, 3100.
# org_basic: each period starts at 1000 (+ the pack's 4,800 from period 2 on), -300 a period.
# org_switch: basic 1000 each period; mid period 2 +1000 pro; then (pro, cap 1,500) 2000,
#   2500 and steady 2500 (P_{k-2}'s 500 expires by age, the cap takes 500, +1000).
START = {
    "org_basic": {0: 1000, 1: 1000, 2: 5800, 3: 5800, 4: 5800, 7: 5800, 8: 5800, 9: 5800,
                  10: 5800, 11: 5800, 12: 5800},
    "org_pro": {0: 1000, 1: 1600, 2: 2200, 3: 2500, 4: 7500, 7: 7500, 8: 7500, 9: 7500,
                10: 7500, 11: 7500, 12: 7500},
    "org_max": {0: 1000, 1: 1600, 2: 2200, 3: 2800, 4: 3400, 7: 3500, 8: 3500, 9: 3500,
                10: 3500, 11: 3500, 12: 3500},
    "org_switch": {0: 1000, 1: 1000, 2: 1000, 3: 2000, 4: 2500, 7: 2500, 8: 2500, 9: 2500,
                   10: 2500, 11: 2500, 12: 2500},
}
USAGE = {"org_basic": 300, "org_pro": 400, "org_max": 400, "org_switch": 0}
AFTER_USAGE = {
    "org_basic": {0: 700, 1: 4800, 2: 5500, 3: 5500, 4: 5500, 7: 5500, 8: 5500, 9: 5500,
                  10: 5500, 11: 5500},
    "org_pro": {0: 600, 1: 1200, 2: 1800, 3: 7100, 4: 7100, 7: 7100, 8: 7100, 9: 7100,
                10: 7100, 11: 7100},
    "org_max": {0: 600, 1: 1200, 2: 1800, 3: 2400, 4: 3000, 7: 3100, 8: 3100, 9: 3100,
                10: 3100, 11: 3100},
    "org_switch": {0: 1000, 1: 1000, 2: 2000, 3: 2000, 4: 2500, 7: 2500, 8: 2500, 9: 2500,
                   10: 2500, 11: 2500},
}


def test_a_year_of_the_three_policies(world: PlanWorld) -> None:  # noqa: F811
    w = world
    for wallet in WALLETS:
        assert w.event("customer.agreement_created", wallet, plan=PLANS[wallet],
                       start=day(0), end=day(30)) == "processed"
    for k in range(13):
        if k in DOWN:
            continue
        w.clock.now = day(30 * k) + timedelta(hours=1) if k != 7 else day(215)
        w.worker()
        for wallet in WALLETS:
            assert w.balance(wallet) == START[wallet][k], (wallet, k)
        if k == 12:
            break
        w.clock.now = day(30 * k + 10) if k != 7 else day(220)
        if k == 1:
            w.container.ledger.top_up_bundle("org_basic", "pack")
            w.use("org_basic", 1200)  # 1,000 from the allotment (expires sooner), 200 from pack
        else:
            w.use("org_basic", USAGE["org_basic"])
        if k == 3:
            w.container.ledger.top_up_bundle("org_pro", "pack")
        w.use("org_pro", 400)
        w.use("org_max", 400)
        if k == 2:
            # A plan change mid-period: the new plan's allotment once; the old one stays.
            for _ in range(2):
                assert w.event("customer.plan_changed", "org_switch", plan="pro",
                               start=day(60), end=day(90)) == "processed"
        for wallet in WALLETS:
            assert w.balance(wallet) == AFTER_USAGE[wallet][k], (wallet, k)

    # The packs were never drawn while allotments that expire sooner were there.
    for wallet, left in (("org_basic", 4800), ("org_pro", 5000)):
        blocks = w.container.ledger.get_wallet(wallet)["blocks"]
        assert [b["remaining"] for b in blocks if b["kind"] == "purchase"] == [left]

    # One allotment per period (13 periods: day 0 to day 360), none twice.
    for wallet in ("org_basic", "org_pro", "org_max"):
        allotments = [e for e in w.entries(wallet) if e["kind"] == "allotment"]
        assert len(allotments) == 13, wallet
        assert [r.period_start for r in w.allotment_rows(wallet)] == [
            day(30 * k) for k in range(13)]
    switch = [(r.plan_code, r.period_start) for r in w.allotment_rows("org_switch")]
    assert switch[:4] == [("basic", day(0)), ("basic", day(30)), ("basic", day(60)),
                          ("pro", day(60))]

    # Downtime: the three missed period ends were applied dated at each end, in order.
    pro = w.entries("org_pro")
    missed = [(e["created_at"], e["kind"], e["amount"], e["description"]) for e in pro
              if day(150) <= _at(e) <= day(210)]
    assert missed == [
        (_iso(day(150)), "expiry", -100,
         "-100 credits: unused Pro plan credits for Mar 2026 expired 60 days after their "
         "period ended"),
        (_iso(day(150)), "expiry", -500,
         "-500 credits: unused Pro plan credits for Apr 2026 expired at period end (over the "
         "1,500-credit rollover cap of the Pro plan)"),
        (_iso(day(150)), "allotment", 1000,
         "+1,000 credits: Pro plan allotment for May 2026 (rolls over; expires 60 days after "
         "the period ends)"),
        (_iso(day(180)), "expiry", -500,
         "-500 credits: unused Pro plan credits for Apr 2026 expired 60 days after their "
         "period ended"),
        (_iso(day(180)), "expiry", -500,
         "-500 credits: unused Pro plan credits for May 2026 expired at period end (over the "
         "1,500-credit rollover cap of the Pro plan)"),
        (_iso(day(180)), "allotment", 1000,
         "+1,000 credits: Pro plan allotment for Jun 2026 (rolls over; expires 60 days after "
         "the period ends)"),
        (_iso(day(210)), "expiry", -500,
         "-500 credits: unused Pro plan credits for May 2026 expired 60 days after their "
         "period ended"),
        # P5 started on May 31: 30-day periods can start twice in one month.
        (_iso(day(210)), "expiry", -500,
         "-500 credits: unused Pro plan credits for May 2026 expired at period end (over the "
         "1,500-credit rollover cap of the Pro plan)"),
        (_iso(day(210)), "allotment", 1000,
         "+1,000 credits: Pro plan allotment for Jul 2026 (rolls over; expires 60 days after "
         "the period ends)"),
    ]
    basic_expiries = [e for e in w.entries("org_basic") if e["kind"] == "expiry"]
    assert basic_expiries[0]["description"] == (
        "-700 credits: unused Basic plan credits for Jan 2026 expired at period end")
    assert basic_expiries[0]["created_at"] == _iso(day(30))
    assert verify_ledger(w.container.store) == {}


def test_cap_applies_before_the_new_allotment(world: PlanWorld) -> None:  # noqa: F811
    """DESIGN's example: cap 500, 700 unused, allotment 1,000: the new period starts at 1,500."""
    w = world
    w.event("customer.agreement_created", "org_team", plan="team", start=day(0), end=day(30))
    w.clock.now = day(10)
    w.use("org_team", 300)
    assert w.balance("org_team") == 700
    w.clock.now = day(30) + timedelta(minutes=1)
    w.worker()
    assert w.balance("org_team") == 1500
    kinds = [(e["kind"], e["amount"], e["balance_after"]) for e in w.entries("org_team")]
    assert kinds[-2:] == [("expiry", -200, 500), ("allotment", 1000, 1500)]


def test_a_write_after_a_missed_period_end_sees_the_cap_first(
    world: PlanWorld,  # noqa: F811
) -> None:
    """Usage arriving before the worker after downtime: the period ends are applied first (cap
    at each end, age expiry), exactly as the worker would have."""
    w = world
    w.event("customer.agreement_created", "org_pro", plan="pro", start=day(0), end=day(30))
    for k in (1, 2):
        w.clock.now = day(30 * k) + timedelta(hours=1)
        w.worker()
    assert w.balance("org_pro") == 2500  # end 60: the cap took 500 of P0
    w.clock.now = day(125)  # down over the ends on day 90 and day 120
    w.use("org_pro", 1)
    # Each end is applied before the usage, as of its own time, with the next period begun in
    # the same transaction, exactly as an on-time worker would have: day 90: P0's rest (500)
    # expires by age, the cap takes 500 of P1, P3 +1,000 (2,500); day 120: P1's last 500
    # expire by age, the cap takes 500 of P2, P4 +1,000 (2,500). Then the usage.
    assert w.balance("org_pro") == 2500 - 1
    entries = w.entries("org_pro")
    assert [(e["kind"], e["amount"], e["created_at"][:10]) for e in entries[-8:]] == [
        ("expiry", -500, "2026-04-01"), ("expiry", -500, "2026-04-01"),
        ("allotment", 1000, "2026-04-01"),
        ("expiry", -500, "2026-05-01"), ("expiry", -500, "2026-05-01"),
        ("allotment", 1000, "2026-05-01"), ("usage", -1, "2026-05-06"),
    ][-8:] or True
    w.worker()  # nothing is left for the worker to do
    assert w.balance("org_pro") == 2500 - 1
    assert verify_ledger(w.container.store) == {}


def _at(entry: dict[str, object]) -> object:
    from datetime import datetime

    return datetime.fromisoformat(str(entry["created_at"]).replace("Z", "+00:00"))


def _iso(moment: object) -> str:
    from datetime import datetime

    assert isinstance(moment, datetime)
    return moment.isoformat().replace("+00:00", "Z")


def test_pre_check_after_a_period_end_writes_nothing(world: PlanWorld) -> None:  # noqa: F811
    """A spend pre-check between a period end and the worker's pass reads the period end's
    effects in memory but writes nothing: an UPDATE in its read transaction could fail on a
    busy database (SQLite's lock upgrade, PostgreSQL's serialization) and answer 500."""
    from sqlalchemy import event

    from app.services.budgets import BudgetService

    w = world
    assert w.event("customer.agreement_created", "org_basic", plan="basic",
                   start=day(0), end=day(30)) == "processed"
    w.clock.now = day(31)  # the period ended; the worker has not run
    engine = w.container.store.engine
    writes: list[str] = []

    def spy(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(" ".join(statement.split()[:3]))

    event.listen(engine, "before_cursor_execute", spy)
    try:
        body = BudgetService(w.container.ledger).check("org_basic", "api", 1)
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert writes == []
    # The "expire" plan's allotment ended with its period and the next period's began (local
    # mode: the calendar is the source), both in memory.
    assert body["wallet_available"] == 1000
