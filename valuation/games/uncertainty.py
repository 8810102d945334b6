"""Values with their uncertainty: a method run on every replicate game (`valuation.games.replicates`).

For replicate tables u_1..u_B (bootstrap over the eval items, or normal noise) the value of player i is
computed on each, φ_i(u_b), and summarised as

* standard error: the standard deviation of φ_i(u_b) over b (ddof = 1);
* interval: the central ``level`` percentile interval of φ_i(u_b) (`percentile_interval`).

A sampled estimator (``regression``, ``permutation``, sampled ``banzhaf``) is re-seeded on every replicate (seed + 1 + b),
so its own sampling noise is part of the spread: the standard error covers the eval set *and* the
estimator. Exact linear methods on complete tables value all replicates in one pass (`Replicates.stacked_game`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from valuation.games.estimators import approximate
from valuation.games.game import Game, GroupedGame
from valuation.games.replicates import Replicates, percentile_interval
from valuation.games.result import ValuationResult

#: Methods that are exact and linear on a complete table without a budget: every replicate in one pass.
EXACT_LINEAR_METHODS = frozenset({"exact", "banzhaf", "loo"})
DEFAULT_LEVEL = 0.95


def replicate_values(
    replicates: Replicates,
    method: str = "exact",
    budget: int | None = None,
    *,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> np.ndarray:
    """``float[B, n, k]``: `method`'s values on every replicate (players, or the member `groups` of
    `valuation.games.game.GroupedGame`, in their order)."""

    def wrap(game: Game) -> Game:
        return GroupedGame(game, groups) if groups else game

    complete = len(replicates.coalitions) == 2 ** len(replicates.players)
    if method in EXACT_LINEAR_METHODS and budget is None and complete:
        stacked = approximate(wrap(replicates.stacked_game()), method)
        return replicates.unstack(stacked.values)
    return np.stack(
        [
            approximate(wrap(replicates.game(b)), method, budget, seed=seed + 1 + b).values
            for b in range(replicates.n_replicates)
        ]
    )


def with_interval(
    result: ValuationResult, samples: np.ndarray, *, kind: str, level: float = DEFAULT_LEVEL, seed: int = 0
) -> ValuationResult:
    """`result` with standard errors and ``level`` intervals from replicate values ``samples`` ``[B, n, k]``
    (module docstring); ``info["interval"]`` says how they were found."""
    samples = np.asarray(samples, dtype=float)
    lo, hi = percentile_interval(samples, level)
    std_errs = samples.std(axis=0, ddof=1) if samples.shape[0] > 1 else np.full(result.values.shape, np.nan)
    info = {
        **result.info,
        "interval": {"level": level, "replicates": int(samples.shape[0]), "resampled": kind, "seed": seed},
    }
    return replace(result, std_errs=std_errs, lo=lo, hi=hi, info=info)


def valued_with_interval(
    result: ValuationResult,
    replicates: Replicates,
    *,
    budget: int | None = None,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
    level: float = DEFAULT_LEVEL,
) -> ValuationResult:
    """`with_interval` of `result` from `replicate_values` with the result's own method."""
    samples = replicate_values(replicates, result.method, budget, seed=seed, groups=groups)
    return with_interval(result, samples, kind=replicates.kind, level=level, seed=replicates.seed)


__all__ = ["DEFAULT_LEVEL", "replicate_values", "valued_with_interval", "with_interval"]
