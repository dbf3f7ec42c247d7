"""Catalog loading and validation: every bad entry names the file, the key and the problem."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.catalog import CatalogError, load_catalog, parse_catalog
from app.settings import DEFAULT_CATALOG

MINIMAL = {"features": {"api_call": {"unit": "call", "credits_per_unit": 1,
                                     "kinde_feature_code": "api_calls"}}}


def test_shipped_catalog_is_valid_and_realistic() -> None:
    cat = load_catalog(DEFAULT_CATALOG)
    assert cat.features["file_conversion"].credits_per_unit == 2
    assert cat.features["api_call"].credits_per_unit == 1
    assert cat.features["report_generation"].credits_per_unit == 50
    assert cat.features["storage"].credits_per_unit == 100
    assert cat.features["storage"].source == "kinde"
    assert cat.bundles["starter"].credits == 5000
    assert cat.bundles["growth"].credits == 50000
    assert cat.bundles["starter"].price == Decimal("49.00")
    assert cat.feature_by_kinde_code("reports") is cat.features["report_generation"]


def test_minimal_catalog_is_valid_with_defaults() -> None:
    cat = parse_catalog(MINIMAL)
    assert cat.features["api_call"].source == "app"
    assert cat.bundles == {} and cat.plans == {}
    assert cat.alerts.thresholds_percent == (50, 25, 10)
    assert cat.auto_recharge.max_per_day == 3
    assert cat.signup.user_credits == 0


def _with(section: str, key: str, table: dict[str, object]) -> dict[str, object]:
    data: dict[str, object] = {"features": dict(MINIMAL["features"])}
    if key:
        data[section] = {**data.get(section, {}), key: table}  # type: ignore[dict-item]
    else:
        data[section] = table
    return data


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({}, "features", "at least one"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 0, "kinde_feature_code": "c"}),
         "features.x.credits_per_unit", "at least 1"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 1.5,
                                 "kinde_feature_code": "c"}),
         "features.x.credits_per_unit", "whole number"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 1}),
         "features.x.kinde_feature_code", "required"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 1, "kinde_feature_code": "c",
                                 "source": "stripe"}), "features.x.source", "one of"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 1,
                                 "kinde_feature_code": "api_calls"}),
         "features.x.kinde_feature_code", "already used"),
        (_with("features", "x", {"unit": "u", "credits_per_unit": 1, "kinde_feature_code": "c",
                                 "cost": 3}), "features.x.cost", "not a known setting"),
        (_with("bundles", "b", {"credits": 10, "price": 9.99}), "bundles.b.price", "decimal"),
        (_with("bundles", "b", {"credits": 10, "price": "abc"}), "bundles.b.price",
         "not a decimal"),
        (_with("bundles", "b", {"credits": 10, "price": "1", "currency": "usd"}),
         "bundles.b.currency", "3-letter"),
        (_with("plans", "pro", {"credits_per_period": 1, "rollover": "sometimes"}),
         "plans.pro.rollover", "one of"),
        (_with("alerts", "", {"thresholds_percent": [50, 150]}), "alerts.thresholds_percent",
         "between 1 and 99"),
        (_with("auto_recharge", "", {"discount_percent": "100"}),
         "auto_recharge.discount_percent", "below 100"),
        ({**MINIMAL, "extra": {}}, "extra", "not a known setting"),
    ],
)
def test_bad_catalog_names_key_and_problem(data: dict[str, object], key: str,
                                           fragment: str) -> None:
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, "credits.toml")
    assert err.value.key == key
    assert fragment in err.value.problem
    assert str(err.value).startswith("credits.toml: [")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[features\n")
    with pytest.raises(CatalogError, match="not valid TOML") as err:
        load_catalog(bad)
    assert str(bad) in str(err.value)
