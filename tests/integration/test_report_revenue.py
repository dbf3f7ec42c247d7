"""`kinde-credits report revenue` on a real database: money follows credits exactly."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.bootstrap import build_container
from app.cli import main
from app.settings import Settings
from tests.conftest import FakeClock


def test_sales_recognised_breakage_and_deferred(db_url: str, tmp_path: Path,
                                                clock: FakeClock) -> None:
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), clock=clock)
    try:
        c.ledger.top_up_bundle("kp_a", "starter")         # 5,000 credits for 49.00 USD
        c.ledger.grant("kp_a", 500, "welcome")             # free: no cost basis
        c.ledger.record_usage("kp_a", "report_generation", 30)  # 1,500 credits used
    finally:
        c.close()
    result = CliRunner().invoke(main, ["report", "revenue", "--json",
                                       "--since", "2026-01-01"], env=env)
    assert result.exit_code == 0, result.output
    usd = json.loads(result.output)["currencies"]["USD"]
    # The welcome grant expires never and was made after the purchase; usage drew from the
    # purchase first only if it expires sooner: the starter pack expires in 365 days.
    used = usd["credits"]["used"]
    assert used == 1500
    assert Decimal(usd["recognised"]) == Decimal("14.70")     # 1,500/5,000 of 49.00
    assert Decimal(usd["deferred"]) == Decimal("34.30")
    assert Decimal(usd["recognised"]) + Decimal(usd["breakage"]) + Decimal(
        usd["deferred"]) == Decimal(usd["sold_total"]) == Decimal("49.00")
    assert json.loads(result.output)["granted_credits"] == 500
    text = CliRunner().invoke(main, ["report", "revenue"], env=env).output
    assert "USD" in text and "deferred 34.30" in text


def test_breakage_from_expired_credits() -> None:
    from datetime import UTC, datetime

    from app.services.reports import PurchasedBlock, revenue_report

    when = datetime(2026, 3, 1, tzinfo=UTC)
    blocks = [PurchasedBlock("EUR", Decimal("10.00"), 1000, 0, 300, when),
              PurchasedBlock("EUR", Decimal("3.00"), 3, 1, 0, when)]
    eur = revenue_report(blocks, 0, datetime(2026, 3, 1, tzinfo=UTC),
                         datetime(2026, 4, 1, tzinfo=UTC))["currencies"]["EUR"]
    assert (eur["recognised"], eur["breakage"], eur["deferred"]) == ("9.00", "3.00", "1.00")
    assert eur["sales_in_period"] == "13.00" and eur["credits"]["expired"] == 300


def test_figures_reconcile_to_the_cent_when_a_credit_is_worth_a_fraction_of_a_cent() -> None:
    """recognised + breakage + deferred == sold, to the cent, whatever the unit price: each
    figure rounded on its own can lose (or make up) a cent."""
    from datetime import UTC, datetime

    from app.services.reports import PurchasedBlock, revenue_report

    when = datetime(2026, 3, 1, tzinfo=UTC)
    # 10.00 for 3 credits: one used, one expired, one left, each worth 3.333... .
    blocks = [PurchasedBlock("EUR", Decimal("10.00"), 3, 1, 1, when)]
    eur = revenue_report(blocks, 0, when, datetime(2026, 4, 1, tzinfo=UTC))["currencies"]["EUR"]
    total = Decimal(eur["recognised"]) + Decimal(eur["breakage"]) + Decimal(eur["deferred"])
    assert total == Decimal(eur["sold_total"]) == Decimal("10.00")


@pytest.mark.xfail(strict=True, reason=(
    "DESIGN.md: `report revenue [--since --until]` gives per currency opening deferred, sales, "
    "recognised, breakage and closing deferred for the period, reconciling to the cent. The "
    "report gives recognised/breakage/deferred to date only (the period limits sales alone), "
    "and usage entries do not record which blocks they drew, so the period's figures cannot "
    "be computed from the ledger as stored"))
def test_report_has_opening_and_closing_deferred_for_the_period() -> None:
    from datetime import UTC, datetime

    from app.services.reports import PurchasedBlock, revenue_report

    when = datetime(2026, 3, 1, tzinfo=UTC)
    blocks = [PurchasedBlock("EUR", Decimal("10.00"), 1000, 500, 0, when)]
    eur = revenue_report(blocks, 0, datetime(2026, 4, 1, tzinfo=UTC),
                         datetime(2026, 5, 1, tzinfo=UTC))["currencies"]["EUR"]
    opening, closing = Decimal(eur["opening_deferred"]), Decimal(eur["closing_deferred"])
    assert opening + Decimal(eur["sales_in_period"]) - Decimal(eur["recognised"]) - Decimal(
        eur["breakage"]) == closing
