"""Coalitions as bit masks: the indexing every game, table and estimator of the engine shares.

A coalition of n players is a row of a boolean matrix ``bool[k, n]`` (column j = player j present).
Coalition ``S`` has index ``Σ_{j∈S} 2^j`` (player j = bit j), so ``all_coalitions(n)[i]`` are the binary
digits of ``i`` and a complete table is an array ``float[2^n, m]`` in that order. Indices are int64 bit
masks, hence at most `MAX_TABLE_PLAYERS` players where an index is needed.

Labels (CSV cells, messages) are member names joined by `SEPARATOR` in player order; ``""`` is ∅.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from valuation.errors import InputError
from valuation.text import name_problem

SEPARATOR = "+"
MAX_TABLE_PLAYERS = 62  # coalition indices are int64 bit masks

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def all_coalitions(n: int) -> np.ndarray:
    """All ``2^n`` coalitions as ``bool[2^n, n]``; row i holds the binary digits of i (player j = bit j)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return coalitions_of_indices(np.arange(2**n, dtype=np.int64), n)


def coalitions_of_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """The coalitions ``bool[k, n]`` with coalition indices ``int64[k]`` (inverse of `coalition_index`)."""
    idx = np.asarray(indices, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1).astype(bool)


def coalition_index(coalitions: np.ndarray) -> np.ndarray:
    """Index ``Σ_{j∈S} 2^j`` of each row of ``bool[k, n]`` (n <= 62) as ``int64[k]``."""
    masks = np.asarray(coalitions, dtype=bool)
    if masks.ndim != 2:
        raise ValueError(f"coalitions must be a 2-D boolean matrix, got shape {masks.shape}")
    n = masks.shape[1]
    if n > MAX_TABLE_PLAYERS:
        raise ValueError(f"coalition_index supports at most {MAX_TABLE_PLAYERS} players, got {n}")
    weights = np.left_shift(np.int64(1), np.arange(n, dtype=np.int64))
    return masks.astype(np.int64) @ weights


def coalition_label(mask_row: np.ndarray | Sequence[bool], players: Sequence[str]) -> str:
    """Human/CSV label of one coalition: member names joined by ``+`` in player order; ``""`` for ∅."""
    row = np.asarray(mask_row, dtype=bool)
    return SEPARATOR.join(p for p, present in zip(players, row, strict=True) if present)


def label_of_index(index: int, players: Sequence[str]) -> str:
    """``coalition_label`` of the coalition with index ``index`` (bit j set = ``players[j]`` present)."""
    return SEPARATOR.join(p for j, p in enumerate(players) if (index >> j) & 1)


def describe_coalition(label: str) -> str:
    """``'a+b'`` for a label, ``'' (the empty coalition)`` for ∅ — for messages."""
    return f"'{label}'" if label else "'' (the empty coalition)"


def popcount(indices: np.ndarray) -> np.ndarray:
    """Number of set bits of each non-negative int64 (coalition size from a coalition index)."""
    x = np.asarray(indices, dtype=np.uint64)
    counts = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        counts += _BYTE_POPCOUNT[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.intp)]
    return counts


def check_masks(coalitions: np.ndarray, n: int) -> np.ndarray:
    """``coalitions`` as ``bool[k, n]``; ``ValueError`` unless it is a 2-D matrix with n columns."""
    masks = np.asarray(coalitions)
    if masks.ndim != 2 or masks.shape[1] != n:
        raise ValueError(f"coalitions must have shape (k, {n}), got {masks.shape}")
    return masks.astype(bool, copy=False)


def validate_names(names: Sequence[str], kind: str) -> tuple[str, ...]:
    """Check player/objective names: non-empty strings, no control characters, unique, no ``+`` (players).
    Returns a tuple."""
    out = tuple(str(x) for x in names)
    seen: set[str] = set()
    for name in out:
        if not name.strip():
            raise InputError(f"empty {kind} name", field=kind)
        problem = name_problem(name)
        if problem is not None:
            raise InputError(f"{kind} name {name!r} {problem}", field=kind)
        if kind == "player" and SEPARATOR in name:
            raise InputError(f"player name {name!r} contains '{SEPARATOR}' (the coalition separator)")
        if name in seen:
            raise InputError(f"duplicated {kind} name {name!r}", field=kind)
        seen.add(name)
    return out
