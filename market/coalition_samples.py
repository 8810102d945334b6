"""Sampled coalitions of a member game too large to enumerate (more than 16 members: 2^n coalitions).

A run of more than `valuation.games.stability.CORE_MAX_MEMBERS` members keeps no coalition table in the
ledger, only its compact game (`valuation.coalition_utility.compact.PairGame`); its coalitions are shown
from samples, evaluated on the member game (`market.read_model.RunData.member_game`):

* `sample_masks`: ∅, the grand coalition N, every singleton {i}, every leave-one-out N∖{i}, and `count`
  coalitions drawn with a uniformly drawn size in 2 … n−2 and then uniformly among the coalitions of that
  size (seeded);
* `marginal_samples`: the marginal contributions ``v(S ∪ i) − v(S)`` of one member on coalitions
  S ⊆ N∖{i} drawn ``per_size`` at each size s = 0 … n−1 (one at s = 0 and s = n−1, where there is only
  one). The Shapley value is the mean over sizes of the mean marginal contribution at that size,
  ``φ_i = (1/n) Σ_s E[v(S ∪ i) − v(S) | |S| = s]``, so the stratified estimate is
  ``φ̂_i = Σ_s (1/n) · mean_s(marginal)``: each sampled row gets the weight ``1 / (n · m_s)`` (m_s rows at
  its size) and the weighted marginals sum to φ̂_i.

Everything is a pure function of a `valuation.games.game.Game` on member coalitions ``bool[k, n]`` (no
ledger, no Streamlit), seeded for the same rows on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from valuation.games.game import Game

#: A coalition label lists its members up to this many; larger ones are written by who is left out, or
#: abbreviated (the full list is in the ``members`` column).
LABEL_MEMBERS = 6
KINDS = ("base", "grand", "singleton", "leave-one-out", "sampled")


def coalition_label(names: Sequence[str], members: Sequence[str]) -> str:
    """A short readable label of the coalition `names` of `members`: ``∅ (base model)``, ``a+b+c``,
    ``all but a+b`` or ``40 members: a+b+c+d+e+f+… (+34 more)``."""
    if not names:
        return "∅ (base model)"
    if len(names) <= LABEL_MEMBERS:
        return "+".join(names)
    chosen = set(names)
    out = [m for m in members if m not in chosen]
    if not out:
        return f"all {len(members)} members"
    if len(out) <= LABEL_MEMBERS:
        return "all but " + "+".join(out)
    return f"{len(names)} members: " + "+".join(names[:LABEL_MEMBERS]) + f"+… (+{len(names) - LABEL_MEMBERS} more)"


def sample_masks(n: int, count: int, seed: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(bool[k, n] masks, kind per row)``: ∅, N, the n singletons, the n leave-one-outs and `count`
    coalitions of a size drawn uniformly in 2 … n−2 (module docstring; seeded, duplicates kept)."""
    if n < 1:
        raise ValueError("a game needs at least one member")
    eye = np.eye(n, dtype=bool)
    rows = [np.zeros((1, n), dtype=bool), np.ones((1, n), dtype=bool), eye, ~eye]
    kinds = ["base", "grand", *["singleton"] * n, *["leave-one-out"] * n]
    if n >= 4 and count > 0:
        rng = np.random.default_rng(seed)
        sizes = rng.integers(2, n - 1, size=count)  # 2 … n−2
        drawn = np.zeros((count, n), dtype=bool)
        for r, size in enumerate(sizes):
            drawn[r, rng.choice(n, size=int(size), replace=False)] = True
        rows.append(drawn)
        kinds += ["sampled"] * count
    return np.concatenate(rows, axis=0), tuple(kinds)


def sampled_coalition_rows(
    game: Game, members: Sequence[str], weights: np.ndarray, *, count: int = 200, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (sampled coalition, objective), plus ``weighted`` (Σ_k a_k u_k with `weights` aligned
    with ``game.objectives``) when the game has several objectives: ``{index, kind, coalition, members,
    size, objective, utility, created}`` with ``created = v(S) − v(∅)`` (`sample_masks` for the rows)."""
    members = list(members)
    masks, kinds = sample_masks(len(members), count, seed)
    utilities = np.asarray(game(masks), dtype=float)
    objectives = list(game.objectives)
    columns = [utilities[:, k] for k in range(len(objectives))]
    if len(objectives) > 1:
        objectives.append("weighted")
        columns.append(utilities @ np.asarray(weights, dtype=float))
    rows = []
    for r, (mask, kind) in enumerate(zip(masks, kinds, strict=True)):
        names = [m for m, inside in zip(members, mask, strict=True) if inside]
        label, full = coalition_label(names, members), "+".join(names) if names else "∅"
        for objective, col in zip(objectives, columns, strict=True):
            rows.append(
                {
                    "index": r,
                    "kind": kind,
                    "coalition": label,
                    "members": full,
                    "size": len(names),
                    "objective": objective,
                    "utility": float(col[r]),
                    "created": float(col[r] - col[0]),
                }
            )
    return rows


def marginal_samples(
    game: Game, members: Sequence[str], member: str, weights: np.ndarray, *, per_size: int = 8, seed: int = 0
) -> list[dict[str, Any]]:
    """The sampled marginal contributions of `member` on the scalar game ``game(S) @ weights``: rows
    ``{coalition, members, size, before, after, marginal, weight, contribution}`` for `per_size`
    coalitions S ⊆ N∖{i} at each size (module docstring); the contributions sum to the stratified
    estimate of φ_i."""
    members = list(members)
    n, i = len(members), members.index(member)
    others = np.array([j for j in range(n) if j != i], dtype=int)
    rng = np.random.default_rng([seed, i])
    masks, sizes = [], []
    for size in range(n):
        draws = 1 if size in (0, n - 1) else per_size
        for _ in range(draws):
            mask = np.zeros(n, dtype=bool)
            mask[rng.choice(others, size=size, replace=False)] = True
            masks.append(mask)
            sizes.append(size)
    before_masks = np.array(masks, dtype=bool).reshape(len(masks), n)
    after_masks = before_masks.copy()
    after_masks[:, i] = True
    values = np.asarray(game(np.concatenate([before_masks, after_masks])), dtype=float) @ np.asarray(weights, float)
    before, after = values[: len(masks)], values[len(masks) :]
    counts = np.bincount(np.array(sizes), minlength=n)
    rows = []
    for r, size in enumerate(sizes):
        names = [m for m, inside in zip(members, before_masks[r], strict=True) if inside]
        weight = 1.0 / (n * counts[size])
        marginal = float(after[r] - before[r])
        rows.append(
            {
                "coalition": "∅" if not names else coalition_label(names, members),
                "members": "+".join(names) if names else "∅",
                "size": size,
                "before": float(before[r]),
                "after": float(after[r]),
                "marginal": marginal,
                "weight": weight,
                "contribution": weight * marginal,
            }
        )
    return rows
