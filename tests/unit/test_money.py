"""Money rounded to each currency's minor unit (DESIGN "Money"): the table, discounts, shares,
and the catalog refusing a price finer than its currency."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.catalog import CatalogError, parse_catalog
from app.domain.money import (
    discounted,
    format_money,
    minor_unit,
    quantum,
    round_money,
    share_of,
)

FEATURES = {"api": {"credits_per_unit": 1, "kinde_feature_code": "api", "unit": "call",
                    "label": "API", "source": "app"}}


@pytest.mark.parametrize(("currency", "places"), [
    ("JPY", 0), ("KRW", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("BHD", 3), ("XYZ", 2),
    ("jpy", 0),
])
def test_minor_unit_per_currency_and_two_for_unknown(currency: str, places: int) -> None:
    assert minor_unit(currency) == places
    assert quantum(currency) == Decimal(1).scaleb(-places)


def test_rounding_is_half_up_to_the_minor_unit_and_never_negative_zero() -> None:
    assert str(round_money(Decimal("2.345"), "USD")) == "2.35"
    assert str(round_money(Decimal("2.3455"), "KWD")) == "2.346"
    assert str(round_money(Decimal("849.5"), "JPY")) == "850"
    assert format_money(Decimal("-0.0001"), "USD") == "0.00"
    assert format_money(Decimal("-0.004"), "KWD") == "-0.004"


def test_discount_uses_the_currency_minor_unit() -> None:
    # 10% off 2.345 KWD is 2.1105: 2.111 in KWD (the fixed 0.01 quantum gave 2.11).
    assert str(discounted(Decimal("2.345"), Decimal("10"), "KWD")) == "2.111"
    # 15% off 999 JPY is 849.15: 849 (the fixed quantum gave 849.15, a fraction of a yen).
    assert str(discounted(Decimal("999"), Decimal("15"), "JPY")) == "849"
    assert str(discounted(Decimal("49.00"), Decimal("10"), "USD")) == "44.10"


@given(amount=st.decimals(min_value=0, max_value=10**6, places=3),
       draws=st.lists(st.integers(1, 50), min_size=1, max_size=20),
       currency=st.sampled_from(["JPY", "USD", "KWD"]))
def test_cumulative_shares_of_a_block_add_up_to_its_amount(
        amount: Decimal, draws: list[int], currency: str) -> None:
    amount = round_money(amount, currency)
    total = sum(draws)
    consumed, parts = 0, []
    for n in draws:
        before = share_of(amount, total, consumed, currency)
        consumed += n
        parts.append(share_of(amount, total, consumed, currency) - before)
    assert sum(parts, Decimal(0)) == amount
    assert all(p >= 0 and p == p.quantize(quantum(currency)) for p in parts)


def _with_bundle(price: Any, currency: str) -> dict[str, Any]:
    return {"features": FEATURES, "bundles": {"pack": {
        "credits": 100, "price": price, "currency": currency}}}


@pytest.mark.parametrize(("price", "currency"), [
    ("9.999", "USD"), ("100.5", "JPY"), ("2.3456", "KWD"), ("0.001", "EUR"),
])
def test_catalog_refuses_a_bundle_price_finer_than_its_currency(price: str,
                                                                currency: str) -> None:
    with pytest.raises(CatalogError) as err:
        parse_catalog(_with_bundle(price, currency), "credits.toml")
    message = str(err.value)
    assert "credits.toml" in message and "bundles.pack.price" in message
    assert currency in message and "decimals" in message


@pytest.mark.parametrize(("price", "currency"), [
    ("2.345", "KWD"), ("1000", "JPY"), ("1000.000", "JPY"), ("9.99", "USD"), ("9.5", "USD"),
])
def test_catalog_accepts_prices_in_whole_minor_units(price: str, currency: str) -> None:
    catalog = parse_catalog(_with_bundle(price, currency), "credits.toml")
    assert catalog.bundles["pack"].price == Decimal(price)


def test_catalog_refuses_a_plan_price_finer_than_its_currency() -> None:
    data = {"features": FEATURES, "plans": {"gold": {
        "credits_per_period": 10, "price": "12.5", "currency": "JPY"}}}
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, "credits.toml")
    assert "plans.gold.price" in str(err.value) and "JPY" in str(err.value)
    data["plans"]["gold"].update(price="12.345", currency="KWD")
    assert parse_catalog(data, "credits.toml").plans["gold"].price == Decimal("12.345")
