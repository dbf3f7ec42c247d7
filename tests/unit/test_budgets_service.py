"""Team budgets in the ledger service on the in-memory store: a property test that, whatever
the sequence of usage, holds, captures, releases and clock moves, no member ever commits more
than a cap allows, the pre-check always predicts the debit, and the ledger stays consistent."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.budgets import MemberBudgetExceeded, day_key, month_key
from app.domain.catalog import Catalog
from app.domain.ledger import CaptureExceedsHold, HoldNotOpen, InsufficientCredits
from app.services.budgets import BudgetService
from app.services.ledger import LedgerService, verify_ledger
from tests.conftest import FakeClock
from tests.fakes.memory_store import MemoryStore

ORG = "org_prop"
MEMBERS = ["kp_a", "kp_b", None]
CAPS = {"kp_a": (40, 90), "kp_b": (None, 60)}

step = st.one_of(
    st.tuples(st.just("usage"), st.sampled_from(MEMBERS), st.integers(1, 30)),
    st.tuples(st.just("hold"), st.sampled_from(MEMBERS), st.integers(1, 30)),
    st.tuples(st.just("settle"), st.integers(0, 5), st.integers(0, 35)),
    st.tuples(st.just("hours"), st.integers(1, 30), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step, max_size=40))
def test_caps_hold_and_the_check_predicts_every_debit(
    catalog: Catalog, steps: list[tuple[str, object, int]]
) -> None:
    clock = FakeClock(datetime(2026, 11, 30, 20, 0, tzinfo=UTC))  # crosses a month end
    store = MemoryStore()
    ledger = LedgerService(store, catalog, clock)
    budgets = BudgetService(ledger)
    ledger.grant(ORG, 150, "team")
    for member, (day, month) in CAPS.items():
        budgets.set_budget(ORG, member, {"credits_per_day": day, "credits_per_month": month})
    holds: list[str] = []
    for op, who, amount in steps:
        if op in ("usage", "hold"):
            member = who if isinstance(who, str) else None
            answer = budgets.check(ORG, "api_call", amount, member)
            try:
                if op == "usage":
                    ledger.record_usage(ORG, "api_call", amount, member=member)
                else:
                    body = ledger.place_hold(ORG, feature_key="api_call", quantity=amount,
                                             member=member,
                                             expires_in_seconds=24 * 3600).body
                    holds.append(body["hold_id"])
                outcome = "allowed"
            except (MemberBudgetExceeded, InsufficientCredits) as exc:
                outcome = exc.code
            assert outcome == ("allowed" if answer["allowed"] else answer["code"])
        elif op == "settle" and holds:
            hold_id = holds.pop(int(str(who)) % len(holds))
            with contextlib.suppress(HoldNotOpen, CaptureExceedsHold):
                if amount:
                    ledger.capture_hold(hold_id, amount)
                else:
                    ledger.release_hold(hold_id)
        elif op == "hours":
            clock.advance(hours=int(str(who)))
        # The invariant: spend in the current windows plus open holds within every cap.
        now = clock()
        with store(False) as uow:
            for member, (day, month) in CAPS.items():
                usage = uow.budgets.usage(ORG, member, now)
                if day is not None:
                    assert usage.spent_today + usage.held <= day
                assert usage.spent_month + usage.held <= month
                spend = store.state.spend
                assert sum(v[0] for k, v in spend.items()
                           if k[:3] == (ORG, member, month_key(now))) == usage.spent_month
                assert sum(v[0] for k, v in spend.items()
                           if k[:3] == (ORG, member, day_key(now))) == usage.spent_today
    assert verify_ledger(store) == {}
