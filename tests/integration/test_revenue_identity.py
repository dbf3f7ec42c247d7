"""The revenue roll-forward holds exactly on randomised histories (hypothesis), on both
databases: opening + sales - refunds - recognised - breakage = closing in every period, each
period opens where the one before closed, and splitting a range into periods changes no total.
Packs are sold in USD, EUR, JPY (no minor unit) and KWD (three decimals), refunded and adjusted:
every figure is a whole number of its currency's minor unit and never a negative zero."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.bootstrap import build_container
from app.domain.catalog import Catalog, parse_catalog
from app.domain.ledger import InsufficientCredits, LedgerError
from app.domain.money import quantum
from app.services.errors import NotFound
from app.services.ledger import verify_ledger
from app.services.revenue import revenue_report
from app.settings import Settings
from tests.conftest import FakeClock
from tests.integration.plan_fixtures import PLAN_CATALOG, T0

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), st.sampled_from(["pack", "odd", "yen", "dinar"])),
        st.tuples(st.just("use"), st.integers(1, 3000)),
        st.tuples(st.just("kinde_use"), st.integers(1, 700)),
        st.tuples(st.just("grant"), st.integers(1, 500)),
        st.tuples(st.just("refund"), st.integers(0, 30)),
        st.tuples(st.just("adjust"), st.integers(-400, 400).filter(bool)),
        st.tuples(st.just("wait"), st.integers(0, 24 * 9)),
    ),
    min_size=1,
    max_size=25,
)
MONEY = ("opening_deferred", "sales", "refunds", "recognised", "breakage",
         "closing_deferred")


def money_catalog() -> Catalog:
    """The plan fixtures' catalog plus a 0-decimal (JPY) and a 3-decimal (KWD) pack."""
    bundles = {
        **PLAN_CATALOG["bundles"],
        "yen": {"credits": 7, "price": "1000", "currency": "JPY", "description": "Yen pack",
                "expires_after_days": 3},
        "dinar": {"credits": 10, "price": "2.345", "currency": "KWD",
                  "description": "Dinar pack", "expires_after_days": 4},
    }
    return parse_catalog({**PLAN_CATALOG, "bundles": bundles})


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, cuts=st.lists(st.integers(0, 1000), min_size=2, max_size=2))
def test_roll_forward_identity(env: dict[str, str], ops: list[tuple[str, Any]],
                               cuts: list[int]) -> None:
    clock = FakeClock(T0)
    c = build_container(Settings.from_env(env), catalog=money_catalog(), clock=clock)
    try:
        start = clock()
        wallet = f"org_h{abs(hash((tuple(ops), tuple(cuts)))) % 10**12}"
        for op, arg in ops:
            clock.advance(minutes=7)
            if op == "buy":
                c.ledger.top_up_bundle(wallet, arg)
            elif op == "use":
                with contextlib.suppress(InsufficientCredits):
                    c.ledger.record_usage(wallet, "api", arg)
            elif op == "kinde_use":
                _unrefusable_debit(c, wallet, arg)
            elif op == "grant":
                c.ledger.grant(wallet, arg, "goodwill")
            elif op == "refund":
                _refund_some_purchase(c, wallet, arg)
            elif op == "adjust":
                with contextlib.suppress(InsufficientCredits, NotFound):
                    c.ledger.adjust(wallet, arg, "correction")
            else:
                clock.advance(hours=arg)
        clock.advance(days=6)
        c.ledger.sweep_due()
        end = clock() + timedelta(days=1)
        span = end - start
        t1, t2 = sorted(start + span * (n / 1000) for n in cuts)
        bounds = [start - timedelta(days=1), t1, t2 + timedelta(seconds=1), end]
        reports = [revenue_report(c.store, a, b) for a, b in zip(bounds, bounds[1:],
                                                               strict=False)]
        whole = revenue_report(c.store, bounds[0], bounds[-1])
        assert verify_ledger(c.store) == {}
    finally:
        c.close()
    previous_closing: dict[str, Decimal] = {}
    for report in reports:
        for cur, row in report["currencies"].items():
            m = {k: Decimal(row[k]) for k in MONEY}
            assert all(v == v.quantize(quantum(cur)) and v.as_tuple().exponent == (
                quantum(cur).as_tuple().exponent) for v in m.values()), row
            assert not any(row[k].startswith("-") for k in MONEY), row
            assert all(m[k] >= 0 for k in MONEY), row
            assert m["opening_deferred"] + m["sales"] - m["refunds"] - m["recognised"] - (
                m["breakage"]) == m["closing_deferred"], row
            assert m["opening_deferred"] == previous_closing.get(cur, Decimal(0)), cur
            credits = row["credits"]
            assert credits["opening"] + credits["added"] - credits["refunded"] - (
                credits["used"]) - credits["expired"] == credits["closing"]
        previous_closing = {cur: Decimal(row["closing_deferred"])
                            for cur, row in report["currencies"].items()}
        u = report["uncosted_credits"]
        assert u["opening"] + u["added"] - u["used"] - u["expired"] == u["closing"]
    for cur, row in whole["currencies"].items():
        for key in ("sales", "refunds", "recognised", "breakage"):
            assert Decimal(row[key]) == sum(
                (Decimal(r["currencies"][cur][key]) for r in reports
                 if cur in r["currencies"]), Decimal("0")), (cur, key)


def _refund_some_purchase(c: Any, wallet: str, pick: int) -> None:
    """Refund one of the wallet's purchases (any: used, unused, expired or refunded already:
    the refusals are part of the history too)."""
    with c.store.engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM entries WHERE wallet_id = :w AND kind = "
                                "'purchase' ORDER BY id"), {"w": wallet}).scalars().all()
    if ids:
        with contextlib.suppress(LedgerError):
            c.ledger.refund(wallet, int(ids[pick % len(ids)]), "hypothesis")


def _unrefusable_debit(c: Any, wallet: str, credits: int) -> None:
    """Usage that already happened (as Kinde reports it): never refused, arrears if short."""
    with c.store(True) as uow:
        now = c.clock()
        c.ledger.writer.write(
            uow, wallet, now,
            lambda w: w.debit(credits, reason="kinde:test", description=f"-{credits} credits",
                              now=now, refusable=False, feature="api", quantity=credits),
            create=True)
        uow.commit()
