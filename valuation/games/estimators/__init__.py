"""Estimators behind one contract: ``approximate(game, method, budget, ...) -> ValuationResult``.

Methods (``METHODS``, from `valuation.games.methods`, which also says which are linear):

* ``exact`` — Shapley over all 2^n coalitions (matrix arithmetic; n <= 22). std err 0.
* ``permutation`` — Shapley by permutation sampling, orders in Latin-square blocks (position strata); std err
  measured from the samples; the budget counts distinct coalitions.
* ``regression`` — Shapley by size-stratified regression (KernelSHAP with one intercept per coalition size,
  paired coalitions when a pilot shows they pay, Neyman allocation over sizes); std err by linearisation;
  the budget counts distinct coalitions. The default sampled Shapley method of the market rules.
* ``banzhaf`` — exact over all coalitions when no budget/stopping rule is given and 2^n is within the
  default budget (or the game is a complete table); otherwise the MSR estimator.
* ``loo`` — leave-one-out, ``u(N) − u(N∖i)`` (n + 1 evaluations). std err 0.
* ``least_core`` — HiGHS LP; exact constraints (n ≤ 16), ``budget`` sampled ones, or (no budget, n ≤ 128)
  constraint generation with the blocking-coalition search as separation; ``info["epsilon"]``.

``budget`` is the maximum number of utility evaluations (coalition rows requested from the game; wrap
the game in ``CachedGame`` so repeats cost nothing). Sampled methods stop at
``MaxEvaluations(budget) | stopping``; with neither given they use ``default_budget(n) = 1000·n``.
Exact methods raise ``InputError`` when the budget cannot cover the evaluations they need.
All objectives are valued in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from valuation.errors import InputError
from valuation.games.estimators.banzhaf import banzhaf_exact, banzhaf_msr
from valuation.games.estimators.common import EXACT_MAX_PLAYERS, default_budget, full_table, make_rule
from valuation.games.estimators.exact import (
    banzhaf_weights,
    exact_banzhaf,
    exact_shapley,
    semivalue_from_table,
    shapley_weights,
)
from valuation.games.estimators.least_core import least_core
from valuation.games.estimators.loo import leave_one_out
from valuation.games.estimators.permutation import permutation_shapley
from valuation.games.estimators.regression import regression_shapley
from valuation.games.game import Game, TableGame
from valuation.games.methods import METHODS, check_method
from valuation.games.result import ValuationResult
from valuation.games.stopping import StoppingRule

__all__ = [
    "EXACT_MAX_PLAYERS",
    "METHODS",
    "approximate",
    "banzhaf_weights",
    "default_budget",
    "exact_banzhaf",
    "exact_shapley",
    "semivalue_from_table",
    "shapley_weights",
    "value_table_file",
]


def approximate(
    game: Game,
    method: str = "exact",
    budget: int | None = None,
    *,
    seed: int = 0,
    stopping: StoppingRule | None = None,
    progress: bool = False,
) -> ValuationResult:
    """Value every player of ``game`` for every objective with ``method`` (see the module docstring).

    Args:
        game: any ``Game`` (table, function, cached, grouped).
        method: one of ``METHODS``.
        budget: maximum utility evaluations (None: the method's own need / the default budget).
        seed: seeds the sampler (same seed, same result).
        stopping: extra stopping rule for sampled methods (combined with the budget by ``|``).
        progress: show a rich progress bar on stderr while sampling.
    """
    check_method(method)
    if budget is not None and int(budget) < 1:
        raise InputError(f"budget must be a positive number of evaluations, got {budget}", field="budget")
    n = len(game.players)
    if method == "exact":
        if budget is not None and budget < 2**n:
            raise InputError(
                f"exact Shapley needs all 2^{n} = {2**n} coalitions but the budget is {budget}: "
                "use a sampled method: --method regression (or permutation, banzhaf)",
                field="budget",
            )
        values = exact_shapley(full_table(game, "exact"))
        return ValuationResult("exact", game.players, game.objectives, values, np.zeros_like(values), budget, 2**n, {})
    if method == "loo":
        if budget is not None and budget < n + 1:
            raise InputError(f"leave-one-out needs n + 1 = {n + 1} evaluations, the budget is {budget}",
                             field="budget")
        return _with_budget(leave_one_out(game), budget)
    if method == "least_core":
        return least_core(game, budget=budget, seed=seed)
    if method == "banzhaf":
        complete_table = isinstance(game, TableGame) and game.is_complete()
        if budget is None and stopping is None and n <= EXACT_MAX_PLAYERS and (
            complete_table or 2**n <= default_budget(n)
        ):
            return banzhaf_exact(game)
        rule = make_rule(budget, stopping, n, method)
        return banzhaf_msr(game, rule, budget=budget, seed=seed, progress=progress)
    rule = make_rule(budget, stopping, n, method)
    if method == "regression":
        return regression_shapley(game, rule, budget=budget, seed=seed, progress=progress)
    return permutation_shapley(game, rule, budget=budget, seed=seed, progress=progress)


def value_table_file(
    path: str | Path,
    method: str = "exact",
    budget: int | None = None,
    *,
    players: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ValuationResult:
    """``approximate`` on the game stored in ``path`` (GAME.csv, or Parquet for ``*.parquet`` / ``*.pq``;
    `TableGame.from_file`): ``payoutsim shapley``. ``players`` fixes the player set and order.

    Raises:
        InputError: a bad table (naming the row) or a method/budget ``approximate`` refuses.
    """
    game = TableGame.from_file(path, players=players)
    return approximate(game, method, budget, seed=seed, progress=progress)


def _with_budget(result: ValuationResult, budget: int | None) -> ValuationResult:
    return replace(result, budget=budget)
