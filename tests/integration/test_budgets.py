"""Team budgets through LedgerService on SQLite and PostgreSQL: caps on usage and holds,
nothing written on a refusal, UTC day and month resets (FakeClock), and the pre-check
agreeing with what the debit then does."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from adapters.sql.store import SqlStore
from app.domain.budgets import InvalidMember, MemberBudgetExceeded
from app.domain.ledger import CaptureExceedsHold, HoldNotOpen, InsufficientCredits, LedgerError
from app.services.budgets import BudgetService
from app.services.ledger import LedgerService, verify_ledger
from tests.conftest import FakeClock

ORG, ALICE, BOB = "org_acme", "kp_alice", "kp_bob"


def counts(store: SqlStore) -> dict[str, Any]:
    with store.engine.connect() as conn:
        out = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
               for t in ("entries", "holds", "member_spend", "member_holds", "idempotency_keys")}
        out["balances"] = conn.execute(
            text("SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0) FROM wallets")
        ).one()
        out["spent"] = conn.execute(
            text("SELECT COALESCE(SUM(credits), 0) FROM member_spend")).scalar_one()
    return out


@pytest.fixture
def budgets(sql_ledger: LedgerService) -> BudgetService:
    sql_ledger.grant(ORG, 1000, "team credits")
    return BudgetService(sql_ledger)


def member_row(budgets: BudgetService, member: str) -> dict[str, Any]:
    [row] = [m for m in budgets.members(ORG)["members"] if m["member"] == member]
    return row


def test_usage_within_the_cap_then_refused_with_the_org_untouched(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService
) -> None:
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 120})
    done = sql_ledger.record_usage(ORG, "report_generation", 2, member=ALICE)
    assert done.status == 201 and done.body["member"] == ALICE and done.body["balance"] == 900
    before = counts(sql_store)
    with pytest.raises(MemberBudgetExceeded) as refused:
        sql_ledger.record_usage(ORG, "report_generation", 1, member=ALICE,
                                idempotency_key="k1")
    assert (refused.value.needed, refused.value.available_to_member) == (50, 20)
    assert counts(sql_store) == before  # no entry, no spend, no key: the org is untouched
    # The key stays free: within the cap, the same key now succeeds.
    assert sql_ledger.record_usage(ORG, "api_call", 20, member=ALICE,
                                   idempotency_key="k1").status == 201
    with pytest.raises(MemberBudgetExceeded):
        sql_ledger.record_usage(ORG, "api_call", 1, member=ALICE)
    # Bob has no cap; unattributed org usage counts against no one.
    assert sql_ledger.record_usage(ORG, "report_generation", 5, member=BOB).status == 201
    assert sql_ledger.record_usage(ORG, "api_call", 3).status == 201
    alice = member_row(budgets, ALICE)
    assert alice["budget"] == {"credits_per_day": 120, "credits_per_month": None}
    assert alice["today"]["spent"] == 120 and alice["today"]["remaining"] == 0
    assert alice["today"]["by_feature"] == [
        {"feature": "api_call", "credits": 20, "units": 20},
        {"feature": "report_generation", "credits": 100, "units": 2},
    ]
    assert alice["this_month"] == {**alice["today"], "cap": None, "remaining": None}
    bob = member_row(budgets, BOB)
    assert bob["today"]["spent"] == 250 and bob["today"]["remaining"] is None
    assert sql_ledger.get_wallet(ORG)["balance"] == 1000 - 120 - 250 - 3
    assert verify_ledger(sql_store) == {}


def test_holds_reserve_budget_release_gives_it_back_capture_counts_the_captured(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService,
    clock: FakeClock,
) -> None:
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 100})
    hold = sql_ledger.place_hold(ORG, credits=80, member=ALICE).body
    assert hold["member"] == ALICE
    assert member_row(budgets, ALICE)["held"] == 80
    with pytest.raises(MemberBudgetExceeded) as refused:
        sql_ledger.record_usage(ORG, "api_call", 21, member=ALICE)
    assert refused.value.available_to_member == 20
    sql_ledger.record_usage(ORG, "api_call", 20, member=ALICE)
    sql_ledger.release_hold(hold["hold_id"])
    assert member_row(budgets, ALICE)["held"] == 0
    sql_ledger.record_usage(ORG, "api_call", 80, member=ALICE)  # released: budget is back
    assert member_row(budgets, ALICE)["today"]["remaining"] == 0

    clock.advance(days=1)
    hold2 = sql_ledger.place_hold(ORG, feature_key="report_generation", quantity=2,
                                  member=ALICE).body
    with pytest.raises(MemberBudgetExceeded):
        sql_ledger.place_hold(ORG, credits=1, member=ALICE)
    # A capture is at most the hold (so it always fits the budget the hold reserved).
    with pytest.raises(CaptureExceedsHold):
        sql_ledger.capture_hold(hold2["hold_id"], 101)
    sql_ledger.capture_hold(hold2["hold_id"], 60)
    row = member_row(budgets, ALICE)
    assert (row["held"], row["today"]["spent"]) == (0, 60)
    assert row["today"]["by_feature"] == [
        {"feature": "report_generation", "credits": 60, "units": 2}]
    sql_ledger.record_usage(ORG, "api_call", 40, member=ALICE)
    with pytest.raises(MemberBudgetExceeded):
        sql_ledger.record_usage(ORG, "api_call", 1, member=ALICE)

    # A hold that expires unused gives its reservation back, swept or not.
    clock.advance(days=1)
    sql_ledger.place_hold(ORG, credits=100, member=ALICE, expires_in_seconds=60)
    clock.advance(seconds=61)
    assert BudgetService(sql_ledger).check(ORG, "api_call", 100, ALICE)["allowed"]
    sql_ledger.record_usage(ORG, "api_call", 100, member=ALICE)
    assert verify_ledger(sql_store) == {}


def test_day_and_month_reset_at_utc_boundaries(
    sql_ledger: LedgerService, budgets: BudgetService, clock: FakeClock
) -> None:
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 100, "credits_per_month": 250})
    clock.now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    sql_ledger.record_usage(ORG, "report_generation", 2, member=ALICE)
    clock.now = datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=UTC)
    with pytest.raises(MemberBudgetExceeded, match="daily"):
        sql_ledger.record_usage(ORG, "api_call", 1, member=ALICE)
    clock.advance(microseconds=1)  # 2026-11-30 00:00:00Z: a new day, the same month
    sql_ledger.record_usage(ORG, "api_call", 100, member=ALICE)
    clock.now = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 1000})
    sql_ledger.record_usage(ORG, "api_call", 50, member=ALICE)
    with pytest.raises(MemberBudgetExceeded, match="monthly") as refused:
        sql_ledger.record_usage(ORG, "api_call", 1, member=ALICE)
    assert refused.value.available_to_member == 0
    report = budgets.members(ORG)
    assert (report["day"], report["month"]) == ("2026-11-30", "2026-11")
    assert report["day_resets_at"] == "2026-12-01T00:00:00Z"
    assert member_row(budgets, ALICE)["this_month"]["spent"] == 250
    clock.now = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # a new month
    sql_ledger.record_usage(ORG, "api_call", 250, member=ALICE)
    row = member_row(budgets, ALICE)
    assert (row["today"]["spent"], row["this_month"]["spent"]) == (250, 250)


def test_members_only_on_org_wallets_and_odd_names_are_refused(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService
) -> None:
    sql_ledger.grant(ALICE, 100, "own credits")
    before = counts(sql_store)
    for call in (
        lambda: sql_ledger.record_usage(ALICE, "api_call", 1, member=ALICE),
        lambda: sql_ledger.place_hold(ALICE, credits=1, member=BOB),
        lambda: sql_ledger.record_usage(ORG, "api_call", 1, member="kp_a\x00b"),
        lambda: sql_ledger.record_usage(ORG, "api_call", 1, member="kp_" + "x" * 5000),
        lambda: sql_ledger.record_usage(ORG, "api_call", 1, member="alice"),
        lambda: budgets.set_budget(ALICE, BOB, {"credits_per_day": 1}),
        lambda: budgets.set_budget(ORG, "org_other", {"credits_per_day": 1}),
        lambda: budgets.set_budget(ORG, BOB, {"credits_per_day": -1}),
        lambda: budgets.set_budget(ORG, BOB, {}),
        lambda: budgets.check(ALICE, "api_call", 1, ALICE),
    ):
        with pytest.raises(InvalidMember):
            call()
    assert counts(sql_store) == before


def _attempt(ledger: LedgerService, op: str, member: str | None, quantity: int,
             feature: str) -> str:
    try:
        if op == "usage":
            ledger.record_usage(ORG, feature, quantity, member=member)
        else:
            ledger.place_hold(ORG, feature_key=feature, quantity=quantity, member=member)
        return "allowed"
    except (MemberBudgetExceeded, InsufficientCredits) as exc:
        return exc.code


def test_the_pre_check_agrees_with_what_the_debit_then_does(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService, clock: FakeClock
) -> None:
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 300, "credits_per_month": 700})
    budgets.set_budget(ORG, BOB, {"credits_per_day": 150})
    rng = random.Random(14)
    holds: list[str] = []
    outcomes: set[str] = set()
    for step in range(70):
        member = rng.choice([ALICE, BOB, None])
        feature = rng.choice(["api_call", "file_conversion", "report_generation"])
        quantity = rng.choice([1, 2, 5, 20, 60])
        op = rng.choice(["usage", "usage", "hold"])
        answer = budgets.check(ORG, feature, quantity, member)
        # The check writes nothing.
        before = counts(sql_store)
        assert budgets.check(ORG, feature, quantity, member) == answer
        assert counts(sql_store) == before
        outcome = _attempt(sql_ledger, op, member, quantity, feature)
        outcomes.add(outcome)
        assert outcome == ("allowed" if answer["allowed"] else answer["code"]), (step, answer)
        if op == "hold" and outcome == "allowed":
            holds.append(sql_ledger.ledger_page(ORG, limit=1)["entries"][0]["hold_id"])
        if holds and rng.random() < 0.3:
            hold_id = holds.pop(rng.randrange(len(holds)))
            settle = sql_ledger.release_hold if rng.random() < 0.5 else sql_ledger.capture_hold
            with contextlib.suppress(HoldNotOpen):  # it may have expired meanwhile
                settle(hold_id)
        if step % 15 == 14:
            clock.advance(hours=13)
    # The walk met every answer, so the comparison above was not vacuous.
    assert outcomes == {"allowed", "member_budget_exceeded", "insufficient_credits"}
    assert verify_ledger(sql_store) == {}


def test_check_sees_overdraft_holds_and_unknown_features(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService
) -> None:
    sql_ledger.place_hold(ORG, credits=900)
    answer = budgets.check(ORG, "report_generation", 3)
    assert answer == {"allowed": False, "credits": 150, "available": 100,
                      "wallet_available": 100, "code": "insufficient_credits",
                      "reason": answer["reason"]}
    assert budgets.check(ORG, "report_generation", 2)["allowed"]
    with sql_store.engine.begin() as conn:
        conn.execute(text("UPDATE wallets SET overdraft_limit = 50 WHERE id = :w"), {"w": ORG})
    assert budgets.check(ORG, "report_generation", 3)["allowed"]
    sql_ledger.record_usage(ORG, "report_generation", 3)  # and the debit agrees
    assert budgets.check("org_nobody", "api_call", 1)["allowed"] is False
    budgets.set_budget(ORG, BOB, {"credits_per_month": 10})
    bob = budgets.check(ORG, "api_call", 11, BOB)
    assert (bob["allowed"], bob["code"], bob["available"], bob["member_remaining"]) == (
        False, "member_budget_exceeded", 0, 10)
    with pytest.raises(MemberBudgetExceeded) as refused:  # the debit says the same
        sql_ledger.record_usage(ORG, "api_call", 11, member=BOB)
    assert refused.value.available_to_member == bob["available"] == 0
    for bad in (("storage", 1), ("nope", 1), ("api_call", 0), ("api_call", 1.5)):
        with pytest.raises(LedgerError):
            budgets.check(ORG, *bad)


def test_refused_capture_and_spend_keep_the_ledger_consistent(
    sql_ledger: LedgerService, sql_store: SqlStore, budgets: BudgetService, clock: FakeClock
) -> None:
    budgets.set_budget(ORG, ALICE, {"credits_per_day": 30})
    hold = sql_ledger.place_hold(ORG, credits=30, member=ALICE,
                                 expires_in_seconds=2 * 24 * 3600).body
    before = counts(sql_store)
    with pytest.raises(CaptureExceedsHold):
        sql_ledger.capture_hold(hold["hold_id"], 31)
    assert counts(sql_store) == before  # still open, nothing spent
    clock.advance(days=1)  # an open hold still reserves on the next day
    with pytest.raises(MemberBudgetExceeded):
        sql_ledger.record_usage(ORG, "api_call", 1, member=ALICE)
    sql_ledger.capture_hold(hold["hold_id"], 10)
    sql_ledger.record_usage(ORG, "api_call", 20, member=ALICE)
    assert member_row(budgets, ALICE)["today"]["spent"] == 30
    assert sql_ledger.get_wallet(ORG)["balance"] == 970
