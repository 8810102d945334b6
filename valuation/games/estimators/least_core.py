"""The least core, solved as a linear program with scipy's HiGHS.

With ``v(S) = u(S) − u(∅)`` (so the empty coalition is worth 0, as Shapley's efficiency assumes), the
least core is the set of payoffs x minimising ε subject to

    Σ_{i∈S} x_i ≥ v(S) − ε   for every coalition ∅ ≠ S ≠ N   (no coalition gains more than ε by leaving)
    Σ_{i∈N} x_i = v(N)                                         (efficiency)

ε ≤ 0 means the core is non-empty. One LP per objective. All ``2^n − 2`` constraints are used when no
budget is given (n ≤ EXACT_CONSTRAINTS_MAX_PLAYERS = 16) or when the budget covers all coalitions;
otherwise ``budget − 2`` coalitions are drawn uniformly (each player in with probability ½, ∅ and N
rejected, duplicates dropped) and the LP is solved on those constraints only, so ε is a lower bound of
the true ε. The LP's solution is the vertex HiGHS returns (deterministic); the least core need not be a
single point. There is no sampling variance to report: ``std_errs`` are 0.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from valuation.errors import InputError
from valuation.games.coalitions import coalitions_of_indices
from valuation.games.estimators.common import evaluate, full_table
from valuation.games.game import Game
from valuation.games.result import ValuationResult

EXACT_CONSTRAINTS_MAX_PLAYERS = 16  # 2^16 − 2 LP rows; beyond, sample constraints with a budget


def least_core(game: Game, *, budget: int | None = None, seed: int = 0) -> ValuationResult:
    """Least-core payoffs per objective; ``info["epsilon"]`` lists the minimal ε per objective."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    info: dict = {}
    if budget is None or budget >= 2**n:
        if n > EXACT_CONSTRAINTS_MAX_PLAYERS:
            raise InputError(
                f"{n} players: the least core over all coalitions holds at most {EXACT_CONSTRAINTS_MAX_PLAYERS} "
                "players; give --budget N to sample N coalitions as constraints",
                field="budget",
            )
        table = full_table(game, "least_core")
        idx = np.arange(1, 2**n - 1, dtype=np.int64)
        masks = coalitions_of_indices(idx, n)
        u_empty, u_full, utils = table[0], table[-1], table[idx]
        n_evaluations = 2**n
        info["constraints"] = "exact"
    else:
        if budget < 3:
            raise InputError("budget too small: the sampled least core needs at least 3 evaluations",
                             field="budget")
        rng = np.random.default_rng(seed)
        draws = rng.random((budget - 2, n)) < 0.5
        sizes = draws.sum(axis=1)
        draws = draws[(sizes > 0) & (sizes < n)]
        _, first = np.unique(np.packbits(draws, axis=1), axis=0, return_index=True)
        masks = draws[np.sort(first)]
        ends = evaluate(game, np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
        u_empty, u_full = ends[0], ends[1]
        utils = evaluate(game, masks) if masks.shape[0] else np.zeros((0, m))
        n_evaluations = 2 + masks.shape[0]
        info["constraints"] = "sampled"
    info["n_constraints"] = int(masks.shape[0])

    values = np.zeros((n, m))
    epsilons: list[float] = []
    if n == 1:
        values[0] = u_full - u_empty
        epsilons = [0.0] * m
    else:
        # variables z = (x_1..x_n, ε); minimise ε
        c = np.zeros(n + 1)
        c[-1] = 1.0
        a_ub = -np.hstack([masks.astype(float), np.ones((masks.shape[0], 1))])
        a_eq = np.concatenate([np.ones(n), [0.0]])[None, :]
        for k in range(m):
            b_ub = -(utils[:, k] - u_empty[k])
            b_eq = [u_full[k] - u_empty[k]]
            res = linprog(
                c, A_ub=a_ub if masks.shape[0] else None, b_ub=b_ub if masks.shape[0] else None,
                A_eq=a_eq, b_eq=b_eq, bounds=[(None, None)] * (n + 1), method="highs",
            )
            if res.status == 3:  # unbounded: too few sampled constraints to pin ε down
                raise InputError(
                    f"the sampled least-core LP is unbounded for objective '{objectives[k]}' "
                    f"({masks.shape[0]} constraints): raise the budget",
                    field="budget",
                )
            if not res.success:
                raise RuntimeError(f"least-core LP failed for objective '{objectives[k]}': {res.message}")
            values[:, k] = res.x[:n] + 0.0  # + 0.0 turns -0.0 into 0.0
            epsilons.append(float(res.x[n]) + 0.0)
    info["epsilon"] = epsilons
    return ValuationResult("least_core", players, objectives, values, np.zeros((n, m)), budget, n_evaluations,
                           info)
