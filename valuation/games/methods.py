"""The valuation methods of the engine: their names and which of them are linear in the utility.

The one list of method names: ``valuation.games.estimators.approximate`` accepts exactly `METHODS`
(described in that package's docstring), and ``ValuationResult.is_linear`` reads `LINEAR_METHODS`.
This module sits apart from the estimators package so that the result type can read it without
importing the estimators (which import the result type).

A method is **linear** when the value of a weighted game ``Σ_k a_k u_k`` is ``Σ_k a_k φ_k``: the
semivalues (Shapley, Banzhaf) and leave-one-out are; the least core (an LP optimum) is not.
"""

from __future__ import annotations

from valuation.errors import InputError

METHODS: tuple[str, ...] = ("exact", "permutation", "regression", "banzhaf", "loo", "least_core")
LINEAR_METHODS: frozenset[str] = frozenset(METHODS) - {"least_core"}


def check_method(method: str, *, field: str = "method") -> None:
    """Raise `InputError` at `field` unless `method` is one of `METHODS` (the message lists them)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})", field=field)
