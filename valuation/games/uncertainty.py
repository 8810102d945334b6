"""Values with their uncertainty: a method run on every replicate game (`valuation.games.replicates`).

For replicate tables u_1..u_B (bootstrap over the eval items, or normal noise) the value of player i is
computed on each, φ_i(u_b), and summarised as

* standard error: the standard deviation of φ_i(u_b) over b (ddof = 1);
* interval: the central ``level`` percentile interval of φ_i(u_b) (`percentile_interval`).

A sampled estimator (``regression``, ``permutation``, sampled ``banzhaf``) is re-seeded on every replicate (seed + 1 + b),
so its own sampling noise is part of the spread: the standard error covers the eval set *and* the
estimator. Exact linear methods on complete tables value all replicates in one pass (`Replicates.stacked_game`).
On the compact game's replicates (`valuation.coalition_utility.compact.PairReplicates`, no table) a sampled
linear method also runs once, on the stacked game, and its own standard errors are added in quadrature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from statistics import NormalDist

import numpy as np

from valuation.games.estimators import approximate
from valuation.games.estimators.regression import regression_values
from valuation.games.game import Game, GroupedGame, empty_and_grand
from valuation.games.methods import LINEAR_METHODS
from valuation.games.replicates import ReplicateGames, percentile_interval
from valuation.games.result import ValuationResult

#: Methods that are exact and linear on a complete table without a budget: every replicate in one pass.
EXACT_LINEAR_METHODS = frozenset({"exact", "banzhaf", "loo"})
DEFAULT_LEVEL = 0.95


def replicate_values(
    replicates: ReplicateGames,
    method: str = "exact",
    budget: int | None = None,
    *,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
    common_coalitions: bool = False,
    design: np.ndarray | None = None,
) -> np.ndarray:
    """``float[B, n, k]``: `method`'s values on every replicate (players, or the member `groups` of
    `valuation.games.game.GroupedGame`, in their order).

    ``common_coalitions``: a sampled linear method values every replicate in one pass on the stacked game
    (the same sampled coalitions for all; `budget` evaluations), instead of once per replicate re-seeded:
    the spread then holds the eval set's uncertainty only (`with_interval`'s ``estimator_se`` adds the
    estimator's). With a regression `design` (the point estimate's coalitions, ``ValuationResult.design``)
    no sampling is repeated: `design_values`."""

    def wrap(game: Game) -> Game:
        return GroupedGame(game, groups) if groups else game

    if method in EXACT_LINEAR_METHODS and budget is None and replicates.is_complete():
        stacked = approximate(wrap(replicates.stacked_game()), method)
        return replicates.unstack(stacked.values)
    if common_coalitions and method in LINEAR_METHODS:
        stacked = wrap(replicates.stacked_game())
        return replicates.unstack(design_values(stacked, method, budget, seed=seed, design=design))
    return np.stack(
        [
            approximate(wrap(replicates.game(b)), method, budget, seed=seed + 1 + b).values
            for b in range(replicates.n_replicates)
        ]
    )


def design_values(
    game: Game, method: str, budget: int | None, *, seed: int = 0, design: np.ndarray | None = None
) -> np.ndarray:
    """``float[n, m]`` values of a (stacked, many-objective) game: with a ``regression`` `design` the linear
    solve on exactly those coalitions (`valuation.games.estimators.regression.regression_values`: the same
    coalitions as the point estimate, memory ``k × m``), else `method` with `budget` evaluations and `seed`."""
    if method == "regression" and design is not None and len(design):
        ends = empty_and_grand(game)
        return regression_values(design, np.asarray(game(design), dtype=float), ends[0], ends[1])
    return approximate(game, method, budget, seed=seed).values


def with_interval(
    result: ValuationResult,
    samples: np.ndarray,
    *,
    kind: str,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    estimator_se: np.ndarray | None = None,
) -> ValuationResult:
    """`result` with standard errors and ``level`` intervals from replicate values ``samples`` ``[B, n, k]``
    (module docstring); ``info["interval"]`` says how they were found.

    ``estimator_se``: the sampling estimator's own standard errors when the replicates shared its sampled
    coalitions (`replicate_values` with ``common_coalitions``): added in quadrature, ``se² = sd(φ_b)² +
    se_est²``, and each side of the percentile interval widened the same way, ``gap' = √(gap² + (z·se_est)²)``
    with z the normal quantile of `level`."""
    samples = np.asarray(samples, dtype=float)
    lo, hi = percentile_interval(samples, level)
    std_errs = samples.std(axis=0, ddof=1) if samples.shape[0] > 1 else np.full(result.values.shape, np.nan)
    interval: dict = {"level": level, "replicates": int(samples.shape[0]), "resampled": kind, "seed": seed}
    if estimator_se is not None:
        est = np.nan_to_num(np.asarray(estimator_se, dtype=float), nan=0.0)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        values = np.asarray(result.values, dtype=float)
        lo = values - np.hypot(values - lo, z * est)
        hi = values + np.hypot(hi - values, z * est)
        std_errs = np.hypot(std_errs, est)
        interval["estimator"] = "the replicates share the estimator's sampled coalitions; its standard errors added"
        interval["estimator_std_err_max"] = [float(x) for x in est.max(axis=0)]  # per objective
    info = {**result.info, "interval": interval}
    return replace(result, std_errs=std_errs, lo=lo, hi=hi, info=info)


def valued_with_interval(
    result: ValuationResult,
    replicates: ReplicateGames,
    *,
    budget: int | None = None,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
    level: float = DEFAULT_LEVEL,
) -> ValuationResult:
    """`with_interval` of `result` from `replicate_values` with the result's own method. On replicates that
    are not complete tables (the compact game's) a sampled linear method runs once on the stacked game with
    the point estimate's evaluations (``result.n_evaluations``) and its standard errors are added."""
    sampled = not replicates.is_complete() and result.method in LINEAR_METHODS and result.method != "exact"
    if sampled:
        used = max(int(result.n_evaluations), 2)
        samples = replicate_values(
            replicates, result.method, used, seed=seed, groups=groups, common_coalitions=True, design=result.design
        )
        return with_interval(
            result, samples, kind=replicates.kind, level=level, seed=replicates.seed, estimator_se=result.std_errs
        )
    samples = replicate_values(replicates, result.method, budget, seed=seed, groups=groups)
    return with_interval(result, samples, kind=replicates.kind, level=level, seed=replicates.seed)


__all__ = ["DEFAULT_LEVEL", "design_values", "replicate_values", "valued_with_interval", "with_interval"]
