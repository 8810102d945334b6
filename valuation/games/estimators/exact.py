"""Exact semivalues by matrix arithmetic over the full ``2^n`` coalition table.

A semivalue with size weights ``w(s)`` (s = |S|, 0 <= s <= n-1) is

    φ_i = Σ_{S ⊆ N∖i} w(|S|) · (u(S ∪ i) − u(S))
        = Σ_{T ∋ i} w(|T|−1) · u(T)  −  Σ_{S ∌ i} w(|S|) · u(S).

With the table in coalition-index order (player j = bit j) both sums are over "bit i set" / "bit i
clear" halves: reshape the table to ``(2^(n-1-i), 2, 2^i, m)`` and sum the half. That is n strided sums
over the table — no loop over subsets, no index arrays per player.

Shapley: ``w(s) = s!(n−s−1)!/n! = 1 / (n · C(n−1, s))``. Banzhaf: ``w(s) = 1 / 2^(n−1)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import comb

from valuation.games.coalitions import popcount


def shapley_weights(n: int) -> np.ndarray:
    """``w(s) = s!(n−s−1)!/n!`` for s = 0..n−1."""
    s = np.arange(n)
    return 1.0 / (n * comb(n - 1, s, exact=False))


def banzhaf_weights(n: int) -> np.ndarray:
    """``w(s) = 1/2^(n−1)`` for s = 0..n−1."""
    return np.full(n, 0.5 ** (n - 1))


def _as_table(utilities_table: np.ndarray) -> tuple[np.ndarray, int, bool]:
    table = np.asarray(utilities_table, dtype=float)
    squeeze = table.ndim == 1
    if squeeze:
        table = table[:, None]
    if table.ndim != 2:
        raise ValueError(f"utilities table must be float[2^n] or float[2^n, m], got shape {table.shape}")
    total = table.shape[0]
    n = total.bit_length() - 1
    if total < 1 or 2**n != total:
        raise ValueError(f"utilities table must have 2^n rows, got {total}")
    return table, n, squeeze


def semivalue_from_table(utilities_table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``φ[n, m]`` of the semivalue with size weights ``weights[s]`` from a full table ``float[2^n, m]``.

    A 1-D table ``float[2^n]`` gives ``φ[n]``.
    """
    table, n, squeeze = _as_table(utilities_table)
    m = table.shape[1]
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must have length n = {n}, got {w.shape}")
    sizes = popcount(np.arange(2**n, dtype=np.int64))
    w_with = np.concatenate([[0.0], w])  # weight of T ∋ i, by |T|: w(|T|-1); |T| = 0 never has i
    w_without = np.concatenate([w, [0.0]])  # weight of S ∌ i, by |S|: w(|S|); |S| = n never lacks i
    a = table * w_with[sizes][:, None]
    b = table * w_without[sizes][:, None]
    phi = np.empty((n, m))
    for i in range(n):
        lo, hi = 2**i, 2 ** (n - 1 - i)
        a4 = a.reshape(hi, 2, lo, m)
        b4 = b.reshape(hi, 2, lo, m)
        phi[i] = a4[:, 1].sum(axis=(0, 1)) - b4[:, 0].sum(axis=(0, 1))
    return phi[:, 0] if squeeze else phi


def exact_shapley(utilities_table: np.ndarray) -> np.ndarray:
    """Exact Shapley values ``φ[n, m]`` from the full table ``float[2^n, m]`` (index = Σ_{j∈S} 2^j)."""
    _, n, _ = _as_table(utilities_table)
    return semivalue_from_table(utilities_table, shapley_weights(n))


def exact_banzhaf(utilities_table: np.ndarray) -> np.ndarray:
    """Exact Banzhaf values ``β[n, m]``: the mean marginal contribution over all 2^(n−1) coalitions."""
    _, n, _ = _as_table(utilities_table)
    return semivalue_from_table(utilities_table, banzhaf_weights(n))
