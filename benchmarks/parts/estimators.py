"""(e) Sampled Shapley estimators vs shapiq's at equal evaluation budgets, against exact values.

Games (one random instance per kind and n, deterministic in the suite seed; one objective):

* ``unanimity`` — v(S) = Σ_k c_k·[T_k ⊆ S], 2n components with random supports T_k of 1–6 players and
  c_k ~ N(1, 1). Closed form: φ_i = Σ_{k: i∈T_k} c_k / |T_k|.
* ``airport`` — v(S) = max_{i∈S} c_i (v(∅) = 0), c_i ~ U(0, 1). Closed form: with c sorted ascending,
  φ_(i) = Σ_{j≤i} (c_(j) − c_(j−1)) / (n − j + 1)  (c_(0) = 0).
* ``majority`` — a smooth weighted majority v(S) = σ((Σ_{i∈S} w_i − W/2) / (0.05·W)), integer weights
  w_i ∈ 1..10, W = Σ w. Exact by dynamic programming over (coalition size, weight): for each i, count the
  coalitions of N∖i by size s and weight t, then φ_i = Σ_{s,t} count·s!(n−s−1)!/n!·(f(t + w_i) − f(t)).
  With the quota at W/2 the game is self-dual (v(N∖S) = v(N) − v(S)), the worst case for antithetic
  permutations: a permutation and its reverse give the same marginal vector.
* ``bt_preference`` — the payoutsim utility itself: u(S) = mean_p σ(β Σ_{ℓ∈S} Δ_ℓp) through
  `valuation.coalition_utility.preference.preference_utility` (``bt``, ``sum`` weighting) on random margins Δ[n, 200] with
  per-source means ~ N(0.3, 1) and noise sd 3, β = 0.5. No closed form: n ≤ 20 only.

Reference: our exact estimator (`approximate(game, "exact")`) for n ≤ 20 — and it is checked against the
closed form where there is one (the largest difference is reported); the closed form at n = 50.

Estimators at equal budgets (utility evaluations), several seeds each:

* ``ours`` — `approximate(game, "permutation", budget)` (production: orders in Latin-square blocks, budget
  counted in distinct coalitions);
* ``shapiq_permutation`` — `shapiq.PermutationSamplingSV` (Castro et al.); budget = evaluations requested;
* ``shapiq_kernelshap`` — `shapiq.KernelSHAP` (defaults: no pairing trick); its sampler draws distinct
  coalitions, so its budget counts distinct evaluations;

and, outside the target, for the investigation:

* ``shapiq_kernelshap_paired`` — KernelSHAP with ``pairing_trick=True``;
* ``independent_orders`` — the ablation of ours: independent uniformly random orders (no position strata),
  same distinct-coalition budget.

Errors per (game, n, budget, estimator), averaged over seeds: mean absolute error over players (MAE, with its
standard error over seeds) and the largest absolute error. Target (issue 7): ``ours`` no worse than the better
of ``shapiq_permutation`` and ``shapiq_kernelshap`` at every budget, better at some.

shapiq (a dev-only dependency) is imported inside the estimator that calls it: importing it takes ~5 s
(measured on the 2-core machine), and the games here are also used without it (tests/test_estimators.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, gammaln

from valuation.coalition_utility.preference import preference_utility
from valuation.composition.arithmetic import coalition_weights
from valuation.games.estimators import approximate
from valuation.games.game import CachedGame, FunctionGame, Game

GameFn = Callable[[NDArray[np.bool_]], NDArray[np.float64]]

#: (n, budgets) of the full run; quick runs keep the first two budgets of each.
SIZES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (10, (100, 300, 600)),
    (20, (200, 1_000, 5_000)),
    (50, (1_000, 5_000, 20_000)),
)
GAME_KINDS = ("unanimity", "airport", "majority", "bt_preference")
EXACT_MAX_N = 20  # reference by our exact estimator up to here (2^20 coalitions)
TARGET_PEERS = ("shapiq_permutation", "shapiq_kernelshap")
ESTIMATORS = (
    "ours",
    "shapiq_permutation",
    "shapiq_kernelshap",
    "shapiq_kernelshap_paired",
    "independent_orders",
)
BT_PAIRS = 200
BT_BETA = 0.5


@dataclass(frozen=True)
class BenchGame:
    """A one-objective game ``fn(bool[k, n]) -> float[k]`` with its closed-form Shapley values (or None)."""

    kind: str
    n: int
    fn: GameFn
    closed_form: NDArray[np.float64] | None

    def as_game(self) -> FunctionGame:
        return FunctionGame([f"p{i}" for i in range(self.n)], ["u"], self.fn)


# ---------------------------------------------------------------------------------------------------
# games


def unanimity_game(n: int, rng: np.random.Generator) -> BenchGame:
    """A random sum of 2n unanimity games (see the module docstring)."""
    k = 2 * n
    sizes = rng.integers(1, min(6, n) + 1, size=k)
    supports = np.zeros((k, n), dtype=np.int64)
    for row, size in enumerate(sizes):
        supports[row, rng.choice(n, size=size, replace=False)] = 1
    coef = rng.normal(1.0, 1.0, size=k)

    def fn(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        inside = (masks.astype(np.int64) @ supports.T) == sizes[None, :]
        return inside.astype(np.float64) @ coef

    phi = (supports * (coef / sizes)[:, None]).sum(axis=0)
    return BenchGame("unanimity", n, fn, phi)


def airport_game(n: int, rng: np.random.Generator) -> BenchGame:
    """v(S) = max_{i∈S} c_i with c ~ U(0, 1) (see the module docstring)."""
    cost = rng.uniform(0.0, 1.0, size=n)

    def fn(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        return np.max(np.where(masks, cost[None, :], 0.0), axis=1)

    order = np.argsort(cost)
    steps = np.diff(np.concatenate([[0.0], cost[order]]))
    phi = np.empty(n)
    phi[order] = np.cumsum(steps / (n - np.arange(n)))
    return BenchGame("airport", n, fn, phi)


def majority_game(n: int, rng: np.random.Generator) -> BenchGame:
    """Smooth weighted majority with quota W/2 (self-dual); exact values by dynamic programming."""
    weights = rng.integers(1, 11, size=n)
    total = int(weights.sum())
    quota, scale = total / 2.0, 0.05 * total

    def f(t: NDArray[np.float64] | NDArray[np.int64]) -> NDArray[np.float64]:
        return expit((np.asarray(t, dtype=np.float64) - quota) / scale)

    def fn(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        return f(masks.astype(np.int64) @ weights)

    sizes = np.arange(n)
    shapley_w = np.exp(gammaln(sizes + 1) + gammaln(n - sizes) - gammaln(n + 1))  # s!(n-s-1)!/n!
    t = np.arange(total + 1)
    phi = np.empty(n)
    for i in range(n):
        count = np.zeros((n, total + 1))  # coalitions of N∖i by size (0..n-1) and weight
        count[0, 0] = 1.0
        for j in range(n):
            if j != i:
                w = int(weights[j])
                count[1:, w:] += count[:-1, : total + 1 - w].copy()
        gain = f(t + weights[i]) - f(t)
        phi[i] = float(shapley_w @ count @ gain)
    return BenchGame("majority", n, fn, phi)


def bt_preference_game(n: int, rng: np.random.Generator) -> BenchGame:
    """The payoutsim ``bt`` preference utility on random margins (no closed form)."""
    deltas = rng.normal(rng.normal(0.3, 1.0, size=(n, 1)), 3.0, size=(n, BT_PAIRS))

    def fn(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
        return preference_utility(coalition_weights(masks, "sum"), deltas, metric="bt", beta=BT_BETA).values

    return BenchGame("bt_preference", n, fn, None)


GAME_BUILDERS: dict[str, Callable[[int, np.random.Generator], BenchGame]] = {
    "unanimity": unanimity_game,
    "airport": airport_game,
    "majority": majority_game,
    "bt_preference": bt_preference_game,
}


def reference_values(game: BenchGame) -> tuple[NDArray[np.float64], str, float | None]:
    """(exact Shapley values, where they come from, max |exact estimator − closed form| when both exist)."""
    if game.n <= EXACT_MAX_N:
        exact = approximate(game.as_game(), "exact").values[:, 0]
        if game.closed_form is None:
            return exact, "exact estimator", None
        return exact, "exact estimator (checked against the closed form)", float(
            np.max(np.abs(exact - game.closed_form))
        )
    if game.closed_form is None:
        raise ValueError(f"{game.kind} at n = {game.n} has no exact reference")
    return game.closed_form, "closed form", None


# ---------------------------------------------------------------------------------------------------
# estimators: each (game, budget, seed) -> (values float[n], evaluations used)


def _ours(game: BenchGame, budget: int, seed: int) -> tuple[NDArray[np.float64], int]:
    result = approximate(game.as_game(), "permutation", budget, seed=seed)
    return result.values[:, 0], int(result.n_evaluations)


#: The ablation stops after this many orders per unit of budget (once every coalition has been seen, e.g.
#: budget ≥ 2^n, the distinct count no longer grows).
MAX_ORDERS_PER_BUDGET = 1


def independent_orders(game: Game, budget: int, seed: int) -> tuple[NDArray[np.float64], int]:
    """Ablation of ours: the mean marginal vector over independent uniformly random orders, with the budget
    counted in distinct coalitions (a `CachedGame`'s misses). Returns (φ for the first objective, distinct
    evaluations)."""
    cached = CachedGame(game)
    n = len(game.players)
    rng = np.random.default_rng(seed)
    ends = cached(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))[:, 0]
    prefix_sizes = np.arange(1, n)[:, None]
    samples: list[NDArray[np.float64]] = []
    while budget - cached.misses >= n - 1 and len(samples) < MAX_ORDERS_PER_BUDGET * budget:
        rank = np.argsort(rng.permutation(n))
        chain = np.concatenate([[ends[0]], cached(rank[None, :] < prefix_sizes)[:, 0], [ends[1]]])
        samples.append(np.diff(chain)[rank])
    values = np.mean(samples, axis=0) if samples else np.full(n, (ends[1] - ends[0]) / max(n, 1))
    return values, cached.misses


def _shapiq(name: str) -> Callable[[BenchGame, int, int], tuple[NDArray[np.float64], int]]:
    def estimate(game: BenchGame, budget: int, seed: int) -> tuple[NDArray[np.float64], int]:
        from shapiq.approximator import KernelSHAP, PermutationSamplingSV

        calls = [0]

        def fn(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
            masks = np.atleast_2d(np.asarray(masks, dtype=bool))  # shapiq also asks single 1-D coalitions
            calls[0] += masks.shape[0]
            return game.fn(masks)

        if name == "shapiq_permutation":
            approximator: Any = PermutationSamplingSV(game.n, random_state=seed)
        else:
            approximator = KernelSHAP(game.n, random_state=seed, pairing_trick=name.endswith("_paired"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shapiq warns about its border trick at large budgets
            values = approximator.approximate(budget, fn)
        return np.asarray(values.get_n_order_values(1), dtype=np.float64), calls[0]

    return estimate


ESTIMATOR_FUNCS: dict[str, Callable[[BenchGame, int, int], tuple[NDArray[np.float64], int]]] = {
    "ours": _ours,
    "shapiq_permutation": _shapiq("shapiq_permutation"),
    "shapiq_kernelshap": _shapiq("shapiq_kernelshap"),
    "shapiq_kernelshap_paired": _shapiq("shapiq_kernelshap_paired"),
    "independent_orders": lambda game, budget, seed: independent_orders(game.as_game(), budget, seed),
}


# ---------------------------------------------------------------------------------------------------
# the part


def run(
    quick: bool,
    seed: int,
    *,
    repeats: int | None = None,
    sizes: Sequence[tuple[int, Sequence[int]]] | None = None,
    kinds: Sequence[str] = GAME_KINDS,
    estimators: Sequence[str] = ESTIMATORS,
) -> dict[str, Any]:
    """Run part (e); see the module docstring. ``repeats`` = estimator seeds per cell (default 3 quick /
    10 full). Tests pass small ``sizes`` = ((n, budgets), ...)."""
    n_seeds = repeats or (3 if quick else 10)
    plan = [(n, tuple(b)[:2] if quick else tuple(b)) for n, b in (sizes or SIZES)]
    cells: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    for n, budgets in plan:
        for kind in kinds:
            rng = np.random.default_rng([seed, n, GAME_KINDS.index(kind) if kind in GAME_KINDS else 99])
            game = GAME_BUILDERS[kind](n, rng)
            if game.closed_form is None and n > EXACT_MAX_N:
                references.append({"game": kind, "n": n, "reference": "none (skipped: no closed form)"})
                continue
            phi, source, check = reference_values(game)
            references.append({"game": kind, "n": n, "reference": source, "closed_form_max_abs_diff": check,
                               "mean_abs_value": float(np.mean(np.abs(phi)))})
            for budget in budgets:
                cells.append(_cell(game, phi, budget, n_seeds, seed, estimators))
    return {
        "title": "Shapley estimators vs shapiq at equal budgets (error against exact values)",
        "params": {"quick": quick, "seed": seed, "seeds_per_cell": n_seeds,
                   "sizes": [[n, list(b)] for n, b in plan], "games": list(kinds), "estimators": list(estimators),
                   "target_peers": list(TARGET_PEERS)},
        "references": references,
        "cells": cells,
        "tables": _tables(cells, estimators),
        "targets": _targets(cells),
        "notes": [
            "MAE = mean over players of |estimate − exact|, averaged over seeds (± its standard error over "
            "seeds); 'vs best' = ours / min(shapiq permutation, shapiq KernelSHAP).",
            "budgets: shapiq permutation counts evaluations requested (repeats included); ours, KernelSHAP "
            "and independent_orders count distinct coalitions.",
            "bt_preference at n = 50 is skipped (no exact reference: 2^50 coalitions, no closed form).",
        ],
    }


def _cell(game: BenchGame, phi: NDArray[np.float64], budget: int, n_seeds: int, seed: int,
          estimators: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"game": game.kind, "n": game.n, "budget": budget, "estimators": {}}
    for name in estimators:
        maes, maxes, used, secs = [], [], [], []
        for s in range(n_seeds):
            start = time.perf_counter()
            values, evaluations = ESTIMATOR_FUNCS[name](game, budget, seed * 1_000 + s)
            secs.append(time.perf_counter() - start)
            err = np.abs(values - phi)
            maes.append(float(err.mean()))
            maxes.append(float(err.max()))
            used.append(evaluations)
        out["estimators"][name] = {
            "mae": float(np.mean(maes)),
            "mae_se": float(np.std(maes, ddof=1) / np.sqrt(n_seeds)) if n_seeds > 1 else None,
            "max_abs_error": float(np.mean(maxes)),
            "evaluations_mean": float(np.mean(used)),
            "median_s": float(np.median(secs)),
        }
    out["verdict"] = _verdict(out["estimators"])
    return out


def _verdict(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """``ours`` vs the better of the target peers: "yes" (no worse), "tie" (worse by ≤ 2 combined standard
    errors over seeds) or "no"."""
    if "ours" not in results or not all(p in results for p in TARGET_PEERS):
        return None
    ours = results["ours"]
    best_name = min(TARGET_PEERS, key=lambda p: results[p]["mae"])
    best = results[best_name]
    ratio = ours["mae"] / best["mae"] if best["mae"] > 0 else float("inf")
    if ours["mae"] <= best["mae"]:
        verdict = "yes"
    else:
        se = np.hypot(ours["mae_se"] or 0.0, best["mae_se"] or 0.0)
        verdict = "tie" if ours["mae"] - best["mae"] <= 2.0 * se else "no"
    return {"best_peer": best_name, "ratio_to_best": ratio, "no_worse": verdict}


def _tables(cells: list[dict[str, Any]], estimators: Sequence[str]) -> list[dict[str, Any]]:
    main = [name for name in ("ours", *TARGET_PEERS) if name in estimators]
    extra = [name for name in estimators if name not in main]
    rows = []
    for c in cells:
        r = c["estimators"]
        row: list[Any] = [c["game"], c["n"], c["budget"]]
        row += [_fmt_mae(r[name]) for name in main]
        v = c["verdict"]
        row += [v["ratio_to_best"], v["no_worse"]] if v else [None, None]
        rows.append(row)
    tables = [{
        "title": "MAE vs exact (mean ± s.e. over seeds) at equal budgets — target: ours no worse than the best peer",
        "columns": ["game", "n", "budget", *main, "ours / best", "no worse?"],
        "rows": rows,
    }]
    if extra:
        tables.append({
            "title": "investigation: more variants (MAE; max abs error of ours in the last column)",
            "columns": ["game", "n", "budget", "ours", *extra, "ours max err"],
            "rows": [
                [c["game"], c["n"], c["budget"], _fmt_mae(c["estimators"]["ours"]) if "ours" in c["estimators"]
                 else None, *[_fmt_mae(c["estimators"][name]) for name in extra],
                 c["estimators"].get("ours", {}).get("max_abs_error")]
                for c in cells
            ],
        })
    return tables


def _fmt_mae(r: dict[str, Any]) -> str:
    se = r.get("mae_se")
    return f"{r['mae']:.4g}" + (f" ± {se:.2g}" if se is not None else "")


def _targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts = [c["verdict"]["no_worse"] for c in cells if c.get("verdict")]
    if not verdicts:
        return []
    counts = {k: verdicts.count(k) for k in ("yes", "tie", "no")}
    losses = [f"{c['game']} n={c['n']} B={c['budget']} ({c['verdict']['ratio_to_best']:.2f}×)"
              for c in cells if c.get("verdict") and c["verdict"]["no_worse"] == "no"]
    return [{
        "name": "ours no worse than the better of shapiq permutation / KernelSHAP",
        "target": "every cell, better in some",
        "measured": f"{counts['yes']} better-or-equal, {counts['tie']} within noise, {counts['no']} worse"
        + (f": {'; '.join(losses)}" if losses else ""),
        "met": counts["no"] == 0 and counts["yes"] > 0,
    }]
