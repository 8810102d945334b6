"""Banzhaf values: exact over all coalitions, or the maximum-sample-reuse (MSR) estimator.

Banzhaf: ``β_i = 2^−(n−1) Σ_{S ⊆ N∖i} (u(S ∪ i) − u(S)) = E[u(S) | i ∈ S] − E[u(S) | i ∉ S]`` for S
uniform over all coalitions.

MSR (Wang & Jia, "Data Banzhaf", 2023): draw coalitions S uniformly (each player in with probability
½), evaluate u(S) once, and reuse every sample for every player:
``β̂_i = mean{u(S): i ∈ S} − mean{u(S): i ∉ S}``, standard error
``sqrt(var_in / n_in + var_out / n_out)`` (inf until each side has 2 samples). One evaluation per
sample; samples are drawn in batches of ``BATCH`` (capped by the remaining budget) and the stopping
rule is checked after each batch.
"""

from __future__ import annotations

import numpy as np

from valuation.errors import InputError
from valuation.games.estimators.common import evaluate, full_table, new_state, progress_bar
from valuation.games.estimators.exact import exact_banzhaf
from valuation.games.game import Game
from valuation.games.result import ValuationResult
from valuation.games.stopping import StoppingRule

BATCH = 64


def banzhaf_exact(game: Game) -> ValuationResult:
    """Exact Banzhaf values from all 2^n coalitions."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    table = full_table(game, "banzhaf")
    values = exact_banzhaf(table)
    return ValuationResult(
        "banzhaf", players, objectives, values, np.zeros_like(values), None, table.shape[0],
        {"estimator": "exact"},
    )


def banzhaf_msr(
    game: Game,
    rule: StoppingRule,
    *,
    budget: int | None,
    seed: int = 0,
    progress: bool = False,
) -> ValuationResult:
    """Estimate Banzhaf values with the MSR estimator until ``rule`` stops."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    state = new_state(n, m)
    remaining = rule.remaining(state)
    if remaining is not None and remaining < 4:
        raise InputError("budget too small: the Banzhaf MSR estimator needs at least 4 evaluations",
                         field="budget")
    info: dict = {"estimator": "msr"}
    if budget is not None and budget >= 2**n:
        info["note"] = f"2^{n} = {2**n} <= budget: the exact method would be cheaper"
    rng = np.random.default_rng(seed)
    # Running sums of (u - shift) split by membership; the shift (first batch mean) limits cancellation.
    shift: np.ndarray | None = None
    count_in = np.zeros(n)
    sum_in = np.zeros((n, m))
    sq_in = np.zeros((n, m))
    sum_all = np.zeros(m)
    sq_all = np.zeros(m)
    stopped_by = None
    with progress_bar(progress, f"Banzhaf MSR ({n} players)", remaining) as advance:
        while True:
            remaining = rule.remaining(state)
            size = BATCH if remaining is None else min(BATCH, remaining)
            if size < 1:
                stopped_by = "max_evaluations"
                break
            masks = rng.random((size, n)) < 0.5
            utils = evaluate(game, masks)
            if shift is None:
                shift = utils.mean(axis=0)
            centred = utils - shift
            membership = masks.astype(float)
            count_in += membership.sum(axis=0)
            sum_in += membership.T @ centred
            sq_in += membership.T @ centred**2
            sum_all += centred.sum(axis=0)
            sq_all += (centred**2).sum(axis=0)
            state.n_evaluations += size
            state.n_samples += size
            values, std_errs = _msr_stats(state.n_samples, count_in, sum_in, sq_in, sum_all, sq_all)
            state.std_errs = std_errs
            advance(size)
            stopped_by = rule.stop_reason(state)
            if stopped_by is not None:
                break
    values, std_errs = _msr_stats(state.n_samples, count_in, sum_in, sq_in, sum_all, sq_all)
    info.update(converged="standard_error" in str(stopped_by).split("&"), stopped_by=stopped_by,
                n_samples=state.n_samples)
    return ValuationResult("banzhaf", players, objectives, values, std_errs, budget, state.n_evaluations, info)


def _msr_stats(
    total: int,
    count_in: np.ndarray,
    sum_in: np.ndarray,
    sq_in: np.ndarray,
    sum_all: np.ndarray,
    sq_all: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    c_in = count_in[:, None]
    c_out = total - c_in
    sum_out = sum_all[None, :] - sum_in
    sq_out = sq_all[None, :] - sq_in
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_in = np.where(c_in > 0, sum_in / c_in, 0.0)
        mean_out = np.where(c_out > 0, sum_out / c_out, 0.0)
        var_in = np.where(c_in > 1, (sq_in - c_in * mean_in**2) / (c_in - 1), np.inf)
        var_out = np.where(c_out > 1, (sq_out - c_out * mean_out**2) / (c_out - 1), np.inf)
        std_errs = np.sqrt(np.maximum(var_in, 0.0) / c_in + np.maximum(var_out, 0.0) / c_out)
    std_errs = np.where((c_in > 1) & (c_out > 1), std_errs, np.inf)
    return mean_in - mean_out, std_errs
