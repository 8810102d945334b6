"""Permutation-sampling Shapley with antithetic pairs and measured-variance stopping.

For a random order π of the players, the marginal vector ``Δ_π[i] = u(P_π(i) ∪ i) − u(P_π(i))``
(``P_π(i)``: players before i) is an unbiased sample of φ. We draw π together with its reverse (an
antithetic pair: a player early in one is late in the other, which cancels much of the size effect)
and treat the pair's average ``X = (Δ_π + Δ_rev(π)) / 2`` as one sample. The estimate is the mean of
the X's; its standard error is ``std(X, ddof=1) / sqrt(#pairs)``, per player and objective.

Cost: ``u(∅)`` and ``u(N)`` once (2 evaluations), then ``2(n−1)`` evaluations per pair (the inner
prefixes of both orders, in one game call). The stopping rule is checked after each pair, and a pair is
only drawn if the rule's remaining budget covers it. Every sample sums to ``u(N) − u(∅)``, so the
estimate is efficient exactly.
"""

from __future__ import annotations

import numpy as np

from valuation.errors import InputError
from valuation.estimators._common import RunningMoments, evaluate, new_state, progress_bar
from valuation.game import Game
from valuation.result import ValuationResult
from valuation.stopping import StoppingRule


def permutation_shapley(
    game: Game,
    rule: StoppingRule,
    *,
    budget: int | None,
    seed: int = 0,
    progress: bool = False,
) -> ValuationResult:
    """Estimate Shapley values of ``game`` by antithetic permutation sampling until ``rule`` stops."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    state = new_state(n, m)
    ends = evaluate(game, np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
    state.n_evaluations = 2
    u_empty, u_full = ends[0], ends[1]
    info: dict = {}
    if n <= 1:  # one player: φ = u(N) − u(∅), no sampling needed
        values = (u_full - u_empty)[None, :][:n]
        info.update(converged=True, stopped_by="single_player", n_samples=0)
        return ValuationResult("permutation", players, objectives, values, np.zeros((n, m)), budget, 2, info)

    pair_cost = 2 * (n - 1)
    remaining = rule.remaining(state)
    if remaining is not None and remaining < 2 * pair_cost:
        raise InputError(
            f"budget too small: permutation sampling with {n} players needs at least "
            f"{2 + 2 * pair_cost} evaluations (u(∅), u(N) and two antithetic pairs of {pair_cost})",
            field="budget",
        )
    if budget is not None and budget >= 2**n:
        info["note"] = f"2^{n} = {2**n} <= budget: the exact method would be cheaper"

    rng = np.random.default_rng(seed)
    moments = RunningMoments((n, m))
    sizes = np.arange(1, n)[:, None]  # prefix lengths 1..n-1
    stopped_by = None
    total = remaining if remaining is not None else None
    with progress_bar(progress, f"permutation Shapley ({n} players)", total) as advance:
        while True:
            remaining = rule.remaining(state)
            if remaining is not None and remaining < pair_cost:
                stopped_by = "max_evaluations"
                break
            perm = rng.permutation(n)
            rank = np.empty(n, dtype=np.int64)
            rank[perm] = np.arange(n)
            masks = np.concatenate([rank[None, :] < sizes, (n - 1 - rank)[None, :] < sizes])
            inner = evaluate(game, masks)
            marginals = np.zeros((n, m))
            for chain_inner, order_rank in ((inner[: n - 1], rank), (inner[n - 1 :], n - 1 - rank)):
                chain = np.concatenate([u_empty[None, :], chain_inner, u_full[None, :]])
                steps = np.diff(chain, axis=0)  # steps[j] = marginal of the player at position j
                marginals += steps[order_rank]
            moments.add(marginals / 2.0)
            state.n_evaluations += pair_cost
            state.n_samples += 1
            state.std_errs = moments.std_err
            advance(pair_cost)
            stopped_by = rule.stop_reason(state)
            if stopped_by is not None:
                break
    info.update(converged="standard_error" in str(stopped_by).split("&"),
                stopped_by=stopped_by, n_samples=moments.count, antithetic=True)
    return ValuationResult(
        "permutation", players, objectives, moments.mean.copy(), moments.std_err, budget,
        state.n_evaluations, info,
    )
