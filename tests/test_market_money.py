"""Money: currencies, Decimal parsing, minor units, largest-remainder rounding."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.currencies import MINOR_UNITS, minor_units
from market.money import fee_minor, format_minor, largest_remainder, parse_decimal, to_minor
from valuation.errors import InputError


def test_minor_units_follow_iso_4217() -> None:
    assert minor_units("EUR") == 2
    assert minor_units("jpy") == 0
    assert minor_units("KWD") == 3
    assert minor_units("CLF") == 4
    with pytest.raises(InputError, match="unknown currency") as err:
        minor_units("XAU")
    assert err.value.field == "market.currency"


def test_parse_decimal_never_goes_through_binary_float() -> None:
    assert parse_decimal("100000.10") == Decimal("100000.10")
    assert parse_decimal(0.1) == Decimal("0.1")  # shortest repr, not 0.1000000000000000055…
    assert parse_decimal(7) == Decimal(7)
    for bad in ("abc", True, float("nan"), "inf", None):
        with pytest.raises(InputError):
            parse_decimal(bad, field="market.revenue")


def test_to_minor_and_format_minor_round_trip_per_currency() -> None:
    assert to_minor(Decimal("12.34"), "EUR") == 1234
    assert to_minor(Decimal("1234"), "JPY") == 1234
    assert format_minor(1234, "EUR") == "12.34"
    assert format_minor(5, "EUR") == "0.05"
    assert format_minor(-5, "EUR") == "-0.05"
    assert format_minor(1234, "JPY") == "1234"
    assert format_minor(1, "KWD") == "0.001"
    with pytest.raises(InputError, match="more decimal places than JPY"):
        to_minor(Decimal("1.5"), "JPY")


def test_fee_rounds_half_to_even() -> None:
    assert fee_minor(25, Decimal("0.1")) == 2  # 2.5 -> 2
    assert fee_minor(35, Decimal("0.1")) == 4  # 3.5 -> 4
    assert fee_minor(10_000_000, Decimal("0.10")) == 1_000_000


def test_largest_remainder_example_and_tie_break() -> None:
    assert largest_remainder(100, [1, 1, 1], ["a", "b", "c"]) == [34, 33, 33]
    assert largest_remainder(100, [1, 1, 1], ["c", "b", "a"]) == [33, 33, 34]  # smallest key wins ties
    assert largest_remainder(10, [0, 1, 0], ["a", "b", "c"]) == [0, 10, 0]
    assert largest_remainder(0, [0, 0], ["a", "b"]) == [0, 0]
    with pytest.raises(ValueError):
        largest_remainder(5, [0, 0], ["a", "b"])
    with pytest.raises(ValueError):
        largest_remainder(5, [1, -1], ["a", "b"])


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=8),
)
def test_largest_remainder_sums_exactly_and_stays_within_one_unit(total: int, weights: list[float]) -> None:
    if sum(weights) == 0:
        weights = [*weights[:-1], 1.0]
    keys = [f"m{i}" for i in range(len(weights))]
    amounts = largest_remainder(total, weights, keys)
    assert sum(amounts) == total
    exact = [Fraction(w) for w in weights]
    s = sum(exact)
    for amount, w in zip(amounts, exact, strict=True):
        quota = total * w / s
        assert quota - 1 < amount <= quota + 1
        if w == 0:
            assert amount == 0


def test_currency_table_is_sane() -> None:
    assert all(len(code) == 3 and code.isupper() for code in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) <= {0, 2, 3, 4}
