"""The least core, solved as a linear program with scipy's HiGHS.

With ``v(S) = u(S) − u(∅)`` (so the empty coalition is worth 0, as Shapley's efficiency assumes), the
least core is the set of payoffs x minimising ε subject to

    Σ_{i∈S} x_i ≥ v(S) − ε   for every coalition ∅ ≠ S ≠ N   (no coalition gains more than ε by leaving)
    Σ_{i∈N} x_i = v(N)                                         (efficiency)

ε ≤ 0 means the core is non-empty. One LP per objective. Which constraints:

* **exact** — all ``2^n − 2`` when no budget is given and n ≤ EXACT_CONSTRAINTS_MAX_PLAYERS = 16, or when
  the budget covers all coalitions;
* **sampled** — with a budget below ``2^n``: ``budget − 2`` coalitions drawn uniformly (each player in
  with probability ½, ∅ and N rejected, duplicates dropped); ε is a lower bound of the true ε;
* **generated** — no budget and 16 < n ≤ GENERATION_MAX_PLAYERS = 128: constraint generation. The LP is
  solved on a working set (every {i}, every N∖{i}, 4n random coalitions of uniform size, the prefixes of
  the members ordered by their value alone and of `CHAINS` random orders); then the blocking-coalition
  search (`valuation.games.search.search_blocking`, threshold = the current ε, `SEPARATION_BUDGET`
  evaluations, a new seed each round, climbing first from the last round's additions) is the separation
  oracle: the violating local maxima and the most violating coalitions are added and the LP solved
  again. The largest excess the search sees at the LP's x is ``ε + gap``; since x is efficient, the true
  ε lies in ``[ε, ε + gap]`` as far as the search sees. **Converged** when a round's search and then a
  confirming one with `CONFIRM_BUDGET` evaluations see ``gap ≤ GENERATION_GAP · max |v'(S)|`` (exactly 0
  when the search was exhaustive, small n). Not converged within `GENERATION_MAX_ROUNDS` rounds or
  `GENERATION_TIME_CAP_S` seconds: `least_core` raises `InputError` naming the limits, unless
  ``strict=False``, which returns the last LP's answer with ``info["converged"]`` False (its ε still a
  lower bound: ε > 0 proves the core empty). The separation is heuristic: ε is a lower bound of the true
  least-core ε. ``info``: ``rounds``, ``gap`` and ``search_examined`` (the last search's K) per
  objective, ``converged``, ``n_constraints`` and ``separation``. Measured at n = 64 on 2 shared cores:
  an additive game with a planted synergy in 0.2 s (1 round), ``√(w(S))`` in 2 s (48 rounds), a
  compact-like game (24 pairs, log σ of summed log-ratios) in 8–11 s (87 rounds); noisy saturating games
  can reach the 20 s cap (`payoutsim` then names the alternatives).

The LP's solution is the vertex HiGHS returns (deterministic); the least core need not be a single point.
There is no sampling variance to report: ``std_errs`` are 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from valuation.errors import InputError
from valuation.games.coalitions import coalitions_of_indices
from valuation.games.estimators.common import evaluate, full_table
from valuation.games.game import Game
from valuation.games.result import ValuationResult
from valuation.games.search import DEFAULT_SEARCH_BUDGET, random_coalitions, search_blocking

EXACT_CONSTRAINTS_MAX_PLAYERS = 16  # 2^16 − 2 LP rows; beyond, constraint generation or sampled constraints
GENERATION_MAX_PLAYERS = 128
GENERATION_MAX_ROUNDS = 500
GENERATION_TIME_CAP_S = 20.0  # all objectives together
SEPARATION_BUDGET = 5_000  # search evaluations per round
CONFIRM_BUDGET = DEFAULT_SEARCH_BUDGET  # the search that must find nothing before stopping
CHAINS = 4  # random orders whose prefixes seed the working set
KEEP_FOREVER = -(2**62)
SLACK_ROUNDS_KEPT = 5  # a constraint slack this many rounds in a row leaves the LP (it stays in the pool)
GENERATION_GAP = 1e-3  # converged when the search sees no excess above ε by more than this × max |v'(S)|
CUTS_PER_PLAYER = 2  # coalitions added per round, per player
GENERATION_TOLERANCE = 1e-7  # relative: HiGHS's feasibility tolerance is 1e-7
HEURISTIC_NOTE = ("constraint generation with a heuristic separation (search): ε is a lower bound of the true "
                  "least-core ε")


def least_core(game: Game, *, budget: int | None = None, seed: int = 0, strict: bool = True) -> ValuationResult:
    """Least-core payoffs per objective; ``info["epsilon"]`` lists the minimal ε per objective.

    `strict` (constraint generation only): raise `InputError` when it does not converge within its limits
    (module docstring) instead of returning the unconverged answer.
    """
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    if budget is None and n > EXACT_CONSTRAINTS_MAX_PLAYERS:
        return generated_least_core(game, seed=seed, strict=strict)
    info: dict = {}
    if budget is None or budget >= 2**n:
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
    for k in range(m):
        if n == 1:
            values[0, k], eps = u_full[k] - u_empty[k], 0.0
        else:
            values[:, k], eps = solve_least_core_lp(masks, utils[:, k] - u_empty[k], u_full[k] - u_empty[k],
                                                    objective=objectives[k])
        epsilons.append(eps)
    info["epsilon"] = epsilons
    return ValuationResult("least_core", players, objectives, values, np.zeros((n, m)), budget, n_evaluations,
                           info)


def solve_least_core_lp(masks: np.ndarray, values: np.ndarray, total: float, *, objective: str = "") -> tuple[
        np.ndarray, float]:
    """``(x, ε)`` minimising ε subject to ``x(S) ≥ v(S) − ε`` for the rows of `masks` (with normalised
    `values`) and ``x(N) = total``. Raises `InputError` when the constraints leave ε unbounded."""
    k, n = masks.shape
    c = np.zeros(n + 1)
    c[-1] = 1.0  # variables z = (x_1..x_n, ε); minimise ε
    a_ub = -np.hstack([masks.astype(float), np.ones((k, 1))]) if k else None
    b_ub = -np.asarray(values, dtype=float) if k else None
    a_eq = np.concatenate([np.ones(n), [0.0]])[None, :]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[float(total)], bounds=[(None, None)] * (n + 1),
                  method="highs")
    if res.status == 3:  # unbounded: too few sampled constraints to pin ε down
        raise InputError(
            f"the sampled least-core LP is unbounded for objective '{objective}' ({k} constraints): raise the budget",
            field="budget",
        )
    if not res.success:
        raise RuntimeError(f"least-core LP failed for objective '{objective}': {res.message}")
    return res.x[:n] + 0.0, float(res.x[n]) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class Generation:
    """One objective's constraint generation: the last LP's payoff and ε, and how it got there."""

    x: np.ndarray
    epsilon: float
    rounds: int
    converged: bool
    n_constraints: int
    evaluations: int
    search_examined: int
    gap: float = 0.0


def generated_least_core(game: Game, *, seed: int = 0, strict: bool = True) -> ValuationResult:
    """The least core by constraint generation (module docstring), one run per objective, all objectives
    within one `GENERATION_TIME_CAP_S`."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    if n > GENERATION_MAX_PLAYERS:
        raise InputError(
            f"{n} players: the least core is computed for at most {GENERATION_MAX_PLAYERS} players (constraint "
            f"generation); give a budget to sample constraints, or use another method",
            field="players",
        )
    deadline = time.monotonic() + GENERATION_TIME_CAP_S
    runs = [
        constraint_generation(lambda masks, k=k: evaluate(game, masks)[:, k], n, seed=seed, deadline=deadline)
        for k in range(m)
    ]
    if strict and not all(r.converged for r in runs):
        eps = max(r.epsilon for r in runs if not r.converged)
        raise InputError(
            f"{n} players: the least core did not converge within {GENERATION_MAX_ROUNDS} rounds or "
            f"{GENERATION_TIME_CAP_S:g} s of constraint generation (ε ≥ {eps:.6g} so far); give a budget to "
            "sample constraints, or use another method",
            field="players",
        )
    info = {
        "constraints": "generated",
        "epsilon": [r.epsilon for r in runs],
        "n_constraints": max(r.n_constraints for r in runs),
        "rounds": [r.rounds for r in runs],
        "converged": all(r.converged for r in runs),
        "search_examined": [r.search_examined for r in runs],
        "gap": [r.gap for r in runs],
        "separation": HEURISTIC_NOTE,
    }
    values = np.stack([r.x for r in runs], axis=1)
    return ValuationResult("least_core", players, objectives, values, np.zeros((n, m)), None,
                           sum(r.evaluations for r in runs), info)


def constraint_generation(
    fn: Callable[[np.ndarray], np.ndarray], n: int, *, seed: int = 0, deadline: float | None = None
) -> Generation:
    """Constraint generation for the scalar game `fn` (``bool[k, n] -> float[k]``, raw) of n ≥ 2 players
    (module docstring); stops at `deadline` (``time.monotonic()``) if given.

    Each round adds the climbs' violating local maxima (`BlockingSearch.peaks`: distinct regions) and the
    `CUTS_PER_PLAYER`·n most violating coalitions found. Every coalition met stays in a pool; a constraint
    slack for `SLACK_ROUNDS_KEPT` rounds in a row leaves the LP (which keeps it small and fast) and comes
    back, for good, as soon as the LP's solution violates it — checked over the whole pool before any
    search, so convergence is judged on every coalition met. Every {i} and N∖{i} always stay."""
    if deadline is None:
        deadline = time.monotonic() + GENERATION_TIME_CAP_S
    rng = np.random.default_rng(seed)
    eye = np.eye(n, dtype=bool)
    ends = np.asarray(fn(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)])), dtype=float).reshape(2)
    empty, total = float(ends[0]), float(ends[1] - ends[0])
    pool = _Pool(fn, empty, n)
    added = pool.add(np.concatenate([eye, ~eye, random_coalitions(rng, 4 * n, n), _chains(fn, n, rng)]))
    evaluations, rounds, examined, gap = 2, 0, 0, np.inf
    age = np.zeros(pool.size, dtype=np.int64)  # rounds each constraint has been slack in a row
    while True:
        active = np.flatnonzero(age < SLACK_ROUNDS_KEPT)
        active = np.union1d(active, np.arange(2 * n))  # every {i} and N∖{i} always: ε stays bounded
        x, eps = solve_least_core_lp(pool.masks[active], pool.values[active], total)
        if time.monotonic() > deadline or rounds >= GENERATION_MAX_ROUNDS:
            return Generation(x, eps, rounds, False, pool.size, evaluations + pool.evaluations, examined, gap)
        rounds += 1
        tol = GENERATION_TOLERANCE * max(1.0, pool.scale, abs(total))
        excess = pool.values - pool.masks @ x
        age = np.where(excess < eps - tol, age + 1, np.minimum(age, 0))
        dropped = np.flatnonzero(excess > eps + tol)  # set aside earlier, violated now: back in, no search
        if dropped.size:
            age[dropped] = KEEP_FOREVER  # never set aside twice: no cycling
            added = dropped[np.argsort(-excess[dropped], kind="stable")]
            continue
        step = _separate(fn, pool, x, eps, tol, seed + rounds, pool.masks[added[-n:]])
        evaluations += step.evaluations
        examined, gap, added = step.examined, step.gap, step.new
        age = np.concatenate([age, np.zeros(pool.size - age.size, dtype=np.int64)])
        if added.size == 0:
            return Generation(x, eps, rounds, True, pool.size, evaluations + pool.evaluations, examined, gap)


def _chains(fn: Callable[[np.ndarray], np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """The prefixes of every size of the members ordered by their value alone (best first) and of
    `CHAINS` random orders: coalitions of every size, the binding ones of many games."""
    alone = np.asarray(fn(np.eye(n, dtype=bool)), dtype=float).reshape(n)
    orders = [np.argsort(-alone, kind="stable"), *(rng.permutation(n) for _ in range(CHAINS))]
    out = []
    for order in orders:
        ranks = np.empty(n, dtype=np.int64)
        ranks[order] = np.arange(n)
        out.append(ranks[None, :] < np.arange(2, n - 1)[:, None])
    return np.concatenate(out)


@dataclass(frozen=True)
class _Separation:
    new: np.ndarray  # pool indices of the coalitions added
    evaluations: int
    examined: int  # K of the last search
    gap: float  # the largest excess above ε the last search saw (≥ 0)


def _separate(
    fn: Callable[[np.ndarray], np.ndarray], pool: _Pool, x: np.ndarray, eps: float, tol: float, seed: int,
    starts: np.ndarray,
) -> _Separation:
    """One round's separation: a `SEPARATION_BUDGET` search for coalitions with excess above ε, then, if it
    finds nothing new beyond the gap tolerance (`GENERATION_GAP` of the game's scale; the exact tolerance
    when the search was exhaustive), a `CONFIRM_BUDGET` one. Adds the violating peaks and the
    `CUTS_PER_PLAYER`·n most violating coalitions to the pool; none added means converged."""
    evaluations, empty = 0, np.zeros(0, dtype=np.int64)
    for budget, offset in ((SEPARATION_BUDGET, 0), (CONFIRM_BUDGET, 10_000)):
        found = search_blocking(fn, x, budget=budget, seed=seed + offset, threshold=eps, tol=tol,
                                max_reported=CUTS_PER_PLAYER * x.size, starts=starts)
        evaluations += found.evaluations
        gap = max(0.0, found.best_excess - eps)
        gap_tol = tol if found.exhaustive else GENERATION_GAP * max(pool.scale, 1e-300)
        if gap > gap_tol:
            cuts = np.concatenate([found.peaks, found.masks])
            new = pool.add_found(cuts, np.concatenate([found.peak_excess, found.excess]) + cuts @ x)
            if new.size:
                return _Separation(new, evaluations, found.examined, gap)
    return _Separation(empty, evaluations, found.examined, gap)


class _Pool:
    """The LP's constraints: distinct coalitions (no ∅ or N) and their normalised values ``v'(S)``."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], empty: float, n: int) -> None:
        self.fn, self.empty, self.n = fn, empty, n
        self.index: dict[bytes, int] = {}
        self.masks = np.zeros((0, n), dtype=bool)
        self.values = np.zeros(0)
        self.evaluations = 0
        self.scale = 0.0

    @property
    def size(self) -> int:
        return self.values.size

    def _fresh(self, masks: np.ndarray) -> np.ndarray:
        sizes = masks.sum(axis=1)
        rows, seen = [], set()
        for i, key in enumerate(row.tobytes() for row in np.packbits(masks, axis=1)):
            if 0 < sizes[i] < self.n and key not in self.index and key not in seen:
                seen.add(key)
                self.index[key] = len(self.index)
                rows.append(i)
        return np.array(rows, dtype=np.int64)

    def add(self, masks: np.ndarray) -> np.ndarray:
        """Add coalitions, evaluating the new ones; returns their pool indices."""
        rows = self._fresh(masks)
        values = np.asarray(self.fn(masks[rows]), dtype=float).reshape(rows.size) - self.empty if rows.size else []
        self.evaluations += rows.size
        return self._keep(masks[rows], np.asarray(values, dtype=float))

    def add_found(self, masks: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Add coalitions whose normalised values are known; returns the pool indices of the new ones."""
        rows = self._fresh(masks)
        return self._keep(masks[rows], values[rows])

    def _keep(self, masks: np.ndarray, values: np.ndarray) -> np.ndarray:
        start = self.values.size
        self.masks = np.concatenate([self.masks, masks])
        self.values = np.concatenate([self.values, values])
        if values.size:
            self.scale = max(self.scale, float(np.max(np.abs(values))))
        return np.arange(start, self.values.size)
