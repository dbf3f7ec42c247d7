"""Revenue in 0- and 3-decimal currencies on both databases (issue 23, defect 9): a KWD 2.345
pack fully used reports 2.345 sold and 2.345 recognised, closing 0.000 (it reported sales 2.34,
recognised 2.35 and closing "-0.00"); JPY figures are whole yen; auto-recharge's discounted
price is rounded to the currency's minor unit, not to cents."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.bootstrap import build_container
from app.domain.catalog import parse_catalog
from app.services.revenue import revenue_report
from app.settings import Settings
from tests.conftest import FakeClock
from tests.integration.plan_fixtures import T0

CATALOG: dict[str, Any] = {
    "features": {"api": {"label": "API Call", "unit": "API call", "credits_per_unit": 1,
                         "kinde_feature_code": "api_calls", "source": "app"}},
    "bundles": {
        "dinar": {"credits": 10, "price": "2.345", "currency": "KWD"},
        "yen": {"credits": 3, "price": "1000", "currency": "JPY"},
    },
}
MONEY = ("opening_deferred", "sales", "recognised", "breakage", "closing_deferred")


def _report(db_url: str, tmp_path: Path, uses: dict[str, list[int]]) -> dict[str, Any]:
    clock = FakeClock(T0)
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), catalog=parse_catalog(CATALOG), clock=clock)
    try:
        for bundle, amounts in uses.items():
            wallet = f"org_{bundle}"
            c.ledger.top_up_bundle(wallet, bundle)
            for amount in amounts:
                clock.advance(minutes=1)
                c.ledger.record_usage(wallet, "api", amount)
        return revenue_report(c.store, T0 - timedelta(days=1), clock() + timedelta(days=1))
    finally:
        c.close()


def test_three_decimal_pack_fully_used_balances_exactly(db_url: str, tmp_path: Path) -> None:
    report = _report(db_url, tmp_path, {"dinar": [3, 3, 4]})
    row = report["currencies"]["KWD"]
    assert {k: row[k] for k in MONEY} == {
        "opening_deferred": "0.000", "sales": "2.345", "recognised": "2.345",
        "breakage": "0.000", "closing_deferred": "0.000"}


def test_three_decimal_pack_partly_used_splits_by_thousandths(db_url: str,
                                                              tmp_path: Path) -> None:
    # 3 of 10 credits: round(2.345 x 3 / 10) = 0.704 recognised, 1.641 still deferred.
    row = _report(db_url, tmp_path, {"dinar": [3]})["currencies"]["KWD"]
    assert (row["sales"], row["recognised"], row["closing_deferred"]) == (
        "2.345", "0.704", "1.641")


def test_zero_decimal_pack_reports_whole_yen(db_url: str, tmp_path: Path) -> None:
    # 1 then 1 of 3 credits: 333 then 667 - 333 = 334 recognised, 333 deferred.
    row = _report(db_url, tmp_path, {"yen": [1, 1]})["currencies"]["JPY"]
    assert {k: row[k] for k in MONEY} == {
        "opening_deferred": "0", "sales": "1000", "recognised": "667", "breakage": "0",
        "closing_deferred": "333"}
    assert Decimal(row["sales"]) - Decimal(row["recognised"]) == Decimal(
        row["closing_deferred"])
