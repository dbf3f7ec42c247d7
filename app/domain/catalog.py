"""The credits catalog: what features cost, which packs exist, what plans and sign-ups grant.

Parsed from `config/credits.toml` (or `CREDITS_CATALOG`) into immutable value objects and
validated strictly at start-up: a bad catalog must stop the service with a message that names
the file, the key and the problem, because a wrong price silently charges every customer wrong.
Only `[features]` is required; every other section has defaults.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from app.domain.money import fits_currency, minor_unit, round_money

Source = Literal["app", "kinde"]
Rollover = Literal["expire", "rollover", "full"]

_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class CatalogError(ValueError):
    """A catalog problem, pinned to the file and the dotted key it concerns."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: [{key}] {problem}")


@dataclass(frozen=True)
class Feature:
    key: str
    label: str
    unit: str
    credits_per_unit: int
    kinde_feature_code: str
    source: Source


@dataclass(frozen=True)
class Bundle:
    key: str
    credits: int
    price: Decimal
    currency: str
    description: str
    expires_after_days: int | None
    kinde_feature_code: str | None
    # A second Kinde feature, priced at the discounted pack price: auto-recharge purchases are
    # invoiced on it, so the customer pays what the auto-recharge notice told them.
    auto_recharge_kinde_feature_code: str | None = None
    # What the customer calls it ("Starter pack"): the dashboard's "Buy <label>" button.
    label: str = ""

    def invoice_meter(self, auto: bool) -> str:
        """The usage-report key that counts this pack's purchases on one Kinde code.

        Each Kinde code carries its own absolute count, so purchases invoiced on the
        auto-recharge code are counted apart from sales on `kinde_feature_code`.
        """
        if auto and self.auto_recharge_kinde_feature_code:
            return f"{AUTO_METER_PREFIX}{self.key}"
        return f"{SALE_METER_PREFIX}{self.key}"

    def invoice_code(self, auto: bool) -> str | None:
        """The Kinde feature a purchase is invoiced on (None: it cannot be invoiced)."""
        if auto and self.auto_recharge_kinde_feature_code:
            return self.auto_recharge_kinde_feature_code
        return self.kinde_feature_code


SALE_METER_PREFIX = "bundle:"
AUTO_METER_PREFIX = "bundle-auto:"


@dataclass(frozen=True)
class Plan:
    code: str
    credits_per_period: int
    rollover: Rollover
    rollover_expires_after_days: int | None
    rollover_max_credits: int | None = None
    label: str = ""
    # Optional cost basis of one period's allotment (for the revenue report); none by default.
    price: Decimal | None = None
    currency: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.code.replace("_", " ").title()


@dataclass(frozen=True)
class Signup:
    user_credits: int = 0
    org_credits: int = 0
    expires_after_days: int | None = None


@dataclass(frozen=True)
class AlertDefaults:
    thresholds_percent: tuple[int, ...] = (50, 25, 10)
    notify_at_zero: bool = True


@dataclass(frozen=True)
class AutoRechargeDefaults:
    discount_percent: Decimal = Decimal("0")
    max_per_day: int = 3


@dataclass(frozen=True)
class Catalog:
    features: Mapping[str, Feature]
    bundles: Mapping[str, Bundle] = field(default_factory=dict)
    plans: Mapping[str, Plan] = field(default_factory=dict)
    signup: Signup = Signup()
    alerts: AlertDefaults = AlertDefaults()
    auto_recharge: AutoRechargeDefaults = AutoRechargeDefaults()
    path: str = "<memory>"

    def feature_by_kinde_code(self, code: str) -> Feature | None:
        for feature in self.features.values():
            if feature.kinde_feature_code == code:
                return feature
        return None

    def bundle_by_kinde_code(self, code: str) -> Bundle | None:
        """The pack invoiced on this Kinde code (its sale or its auto-recharge code)."""
        for bundle in self.bundles.values():
            if code in (bundle.kinde_feature_code, bundle.auto_recharge_kinde_feature_code):
                return bundle
        return None


class _Reader:
    """Typed accessors over one TOML table that raise CatalogError with the dotted key."""

    def __init__(self, path: str, prefix: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise CatalogError(path, prefix, "must be a table")
        self.path, self.prefix, self.table = path, prefix, table
        self.used: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> CatalogError:
        return CatalogError(self.path, self._key(name), problem)

    def get(self, name: str, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise self.fail(name, "is required")
            return default
        return self.table[name]

    def text(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, name: str, default: Any = ..., minimum: int = 0) -> Any:
        value = self.get(name, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be a whole number, got {value!r}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def decimal(self, name: str, default: Any = ...) -> Any:
        value = self.get(name, default)
        if value is default and default is not ...:
            return value
        # Money must not pass through float: accept strings and integers only.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(name, f'must be a decimal string such as "49.00", got {value!r}')
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(name, f"is not a decimal number: {value!r}") from None
        if not amount.is_finite() or amount < 0:
            raise self.fail(name, f"must be a non-negative amount, got {value!r}")
        return amount

    def price(self, name: str, currency: str, default: Any = ...) -> Any:
        """A `decimal` that is a whole number of the currency's minor units (DESIGN "Money")."""
        amount = self.decimal(name, default)
        if amount is default and default is not ...:
            return amount
        if not fits_currency(amount, currency):
            places = minor_unit(currency)
            raise self.fail(name, f"{amount} has more decimals than {currency} has ({places}); "
                            f"give a whole number of {currency}'s minor unit, such as "
                            f"{round_money(amount, currency)}")
        return amount

    def choice(self, name: str, options: tuple[str, ...], default: Any = ...) -> Any:
        value = self.get(name, default)
        if value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting (typo?)")


def _check_key(path: str, section: str, key: str) -> None:
    if not _KEY_RE.match(key):
        raise CatalogError(path, f"{section}.{key}", "keys use lowercase letters, digits, _ and -")


def parse_catalog(data: Mapping[str, Any], path: str = "<memory>") -> Catalog:
    """Validate a decoded TOML document and build the Catalog, or raise CatalogError."""
    root = _Reader(path, "", dict(data))
    features_table = root.get("features", {})
    if not isinstance(features_table, dict) or not features_table:
        raise CatalogError(path, "features", "needs at least one [features.<key>] table")

    features: dict[str, Feature] = {}
    kinde_codes: dict[str, str] = {}
    for key, table in features_table.items():
        _check_key(path, "features", key)
        r = _Reader(path, f"features.{key}", table)
        feature = Feature(
            key=key,
            label=r.text("label", key.replace("_", " ").title()),
            unit=r.text("unit"),
            credits_per_unit=r.integer("credits_per_unit", minimum=1),
            kinde_feature_code=r.text("kinde_feature_code"),
            source=r.choice("source", ("app", "kinde"), "app"),
        )
        r.finish()
        if feature.kinde_feature_code in kinde_codes:
            raise CatalogError(
                path,
                f"features.{key}.kinde_feature_code",
                f"{feature.kinde_feature_code!r} is already used by "
                f"features.{kinde_codes[feature.kinde_feature_code]}: one source per feature",
            )
        kinde_codes[feature.kinde_feature_code] = key
        features[key] = feature

    bundles: dict[str, Bundle] = {}
    # Every Kinde code names one thing: a feature, a pack's sales or a pack's auto-recharges.
    # Two users of one code would overwrite each other's absolute totals at Kinde.
    code_owner: dict[str, str] = {
        code: f"features.{key}.kinde_feature_code" for code, key in kinde_codes.items()
    }
    for key, table in (root.get("bundles", {}) or {}).items():
        _check_key(path, "bundles", key)
        r = _Reader(path, f"bundles.{key}", table)
        currency = r.text("currency", "USD")
        if not _CURRENCY_RE.match(currency):
            raise r.fail("currency", f"must be a 3-letter ISO code such as USD, got {currency!r}")
        bundle = Bundle(
            key=key,
            credits=r.integer("credits", minimum=1),
            price=r.price("price", currency),
            currency=currency,
            description=r.text("description", f"{key} credit pack"),
            expires_after_days=r.integer("expires_after_days", None, minimum=1),
            kinde_feature_code=r.text("kinde_feature_code", None),
            auto_recharge_kinde_feature_code=r.text("auto_recharge_kinde_feature_code", None),
            label=r.text("label", f"{key.replace('_', ' ').title()} pack"),
        )
        r.finish()
        if bundle.auto_recharge_kinde_feature_code and not bundle.kinde_feature_code:
            raise r.fail("auto_recharge_kinde_feature_code",
                         "needs kinde_feature_code too: a pack is sold and auto-recharged "
                         "only when it can be invoiced through Kinde")
        for name in ("kinde_feature_code", "auto_recharge_kinde_feature_code"):
            code = getattr(bundle, name)
            if not code:
                continue
            owner = code_owner.get(code)
            if owner is not None:
                raise r.fail(name, f"{code!r} is already used by [{owner}]: bundles.{key} "
                                   f"and [{owner}] cannot share one Kinde code, because each "
                                   f"code carries one absolute total and they would "
                                   f"overwrite each other")
            code_owner[code] = f"bundles.{key}.{name}"
        bundles[key] = bundle

    plans: dict[str, Plan] = {}
    for code, table in (root.get("plans", {}) or {}).items():
        r = _Reader(path, f"plans.{code}", table)
        rollover = r.choice("rollover", ("expire", "rollover", "full"), "expire")
        days = r.integer("rollover_expires_after_days", None, minimum=1)
        if rollover == "rollover" and days is None:
            raise r.fail("rollover_expires_after_days", 'is required when rollover = "rollover"')
        if rollover != "rollover" and days is not None:
            raise r.fail("rollover_expires_after_days", 'applies only to rollover = "rollover"')
        cap = r.integer("rollover_max_credits", None, minimum=0)
        if rollover == "expire" and cap is not None:
            raise r.fail("rollover_max_credits", 'applies only to "rollover" and "full" (with '
                         '"expire" nothing carries over)')
        plan_price = r.decimal("price", None)
        plan_currency = r.text("currency", None)
        if (plan_price is None) != (plan_currency is None):
            raise r.fail("price" if plan_price is None else "currency",
                         "price and currency go together")
        if plan_currency is not None and not _CURRENCY_RE.match(plan_currency):
            raise r.fail("currency", f"must be a 3-letter ISO code such as USD, got "
                         f"{plan_currency!r}")
        if plan_price is not None and plan_currency is not None:
            plan_price = r.price("price", plan_currency)
        plans[code] = Plan(
            code=code,
            credits_per_period=r.integer("credits_per_period", minimum=0),
            rollover=rollover,
            rollover_expires_after_days=days,
            rollover_max_credits=cap,
            label=r.text("label", ""),
            price=plan_price,
            currency=plan_currency,
        )
        r.finish()

    r = _Reader(path, "signup", root.get("signup", {}))
    signup = Signup(
        user_credits=r.integer("user_credits", 0),
        org_credits=r.integer("org_credits", 0),
        expires_after_days=r.integer("expires_after_days", None, minimum=1),
    )
    r.finish()

    r = _Reader(path, "alerts", root.get("alerts", {}))
    thresholds = r.get("thresholds_percent", [50, 25, 10])
    if not isinstance(thresholds, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 < t < 100 for t in thresholds
    ):
        raise r.fail("thresholds_percent", "must be a list of whole percentages between 1 and 99")
    notify_at_zero = r.get("notify_at_zero", True)
    if not isinstance(notify_at_zero, bool):
        raise r.fail("notify_at_zero", "must be true or false")
    r.finish()
    alerts = AlertDefaults(tuple(sorted(set(thresholds), reverse=True)), notify_at_zero)

    r = _Reader(path, "auto_recharge", root.get("auto_recharge", {}))
    discount = r.decimal("discount_percent", Decimal("0"))
    if discount >= 100:
        raise r.fail("discount_percent", "must be below 100")
    auto = AutoRechargeDefaults(discount, r.integer("max_per_day", 3, minimum=1))
    r.finish()
    root.finish()
    if discount > 0:
        for key, bundle in bundles.items():
            # Auto-recharge can buy any pack that can be invoiced: at a discount, invoicing it on
            # the full-price sale code would charge more than the customer was told.
            if bundle.kinde_feature_code and not bundle.auto_recharge_kinde_feature_code:
                raise CatalogError(
                    path, f"bundles.{key}.auto_recharge_kinde_feature_code",
                    f"is required because [auto_recharge] discount_percent is {discount}: "
                    f"auto-recharge purchases are invoiced on a separate Kinde feature priced "
                    f"at the discounted pack price (the sale code "
                    f"{bundle.kinde_feature_code!r} is priced at {bundle.price})",
                )

    return Catalog(features, bundles, plans, signup, alerts, auto, path)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate the catalog file; every problem is a CatalogError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(str(path), "-", f"cannot be read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(str(path), "-", f"is not valid TOML: {exc}") from None
    return parse_catalog(data, str(path))
