"""A year of plan periods against a plain model of DESIGN's rules (hypothesis state machine).

Random orders of: usage, holds placed and released, plan changes mid-period, agreement events
repeated (and restated a second off), time passing by hours or by days of downtime with or
without the worker, on one wallet of one agreement in local mode (the calendar is the source;
Kinde's lag is tests.integration.test_period_ends'). After every step the service's balance,
available credits and live blocks must equal the model's, written here from DESIGN "Plans and
periods" and "Ledger rules" alone:

- each period start grants the current plan's allotment once, dated at the start;
- a plan change grants the new plan's allotment for the current period once;
- blocks are drawn soonest-expiring first; usage is refused beyond available (balance - held);
- at a period end, in time order: holds that expired before it are released, blocks due by it
  expire (credits of due blocks up to what open holds reserve are kept until the holds
  settle), then each plan's cap takes the excess of the carried allotments that plan granted
  (bounded by available), then the wallet's plan's next allotment is granted;
- expiry of a block kept for a hold happens when the hold settles; only holds placed before a
  block expired keep its credits.
The revenue roll-forward identity is checked per currency at the end, with a 0-decimal (JPY)
and a 3-decimal (KWD) plan price among the plans.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from app.bootstrap import build_container
from app.domain.catalog import parse_catalog
from app.domain.ledger import InsufficientCredits
from app.services.ledger import verify_ledger
from app.services.revenue import revenue_report
from app.settings import Settings
from tests.conftest import FakeClock
from tests.integration.plan_fixtures import T0

PERIOD = timedelta(days=30)
WALLETS = iter(range(10**6))
CATALOG: dict[str, Any] = {
    "features": {
        "api": {"label": "API Call", "unit": "API call", "credits_per_unit": 1,
                "kinde_feature_code": "api_calls", "source": "app"},
    },
    "plans": {
        "basic": {"credits_per_period": 1000, "rollover": "expire", "price": "1500",
                  "currency": "JPY"},
        "pro": {"credits_per_period": 800, "rollover": "rollover",
                "rollover_expires_after_days": 45, "rollover_max_credits": 1200,
                "price": "2.345", "currency": "KWD"},
        "team": {"credits_per_period": 600, "rollover": "full", "rollover_max_credits": 500,
                 "price": "9.99", "currency": "USD"},
    },
}
POLICY = {code: plan for code, plan in CATALOG["plans"].items()}


@dataclass
class MBlock:
    """The model's credit block."""

    plan: str
    period_end: datetime
    remaining: int
    expires_at: datetime | None
    created_at: datetime
    seq: int

    def order(self) -> tuple[bool, datetime, datetime, int]:
        return (self.expires_at is None, self.expires_at or self.created_at, self.created_at,
                self.seq)


@dataclass
class MHold:
    amount: int
    expires_at: datetime
    placed_at: datetime
    hold_id: str
    open: bool = True


@dataclass
class Model:
    """DESIGN's rules for one wallet on one agreement, in plain Python."""

    plan: str
    now: datetime
    blocks: list[MBlock] = field(default_factory=list)
    holds: list[MHold] = field(default_factory=list)
    granted: set[tuple[datetime, str]] = field(default_factory=set)
    period_start: datetime = T0
    seq: int = 0

    @property
    def balance(self) -> int:
        return sum(b.remaining for b in self.blocks)

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds if h.open)

    @property
    def available(self) -> int:
        return self.balance - self.held

    def grant(self, plan: str, start: datetime, at: datetime) -> None:
        if (start, plan) in self.granted:
            return
        self.granted.add((start, plan))
        p = POLICY[plan]
        end = start + PERIOD
        expires = {"expire": end, "full": None}.get(
            p["rollover"], end + timedelta(days=p.get("rollover_expires_after_days", 0)))
        self.seq += 1
        self.blocks.append(MBlock(plan, end, p["credits_per_period"], expires, at, self.seq))

    def expire_due(self, at: datetime) -> None:
        # Credits past their expiry stay only as far as holds placed before it reserve them.
        kept_so_far = 0
        for b in sorted(self.blocks, key=MBlock.order):
            if b.expires_at is not None and b.expires_at <= at and b.remaining > 0:
                expiry = b.expires_at
                reservable = sum(h.amount for h in self.holds
                                 if h.open and h.placed_at < expiry)
                kept = min(b.remaining, max(min(reservable, self.held) - kept_so_far, 0))
                kept_so_far += kept
                b.remaining = kept
        self.blocks = [b for b in self.blocks if b.remaining > 0]

    def release_expired(self, up_to: datetime) -> None:
        for h in sorted(self.holds, key=lambda h: h.expires_at):
            if h.open and h.expires_at <= up_to:
                h.open = False
                self.expire_due(h.expires_at)

    def end_period(self, end: datetime) -> None:
        self.release_expired(end)
        self.expire_due(end)
        # Each plan's cap on the carried allotments that plan granted (credits follow the
        # policy of the plan that granted them).
        for code in sorted({b.plan for b in self.blocks}):
            cap = POLICY[code].get("rollover_max_credits")
            if cap is None or POLICY[code]["rollover"] == "expire":
                continue
            carried = [b for b in self.blocks if b.plan == code and b.period_end <= end
                       and (b.expires_at is None or b.expires_at > end)]
            excess = min(sum(b.remaining for b in carried) - cap, max(self.available, 0))
            for b in sorted(carried, key=MBlock.order):
                if excess <= 0:
                    break
                take = min(b.remaining, excess)
                b.remaining -= take
                excess -= take
            self.blocks = [b for b in self.blocks if b.remaining > 0]
        self.period_start = end
        self.grant(self.plan, end, end)

    def advance(self, to: datetime) -> None:
        while self.period_start + PERIOD <= to:
            self.end_period(self.period_start + PERIOD)
        self.release_expired(to)
        self.expire_due(to)
        self.now = to

    def spend(self, credits: int) -> bool:
        if credits > self.available:
            return False
        left = credits

        def order(b: MBlock) -> tuple[bool, tuple[bool, datetime, datetime, int]]:
            kept = b.expires_at is not None and b.expires_at <= self.now
            return kept, b.order()

        for b in sorted(self.blocks, key=order):
            take = min(b.remaining, left)
            b.remaining -= take
            left -= take
        self.blocks = [b for b in self.blocks if b.remaining > 0]
        return True


class PeriodMachine(RuleBasedStateMachine):
    db_url: str = ""
    tmp: Path = Path()

    @initialize(plan=st.sampled_from(sorted(POLICY)))
    def start(self, plan: str) -> None:
        self.clock = FakeClock(T0 + timedelta(minutes=5))
        env = {"DATABASE_URL": self.db_url, "KINDE_CREDITS_VAR_DIR": str(self.tmp)}
        self.c = build_container(Settings.from_env(env), catalog=parse_catalog(CATALOG),
                                 clock=self.clock)
        self.model = Model(plan, self.clock())
        self.wallet = f"org_model{next(WALLETS)}"  # one database for all examples
        self.events = 0
        self._event("customer.agreement_created", plan, T0)
        self.model.grant(plan, T0, T0)

    def teardown(self) -> None:
        if hasattr(self, "c"):
            try:
                report = revenue_report(self.c.store, T0 - timedelta(days=1),
                                        self.clock() + timedelta(days=1))
                for cur, row in report["currencies"].items():
                    money = {k: Decimal(row[k]) for k in ("opening_deferred", "sales",
                                                           "recognised", "breakage",
                                                           "closing_deferred")}
                    assert (money["opening_deferred"] + money["sales"] - money["recognised"]
                            - money["breakage"] == money["closing_deferred"]), (cur, row)
                assert verify_ledger(self.c.store) == {}
            finally:
                self.c.close()

    def _event(self, kind: str, plan: str, start: datetime) -> None:
        self.events += 1
        data = {"org_code": self.wallet, "agreement_id": f"agr_{self.wallet}",
                "customer_id": f"customer_{self.wallet}", "plan_code": plan,
                "current_period_start": start.isoformat(),
                "current_period_end": (start + PERIOD).isoformat()}
        claims = {"type": kind, "event_id": f"evt_{self.wallet}_{self.events}", "source": "api",
                  "timestamp": self.clock().isoformat(), "data": data}
        assert self.c.webhooks.receive(claims, "raw.jwt").status in ("processed",)

    # -- rules -------------------------------------------------------------------------------

    @rule(credits=st.integers(1, 700))
    def use(self, credits: int) -> None:
        self.model.advance(self.clock())
        allowed = self.model.spend(credits)
        try:
            status = self.c.ledger.record_usage(self.wallet, "api", credits).status
        except InsufficientCredits:
            status = 402
        assert (status == 201) == allowed, (status, self.model.available)

    @rule(credits=st.integers(1, 400), hours=st.integers(1, 120))
    def place_hold(self, credits: int, hours: int) -> None:
        self.model.advance(self.clock())
        allowed = credits <= self.model.available
        try:
            outcome = self.c.ledger.place_hold(self.wallet, credits=credits,
                                               expires_in_seconds=hours * 3600)
        except InsufficientCredits:
            assert not allowed, self.model.available
            return
        assert outcome.status == 201 and allowed, (outcome.body, self.model.available)
        if allowed:
            self.model.holds.append(MHold(credits, self.clock() + timedelta(hours=hours),
                                          self.clock(), str(outcome.body["hold_id"])))

    @precondition(lambda self: any(h.open for h in getattr(self, "model", Model(
        "basic", T0)).holds))
    @rule(data=st.data())
    def release_hold(self, data: st.DataObject) -> None:
        self.model.advance(self.clock())
        open_holds = [h for h in self.model.holds if h.open]
        if not open_holds:
            return
        h = data.draw(st.sampled_from(open_holds))
        outcome = self.c.ledger.release_hold(h.hold_id)
        assert outcome.status == 200, outcome.body
        h.open = False
        self.model.expire_due(self.clock())

    @rule(plan=st.sampled_from(sorted(POLICY)))
    def change_plan(self, plan: str) -> None:
        self.model.advance(self.clock())
        self._event("customer.plan_changed", plan, self.model.period_start)
        self.model.plan = plan
        self.model.grant(plan, self.model.period_start, self.clock())

    @rule(drift=st.sampled_from([0, 1, -1, 3600]))
    def repeat_event(self, drift: int) -> None:
        self.model.advance(self.clock())
        self._event("customer.plan_assigned", self.model.plan,
                    self.model.period_start + timedelta(seconds=drift))

    @rule(hours=st.integers(1, 24 * 20), worker=st.booleans())
    def time_passes(self, hours: int, worker: bool) -> None:
        self.clock.advance(hours=hours)
        if worker:
            self.c.plans.run_due()
            self.c.ledger.sweep_due()

    @invariant()
    def same_as_the_model(self) -> None:
        if not hasattr(self, "c"):
            return
        self.model.advance(self.clock())
        view = self.c.ledger.get_wallet(self.wallet)
        # "" for "never expires", so that the lists sort whatever the mix.
        live = sorted((b["kind"], b["remaining"], b["expires_at"] or "")
                      for b in view["blocks"])
        expected = sorted(
            ("allotment", b.remaining,
             b.expires_at.isoformat().replace("+00:00", "Z") if b.expires_at else "")
            for b in self.model.blocks)
        assert (view["balance"], view["available"]) == (self.model.balance,
                                                        self.model.available), live
        assert live == expected


@pytest.fixture
def machine_db(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    yield db_url, tmp_path


def test_a_year_of_periods_matches_the_plain_model(machine_db: tuple[str, Path]) -> None:
    PeriodMachine.db_url, PeriodMachine.tmp = machine_db
    run = PeriodMachine.TestCase
    # No shrinking: a failing run prints its whole sequence at once instead of minutes of
    # re-runs against a real database.
    run.settings = settings(max_examples=12, stateful_step_count=40, deadline=None,
                            suppress_health_check=list(HealthCheck),
                            phases=[Phase.explicit, Phase.reuse, Phase.generate])
    run().runTest()
