"""Money: amounts rounded to their currency's minor unit (DESIGN "Money"), in one place.

Every money figure the service writes or reports (prices, discounted auto-recharge prices, cost
basis, revenue) is a `Decimal` with exactly as many decimals as its currency has in ISO 4217:
JPY 0, USD 2, KWD 3. Rounding is half up (2.345 KWD stays 2.345; 2.345 USD would be 2.35, but
the catalog refuses such a price, so a stored figure is already whole minor units).

Currencies missing from the table below use 2 decimals, the ISO 4217 default for most
currencies; a catalog that sells in one of those and needs another exponent must have it added
here (one line). The table lists the currencies whose exponent is not 2, so it stays short.

Splitting an amount over credits uses cumulative rounding (`share_of`): after n of a block's
`total` credits are gone, round(amount x n / total) of its money is gone. Each draw gets the
difference, so the draws of a block always add up to its amount exactly, whatever the order and
size of the draws, and no figure is ever a fraction of a minor unit.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 exponents other than 2 (list one, 2025): currencies absent here have 2 decimals.
_MINOR_UNITS: dict[str, int] = {
    # No minor unit.
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # Thousandths.
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # Ten-thousandths (units of account).
    "CLF": 4, "UYW": 4,
}
DEFAULT_MINOR_UNIT = 2


def minor_unit(currency: str) -> int:
    """Decimals of the currency's minor unit: JPY 0, USD 2, KWD 3; unknown currencies 2."""
    return _MINOR_UNITS.get(currency.upper(), DEFAULT_MINOR_UNIT)


def quantum(currency: str) -> Decimal:
    """The currency's smallest amount as a `Decimal` exponent: 1, 0.01, 0.001."""
    return Decimal(1).scaleb(-minor_unit(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the currency's minor unit; never a negative zero."""
    rounded = amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def format_money(amount: Decimal, currency: str) -> str:
    """The amount as the reports print it: exactly the currency's decimals, no "-0.00"."""
    return str(round_money(amount, currency))


def decimals_of(amount: Decimal) -> int:
    """How many decimals `amount` is written with, ignoring trailing zeros (2.50 has 1)."""
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def fits_currency(amount: Decimal, currency: str) -> bool:
    """Whether `amount` is a whole number of the currency's minor units."""
    return decimals_of(amount) <= minor_unit(currency)


def discounted(price: Decimal, discount_percent: Decimal, currency: str) -> Decimal:
    """A price less `discount_percent` percent, rounded to the currency's minor unit."""
    return round_money(price * (Decimal(100) - discount_percent) / Decimal(100), currency)


def share_of(amount: Decimal, total: int, consumed: int, currency: str) -> Decimal:
    """The part of `amount` that `consumed` of `total` credits carry, by cumulative rounding.

    `share_of(a, t, n2) - share_of(a, t, n1)` is the money of the credits drawn between n1 and
    n2; the differences over all draws add up to `share_of(a, t, t) == round_money(a)`.
    """
    if total <= 0:
        return round_money(Decimal(0), currency)
    return round_money(amount * consumed / total, currency)
