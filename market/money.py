"""Money: Decimal amounts, integer minor units and largest-remainder rounding.

Money math never touches binary floats. Amounts are parsed into `decimal.Decimal` and converted to an
integer count of the currency's minor units (cents for EUR, yen for JPY; see `market.currencies`).
Shares of a pool are exact fractions (`fractions.Fraction`; a float weight converts exactly), and the
pool is split with the **largest-remainder (Hamilton) method**:

    quota_i = pool · w_i / Σ_j w_j          (exact rational)
    amount_i = ⌊quota_i⌋ + (1 if i is among the L largest remainders quota_i − ⌊quota_i⌋ else 0)
    L = pool − Σ_i ⌊quota_i⌋               (0 ≤ L < number of members with a positive remainder)

so the amounts sum exactly to the pool, each amount is within one minor unit of its exact quota, a
weight of 0 always gets 0, and equal weights get amounts that differ by at most one minor unit. Ties
among equal remainders are broken deterministically by the caller-given keys (ascending; member names).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from market.currencies import minor_units
from valuation.errors import InputError
from valuation.text import NUMBER_RULE, plain_number


def parse_decimal(value: object, *, file: str | None = None, field: str | None = None) -> Decimal:
    """Parse a money-like value into a finite Decimal.

    Accepts a decimal string, an int, a Decimal, or a float — a float is read through its shortest repr
    (`str(0.1) == "0.1"`), never through its binary expansion. A string must be a plain ASCII decimal:
    optional sign, ASCII digits, optional fraction, blanks around it ignored ("100000.00", "-0.5", ".25");
    no exponent, no digit separators ("1_000"), no non-ASCII digits ("０.６５"), no "NaN"
    (`valuation.text.plain_number`). An int, Decimal or float comes already parsed (from TOML, whose own
    number grammar applies). Booleans, other strings and non-finite values are rejected with an
    `InputError` naming `field`.
    """
    if isinstance(value, bool):
        raise InputError(f"expected a decimal number, got {value!r}", file=file, field=field)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        text = plain_number(value, exponent=False)
        if text is None:
            raise InputError(f"expected {NUMBER_RULE}, got {value!r}", file=file, field=field)
        result = Decimal(text)
    else:
        raise InputError(f"expected a decimal number, got {value!r}", file=file, field=field)
    if not result.is_finite():
        raise InputError(f"expected a finite decimal number, got {value!r}", file=file, field=field)
    return result


MAX_MINOR = 2**63 - 1
"""The largest amount, in minor units, that payoutsim handles: the ledger stores minor units as 64-bit
integers (DuckDB ``BIGINT``), so 92233720368547758.07 EUR or 9223372036854775807 JPY at most. Amounts
beyond it are rejected where they are read (`to_minor`), before anything is computed or printed."""


def to_minor(amount: Decimal, currency: str, *, file: str | None = None, field: str | None = None) -> int:
    """`amount` in `currency` as an exact integer count of minor units (12.34 EUR → 1234).

    Raises `InputError` when `amount` has more decimal digits than the currency allows (12.345 EUR),
    instead of rounding money silently, or when it is beyond ±`MAX_MINOR` minor units (the ledger's
    64-bit integers); the message names `field` and the limit.
    """
    digits = minor_units(currency, file=file)
    limit = Decimal(MAX_MINOR).scaleb(-digits)
    if abs(amount) > limit:
        code = currency.upper()
        raise InputError(
            f"{amount} {code} is beyond the supported range: at most {format_minor(MAX_MINOR, code)} {code} "
            f"(2^63 - 1 minor units, the ledger's 64-bit integers)",
            file=file,
            field=field,
        )
    scaled = amount.scaleb(digits)
    if scaled != scaled.to_integral_value():
        raise InputError(
            f"{amount} has more decimal places than {currency.upper()} allows ({digits})", file=file, field=field
        )
    return int(scaled)


def format_minor(minor: int, currency: str) -> str:
    """A minor-unit count as a decimal string with exactly the currency's digits: 1234 EUR → "12.34",
    5 JPY → "5", -5 EUR → "-0.05"."""
    digits = minor_units(currency)
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def minor_to_units(minor: float, currency: str) -> float:
    """A (fractional) number of minor units in currency units: 112741.67 EUR minor units → 1127.4167. For
    statistics such as a standard error, never for amounts paid (those stay integers)."""
    return float(minor) / 10 ** minor_units(currency)


def fee_minor(revenue_minor: int, fee: Decimal) -> int:
    """The platform's cut of `revenue_minor`: revenue · fee rounded half-to-even to a whole minor unit."""
    return int((Decimal(revenue_minor) * fee).to_integral_value(rounding=ROUND_HALF_EVEN))


def largest_remainder(total: int, weights: Sequence[Fraction | Decimal | float | int], keys: Sequence[str]) -> list[int]:
    """Split the integer `total` (≥ 0) in proportion to non-negative `weights` (largest-remainder method).

    Returns integers summing exactly to `total`. `keys` (one per weight, distinct) break ties among
    equal remainders: the smaller key gets the extra unit first. Raises `ValueError` when a weight is
    negative or not finite, or when all weights are 0 while `total` > 0 (the caller decides the
    degenerate outcome; see `market.rules`).
    """
    if len(weights) != len(keys):
        raise ValueError("weights and keys must have the same length")
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    exact = [Fraction(w) for w in weights]
    if any(w < 0 for w in exact):
        raise ValueError("weights must be >= 0")
    weight_sum = sum(exact, Fraction(0))
    if not exact:
        if total:
            raise ValueError("nobody to pay")
        return []
    if weight_sum == 0:
        if total:
            raise ValueError("all weights are 0")
        return [0] * len(exact)
    quotas = [total * w / weight_sum for w in exact]
    floors = [q.numerator // q.denominator for q in quotas]
    left = total - sum(floors)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), keys[i]))
    for i in order[:left]:
        floors[i] += 1
    return floors
