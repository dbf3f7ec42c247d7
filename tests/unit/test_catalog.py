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


# -- Kinde codes of packs: one code, one absolute total ---------------------------------------

def _packs(auto: dict[str, object] | None = None, **bundles: dict[str, object]
           ) -> dict[str, object]:
    data: dict[str, object] = {"features": dict(MINIMAL["features"]), "bundles": bundles}
    if auto is not None:
        data["auto_recharge"] = auto
    return data


def test_discount_without_an_auto_recharge_code_is_refused() -> None:
    data = _packs({"discount_percent": 10},
                  starter={"credits": 10, "price": "49.00", "kinde_feature_code": "pack_s"})
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, "credits.toml")
    assert err.value.key == "bundles.starter.auto_recharge_kinde_feature_code"
    assert "discount_percent is 10" in err.value.problem
    assert str(err.value).startswith("credits.toml: [bundles.starter.auto_recharge_kinde_")


def test_auto_recharge_code_is_where_auto_purchases_are_invoiced() -> None:
    cat = parse_catalog(_packs(
        {"discount_percent": 10},
        starter={"credits": 10, "price": "49.00", "kinde_feature_code": "pack_s",
                 "auto_recharge_kinde_feature_code": "pack_s_auto"},
        gift={"credits": 5, "price": "1"},  # never invoiced, so never auto-recharged
    ))
    starter = cat.bundles["starter"]
    assert starter.invoice_code(auto=True) == "pack_s_auto"
    assert starter.invoice_code(auto=False) == "pack_s"
    assert starter.invoice_meter(auto=True) != starter.invoice_meter(auto=False)
    assert cat.bundle_by_kinde_code("pack_s_auto") is starter
    assert cat.bundle_by_kinde_code("pack_s") is starter
    # Without a discount the code is optional: auto-recharges are invoiced at the pack price.
    plain = parse_catalog(_packs(None, starter={"credits": 10, "price": "49.00",
                                                "kinde_feature_code": "pack_s"}))
    assert plain.bundles["starter"].invoice_code(auto=True) == "pack_s"
    assert plain.bundles["starter"].invoice_meter(True) == plain.bundles[
        "starter"].invoice_meter(False)


@pytest.mark.parametrize(
    ("bundles", "key", "fragments"),
    [
        # Two packs on one code: their absolute counts would overwrite each other.
        ({"a": {"credits": 1, "price": "1", "kinde_feature_code": "pack"},
          "b": {"credits": 2, "price": "2", "kinde_feature_code": "pack"}},
         "bundles.b.kinde_feature_code", ["'pack'", "bundles.a", "bundles.b"]),
        # A pack on a feature's code.
        ({"a": {"credits": 1, "price": "1", "kinde_feature_code": "api_calls"}},
         "bundles.a.kinde_feature_code", ["'api_calls'", "features.api_call"]),
        # An auto-recharge code equal to the pack's own sale code.
        ({"a": {"credits": 1, "price": "1", "kinde_feature_code": "pack",
                "auto_recharge_kinde_feature_code": "pack"}},
         "bundles.a.auto_recharge_kinde_feature_code", ["'pack'", "bundles.a.kinde_feature"]),
        # An auto-recharge code equal to another pack's sale code.
        ({"a": {"credits": 1, "price": "1", "kinde_feature_code": "pack_a",
                "auto_recharge_kinde_feature_code": "pack_b"},
          "b": {"credits": 2, "price": "2", "kinde_feature_code": "pack_b"}},
         "bundles.b.kinde_feature_code", ["'pack_b'", "bundles.a", "bundles.b"]),
        # An auto-recharge code equal to a feature's code.
        ({"a": {"credits": 1, "price": "1", "kinde_feature_code": "pack",
                "auto_recharge_kinde_feature_code": "api_calls"}},
         "bundles.a.auto_recharge_kinde_feature_code", ["'api_calls'", "features.api_call"]),
        # An auto-recharge code without a sale code.
        ({"a": {"credits": 1, "price": "1", "auto_recharge_kinde_feature_code": "x"}},
         "bundles.a.auto_recharge_kinde_feature_code", ["needs kinde_feature_code"]),
    ],
)
def test_each_kinde_code_names_one_thing(bundles: dict[str, dict[str, object]], key: str,
                                         fragments: list[str]) -> None:
    with pytest.raises(CatalogError) as err:
        parse_catalog(_packs(None, **bundles), "credits.toml")
    assert err.value.key == key
    for fragment in fragments:
        assert fragment in err.value.problem, err.value.problem


def test_shipped_catalog_invoices_auto_recharges_on_their_own_codes() -> None:
    cat = load_catalog(DEFAULT_CATALOG)
    assert cat.auto_recharge.discount_percent > 0
    for bundle in cat.bundles.values():
        assert bundle.auto_recharge_kinde_feature_code not in (None, bundle.kinde_feature_code)
