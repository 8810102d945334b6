"""Players' roles in a game: null players, interchangeable (symmetric) players, equal treatment of equals.

All functions read a full scalar table ``float[2^n]`` in coalition-index order (player j = bit j;
`valuation.games.coalitions`). Utilities are compared with the tolerance ``SNAP_RELATIVE · max(1, max |v|)``:
two utilities that close are the same utility (float rounding, not data).
"""

from __future__ import annotations

import numpy as np

SNAP_RELATIVE = 1e-12  # relative tolerance under which two utilities (or a value and 0) count as equal


def symmetric_classes(table: np.ndarray) -> list[list[int]]:
    """Classes of interchangeable players of a full scalar table ``float[2^n]`` (coalition-index order).

    i ~ j when ``v(S ∪ i) = v(S ∪ j)`` for every S ⊆ N∖{i, j} (within ``1e-12 · max |v|``); an
    equivalence relation, returned as sorted index lists in order of their smallest member.
    """
    v = np.asarray(table, dtype=float)
    n = v.size.bit_length() - 1
    tol = SNAP_RELATIVE * max(1.0, float(np.max(np.abs(v))))
    idx = np.arange(v.size, dtype=np.int64)
    classes: list[list[int]] = []
    assigned = [False] * n
    for i in range(n):
        if assigned[i]:
            continue
        cls = [i]
        assigned[i] = True
        for j in range(i + 1, n):
            if assigned[j]:
                continue
            rest = idx[((idx >> i) & 1 == 0) & ((idx >> j) & 1 == 0)]
            if np.all(np.abs(v[rest | (1 << i)] - v[rest | (1 << j)]) <= tol):
                cls.append(j)
                assigned[j] = True
        classes.append(cls)
    return classes


def null_players(table: np.ndarray) -> list[bool]:
    """Per player of a full scalar table ``float[2^n]``: ``v(S ∪ i) = v(S)`` for every S ∌ i (within
    ``1e-12 · max |v|``)."""
    v = np.asarray(table, dtype=float)
    n = v.size.bit_length() - 1
    tol = SNAP_RELATIVE * max(1.0, float(np.max(np.abs(v))))
    idx = np.arange(v.size, dtype=np.int64)
    out = []
    for i in range(n):
        rest = idx[(idx >> i) & 1 == 0]
        out.append(bool(np.all(np.abs(v[rest | (1 << i)] - v[rest]) <= tol)))
    return out


def symmetrise(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Replace each class of interchangeable players' values by the class mean.

    For the least core this picks a point that treats equals equally: the least core is convex and
    invariant under permutations of interchangeable players, so the class average of an LP vertex is
    still in it (same ε, same efficiency).
    """
    out = np.asarray(values, dtype=float).copy()
    for cls in symmetric_classes(table):
        if len(cls) > 1:
            out[cls] = out[cls].mean()
    return out
