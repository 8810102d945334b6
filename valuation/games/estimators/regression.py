"""Shapley by size-stratified regression: KernelSHAP with one intercept per coalition size, paired sampling
when it pays, Neyman allocation over sizes, and standard errors.

**The identity.** For S uniform among the coalitions of size s (``p_s = s/n``, ``z_i = [i ∈ S]``)::

    φ_i = (u(N) − u(∅))/n + (1/n) Σ_{s=1}^{n−1} d_{i,s},   d_{i,s} = E_s[u | i ∈ S] − E_s[u | i ∉ S]
                                                                 = Cov_s(z_i, u) / (p_s (1 − p_s))

(expand the Shapley weights by size; ``Σ_i d_{i,s} = 0``, so the estimate below is exactly efficient).

**The estimator.** Coalitions are sampled per size stratum s without replacement (``n_s`` of the
``C(n, s)``). Fit by weighted least squares, weight ``c_s / n_s`` with ``c_s = n / (s (n − s))`` (the
Shapley kernel's mass of stratum s), the model ``u(S) ≈ α_{|S|} + Σ_{j∈S} β_{b(|S|), j}`` — one free
intercept per size, so size effects (majority and airport games, a saturating utility) cost no variance,
and slopes per *size bin* b: 1, 3, 5 or 7 bins of ``min(s, n − s)``, mirrored (s and n − s in mirrored
bins), one bin per ``8 n`` evaluated coalitions (`n_bins_for`). With ``|b|`` the number of sizes in bin b::

    φ̂ = (u(N) − u(∅))/n · 1 + Σ_b |b|/(n − 1) · (β̂_b − mean(β̂_b))

(the model's exact Shapley value: within stratum s, ``Cov_s(z_i, Σ_j β_j z_j) = p_s(1 − p_s)(n β_i − Σβ)/(n − 1)``).

The normal equations make the plug-in residual correction ``Σ_s c_s Ĉov_s(z_i, r)`` vanish, so this *is*
the regression-adjusted stratified estimator: the model's exact Shapley values plus a stratified Monte
Carlo estimate of the residual's (Witter et al. 2025, "Regression-adjusted Monte Carlo estimators for
Shapley values"; the stratification by size is that of Stratified SVARM, Kolpaczki et al. 2024; without
the intercepts and with sampled sizes it is KernelSHAP, Lundberg & Lee 2017). A size stratum sampled
completely contributes exactly (the "border trick" falls out of sampling without replacement).

**Pairs.** A *pair* is ``(S, N∖S)``. For a game with at most pairwise interactions ``u(S) − u(N∖S)`` is
additive, so the paired fit is exact; for a self-dual game (``u(N∖S) = u(N) − u(S)``: a majority game
with quota ½) the second coalition of a pair carries no information and pairing halves the efficiency.
So sampling starts with a *pilot* of pairs (a quarter of the budget), and the measured variances decide:
with score ``h`` (below) per coalition, pairs are kept when ``Σ_g sqrt(2 κ_g Var h_pair)`` is below
``Σ_s sqrt(Var h_S)`` (the Neyman-allocated standard deviations per evaluation of the two designs).

**Rounds.** After the pilot, rounds double the evaluations so far (capped by the stopping rule's
remaining budget); each round allocates its evaluations to size strata by Neyman allocation
(``units_g ∝ sqrt(κ_g Var h_g)``, shrunk towards the mean over strata) from everything measured so far,
never beyond a stratum's ``C(n, s)``. The stopping rule is checked after each round.

**Standard errors** (linearisation, sandwich form): with ``z̃`` centred and ``r`` the residuals in each
stratum, ``M = Σ w z̃ z̃ᵀ``, ``L = P M⁺`` (P centres), the unit score ``E_u = L Σ_{S∈u} w_S z̃_S r_S``;
``Var φ̂_i = Σ_g (1 − f_g) G_g/(G_g − 1) Σ_{u∈g} (E_{u,i} − Ē_{g,i})²`` over groups g of like units (single
coalitions of one size, pairs of one size) with ``G_g`` units and sampling fraction ``f_g``; complete
strata add nothing. Measured calibration: ``payoutsim bench --only e``.

Cost: ``u(∅)`` and ``u(N)``, then every evaluation is a distinct coalition (the budget counts them).
When the budget covers all ``2^n`` coalitions the values are computed exactly (standard errors 0).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators.common import evaluate, new_state, progress_bar
from valuation.games.estimators.exact import exact_shapley
from valuation.games.game import Game
from valuation.games.result import ValuationResult
from valuation.games.stopping import StoppingRule

PILOT_FRACTION = 0.25  # share of the budget spent on the paired pilot
PILOT_PER_PLAYER = 20  # pilot evaluations per player when no budget is given
SHRINK_UNITS = 4.0  # prior weight (in units) pulling a stratum's variance towards the mean over strata
_ENUMERATE_MAX = 200_000  # strata up to this size are listed when a large share of them is wanted
MIN_BUDGET = 4  # u(∅), u(N) and one pair


@dataclass
class _Samples:
    """Every coalition evaluated so far (∅ and N apart), grouped in sampling units."""

    n: int
    m: int
    masks: list[np.ndarray] = field(default_factory=list)
    utils: list[np.ndarray] = field(default_factory=list)
    unit_of: list[np.ndarray] = field(default_factory=list)
    unit_group: list[int] = field(default_factory=list)  # group id per unit: s (single) or n + s (pair)
    taken: set[bytes] = field(default_factory=set)
    counts: np.ndarray = field(init=False)  # coalitions evaluated per size 0..n

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.n + 1, dtype=np.int64)

    @property
    def n_units(self) -> int:
        return len(self.unit_group)

    @property
    def n_coalitions(self) -> int:
        return int(self.counts.sum())

    def add(self, masks: np.ndarray, utils: np.ndarray, paired: bool, group: int) -> None:
        """Add single coalitions (each a unit) or pairs (rows 2k, 2k+1 form a unit)."""
        per_unit = 2 if paired else 1
        units = masks.shape[0] // per_unit
        first = self.n_units
        self.masks.append(masks)
        self.utils.append(utils)
        self.unit_of.append(first + np.arange(masks.shape[0]) // per_unit)
        self.unit_group.extend([group] * units)
        np.add.at(self.counts, masks.sum(axis=1), 1)


@dataclass
class _Fit:
    values: np.ndarray  # float[n, m]
    std_errs: np.ndarray  # float[n, m]
    unit_scores: np.ndarray  # float[U, n, m]: E_u scaled by the stratum count (h_u)
    coalition_scores: np.ndarray  # float[k, n, m]: h for each coalition alone


MAX_BINS = 7  # at most this many size bins with their own slopes
SAMPLES_PER_BIN_PER_PLAYER = 8  # a bin of slopes per 8·n evaluated coalitions


def n_bins_for(n: int, k: int) -> int:
    """Odd number of size bins for ``k`` evaluated coalitions: ``k / (8 n)`` rounded down to odd, 1..7."""
    nb = max(1, min(MAX_BINS, k // (SAMPLES_PER_BIN_PER_PLAYER * n)))
    return nb if nb % 2 else nb - 1


def size_bins(n: int, n_bins: int) -> np.ndarray:
    """Bin of each size 0..n for the slopes β: ``n_bins`` (odd) bins of ``t = min(s, n − s)``, mirrored so
    that s and n − s fall in mirrored bins and the middle bin holds s = n/2."""
    half = (n_bins + 1) // 2
    s = np.arange(n + 1)
    band = np.minimum(half - 1, np.floor(np.minimum(s, n - s) / (n / 2) * half).astype(np.int64))
    return np.where(2 * s <= n, band, 2 * (half - 1) - band)


def stratum_weights(n: int) -> np.ndarray:
    """``c_s = n / (s (n − s))`` for s = 0..n (0 at s = 0 and s = n): the Shapley kernel's stratum mass."""
    s = np.arange(n + 1, dtype=float)
    with np.errstate(divide="ignore"):
        c = np.where((s > 0) & (s < n), n / (s * (n - s)), 0.0)
    return c


def regression_shapley(
    game: Game,
    rule: StoppingRule,
    *,
    budget: int | None,
    seed: int = 0,
    progress: bool = False,
) -> ValuationResult:
    """Estimate Shapley values of ``game`` by size-stratified regression until ``rule`` stops."""
    players, objectives = tuple(game.players), tuple(game.objectives)
    n, m = len(players), len(objectives)
    state = new_state(n, m)
    info: dict = {"estimator": "size-stratified regression"}
    remaining = rule.remaining(state)
    if remaining is not None and remaining < min(MIN_BUDGET, 2**n):
        raise InputError(
            f"budget too small: the regression estimator needs at least {MIN_BUDGET} evaluations "
            "(u(∅), u(N) and one pair of coalitions)",
            field="budget",
        )
    if n <= 1 or (remaining is not None and remaining >= 2**n):
        table = evaluate(game, all_coalitions(n))
        values = exact_shapley(table)
        info.update(converged=True, stopped_by="all_coalitions_evaluated", n_samples=0, design="exact")
        return ValuationResult("regression", players, objectives, values, np.zeros((n, m)), budget, 2**n, info)

    ends = evaluate(game, np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
    state.n_evaluations = 2
    u_empty, u_full = ends[0], ends[1]
    rng = np.random.default_rng(seed)
    samples = _Samples(n, m)
    capacity = [math.comb(n, s) for s in range(n + 1)]
    weights = stratum_weights(n)
    paired = True
    fit: _Fit | None = None
    stopped_by: str | None = None
    rounds = 0
    with progress_bar(progress, f"regression Shapley ({n} players)", remaining) as advance:
        while True:
            remaining = rule.remaining(state)
            # the pilot, then rounds doubling the evaluations so far
            size = _pilot_size(n, remaining, budget) if rounds == 0 else max(state.n_evaluations, 2 * n)
            if remaining is not None:
                size = min(size, remaining)
            if size < 2:
                stopped_by = "max_evaluations"
                break
            if rounds == 0:
                desire = _pilot_desire(n, weights, paired=True)
            else:
                assert fit is not None
                if rounds == 1:
                    paired = _pairs_pay(samples, fit, n)
                    info["pairs_kept"] = paired
                desire = _neyman_desire(samples, fit, n, weights, paired=paired)
            before = state.n_evaluations
            _sample_round(game, samples, desire, size, capacity, paired=paired, rng=rng)
            state.n_evaluations = 2 + samples.n_coalitions
            state.n_samples = samples.n_units
            rounds += 1
            fit = _fit(samples, u_empty, u_full, weights, capacity)
            state.std_errs = fit.std_errs
            advance(state.n_evaluations - before)
            if state.n_evaluations == before:
                stopped_by = "all_coalitions_evaluated" if samples.n_coalitions == 2**n - 2 else "max_evaluations"
                break
            if samples.n_coalitions == 2**n - 2:
                stopped_by = "all_coalitions_evaluated"
                break
            stopped_by = rule.stop_reason(state)
            if stopped_by is not None:
                break
    assert fit is not None
    info.update(
        converged=stopped_by == "all_coalitions_evaluated" or "standard_error" in str(stopped_by).split("&"),
        stopped_by=stopped_by,
        n_samples=samples.n_units,
        rounds=rounds,
        design="pairs" if paired else "pilot pairs, then single coalitions",
    )
    if budget is not None and budget >= 2**n:
        info["note"] = f"2^{n} = {2**n} <= budget: the exact method would be cheaper"
    design = np.concatenate(samples.masks)
    return ValuationResult("regression", players, objectives, fit.values, fit.std_errs, budget,
                           state.n_evaluations, info, design=design)


# ---------------------------------------------------------------------------------------------------
# allocation


def _pilot_size(n: int, remaining: int | None, budget: int | None) -> int:
    cap = budget if budget is not None else remaining
    if cap is None:
        return PILOT_PER_PLAYER * n
    return max(4 * n, int(PILOT_FRACTION * cap))


def _pilot_desire(n: int, weights: np.ndarray, *, paired: bool) -> np.ndarray:
    """Pilot units wanted per group (index = lower size s of the group): ``∝ sqrt(c_s)`` per coalition."""
    desire = np.zeros(n + 1)
    for s in range(1, n):
        if paired and s > n - s:
            continue
        desire[s] = math.sqrt(weights[s]) * (0.5 if paired and 2 * s == n else 1.0)
    return desire


def _group_variances(scores: np.ndarray, groups: np.ndarray, n: int, scale: np.ndarray) -> np.ndarray:
    """Mean over players of the per-unit variance of ``scores`` per group (objectives scaled), shrunk
    towards the mean over groups with at least two units. Index: group id."""
    ids = np.unique(groups)
    raw = np.full(ids.max(initial=0) + 1, np.nan)
    count = np.zeros_like(raw)
    for g in ids:
        rows = scores[groups == g] / scale[None, None, :]
        count[g] = rows.shape[0]
        if rows.shape[0] >= 2:
            raw[g] = float(np.mean(np.var(rows, axis=0, ddof=1).sum(axis=-1)))
    pooled = float(np.nanmean(raw)) if np.any(np.isfinite(raw)) else 1.0
    out = np.where(np.isfinite(raw), (count * np.nan_to_num(raw) + SHRINK_UNITS * pooled) / (count + SHRINK_UNITS),
                   pooled)
    return out


def _objective_scale(samples: _Samples) -> np.ndarray:
    utils = np.concatenate(samples.utils)
    scale = np.std(utils, axis=0)
    return np.where(scale > 0, scale, 1.0)


def _pairs_pay(samples: _Samples, fit: _Fit, n: int) -> bool:
    """True when the pilot says pairs give a smaller Neyman standard deviation per evaluation than single
    coalitions (see the module docstring)."""
    scale = _objective_scale(samples)
    groups = np.asarray(samples.unit_group) - n  # pilot units are pairs: group n + s
    pair_var = _group_variances(fit.unit_scores, groups, n, scale)
    sizes = np.concatenate(samples.masks).sum(axis=1)
    single_var = _group_variances(fit.coalition_scores, sizes, n, scale)
    paired_sd = 0.0
    single_sd = 0.0
    for s in range(1, n):
        if s < len(single_var):
            single_sd += math.sqrt(max(single_var[s], 0.0))
        if 2 * s <= n and s < len(pair_var):
            kappa = 0.25 if 2 * s == n else 1.0
            paired_sd += math.sqrt(2.0 * kappa * max(pair_var[s], 0.0))
    return paired_sd < single_sd


def _neyman_desire(samples: _Samples, fit: _Fit, n: int, weights: np.ndarray, *, paired: bool) -> np.ndarray:
    """Units wanted per group ∝ sqrt(κ_g Var h_g) (Neyman allocation with equal unit costs)."""
    scale = _objective_scale(samples)
    if paired:
        groups = np.asarray(samples.unit_group) - n
        var = _group_variances(fit.unit_scores, groups, n, scale)
    else:
        sizes = np.concatenate(samples.masks).sum(axis=1)
        var = _group_variances(fit.coalition_scores, sizes, n, scale)
    desire = np.zeros(n + 1)
    for s in range(1, n):
        if paired and 2 * s > n:
            continue
        v = var[s] if s < len(var) else float(np.nanmean(var))
        kappa = 0.25 if paired and 2 * s == n else 1.0
        desire[s] = math.sqrt(max(kappa * v, 0.0))
    if not np.any(desire > 0):
        return _pilot_desire(n, weights, paired=paired)
    base = _pilot_desire(n, weights, paired=paired)
    return desire + 1e-3 * desire.sum() / base.sum() * base


def _water_fill(desire: np.ndarray, current: np.ndarray, cap: np.ndarray, extra: int) -> np.ndarray:
    """New units per group: totals ``min(cap, max(current, λ·desire))`` adding up to ``current + extra``
    (λ by bisection, integers by largest remainder). Groups with desire 0 get none."""
    room = np.where(desire > 0, cap - current, 0).astype(float)
    if extra <= 0 or room.sum() <= 0:
        return np.zeros(len(desire), dtype=np.int64)
    if room.sum() <= extra:
        return room.astype(np.int64)

    def added(lam: float) -> np.ndarray:
        return np.clip(lam * desire - current, 0.0, room)

    lo, hi = 0.0, 1.0
    while added(hi).sum() < extra:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if added(mid).sum() < extra:
            lo = mid
        else:
            hi = mid
    share = added(hi)
    share *= extra / share.sum()
    base = np.floor(share).astype(np.int64)
    left = extra - int(base.sum())
    order = np.argsort(-(share - base), kind="stable")
    for g in order:
        if left <= 0:
            break
        if base[g] < room[g]:
            base[g] += 1
            left -= 1
    return base


def _sample_round(
    game: Game,
    samples: _Samples,
    desire: np.ndarray,
    size: int,
    capacity: list[int],
    *,
    paired: bool,
    rng: np.random.Generator,
) -> None:
    """Draw about ``size`` new coalitions allocated by ``desire`` and evaluate them in one game call."""
    n = samples.n
    groups = np.arange(n + 1)
    if paired:
        cap = np.array([capacity[s] // 2 if 2 * s == n else (capacity[s] if 2 * s < n else 0) for s in groups])
        current = np.array([samples.counts[s] // 2 if 2 * s == n else samples.counts[s] for s in groups])
        cost = 2
    else:
        cap = np.array(capacity[: n + 1])
        current = samples.counts.copy()
        cost = 1
    cap[0] = cap[n] = 0
    new = _water_fill(desire, current.astype(float), cap.astype(float), size // cost)
    chunks: list[tuple[np.ndarray, int]] = []
    for s in np.flatnonzero(new):
        masks = _draw(n, int(s), int(new[s]), samples.taken, rng, paired=paired, capacity=capacity[s],
                      already=int(current[s]))
        if masks.shape[0]:
            chunks.append((masks, int(s)))
    if not chunks:
        return
    all_masks = np.concatenate([c[0] for c in chunks])
    utils = evaluate(game, all_masks)
    start = 0
    for masks, s in chunks:
        stop = start + masks.shape[0]
        samples.add(masks, utils[start:stop], paired, (n + s) if paired else s)
        start = stop


def _key(row: np.ndarray) -> bytes:
    return np.packbits(row).tobytes()


def _draw(n: int, s: int, k: int, taken: set[bytes], rng: np.random.Generator, *, paired: bool,
          capacity: int, already: int) -> np.ndarray:
    """``k`` new coalitions of size s not in ``taken`` (pairs: rows S, N∖S; at s = n/2 the pair's
    representative holds player 0), ``already`` of the stratum's units being taken. Strata of at most
    200,000 units are listed when an eighth of them is wanted, others drawn by rejection. Adds the keys to
    ``taken``."""
    mid = paired and 2 * s == n
    population = capacity // 2 if mid else capacity
    if population <= _ENUMERATE_MAX and 8 * (k + already) >= population:
        pool = [row for row in _enumerate(n, s, require_first=mid) if _key(row) not in taken]
        picks = rng.permutation(len(pool))[:k]
        chosen = [pool[i] for i in sorted(picks)]
    else:
        chosen = []
        fresh: set[bytes] = set()
        while len(chosen) < k:
            keys = rng.random((2 * (k - len(chosen)) + 4, n))
            cut = np.partition(keys, s - 1, axis=1)[:, s - 1 : s]
            for row in keys <= cut:
                if mid and not row[0]:
                    row = ~row
                key = _key(row)
                if key in taken or key in fresh:
                    continue
                fresh.add(key)
                chosen.append(row)
                if len(chosen) == k:
                    break
    rows: list[np.ndarray] = []
    for row in chosen:
        rows.append(row)
        taken.add(_key(row))
        if paired:
            rows.append(~row)
            taken.add(_key(~row))
    if not rows:
        return np.zeros((0, n), dtype=bool)
    return np.stack(rows).astype(bool)


def _enumerate(n: int, s: int, *, require_first: bool) -> list[np.ndarray]:
    out = []
    for combo in itertools.combinations(range(n), s):
        if require_first and combo[0] != 0:
            break  # combinations come in lexicographic order: those with player 0 come first
        row = np.zeros(n, dtype=bool)
        row[list(combo)] = True
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------
# the fit and its standard errors


def regression_values(masks: np.ndarray, utils: np.ndarray, u_empty: np.ndarray, u_full: np.ndarray) -> np.ndarray:
    """φ̂ ``float[n, m]`` of the size-stratified regression on the given evaluated coalitions (∅ and N apart):
    what `regression_shapley` returns when it evaluated exactly `masks` (``ValuationResult.design``). For a
    fixed design φ̂ is linear in the utilities, so other utilities on the same coalitions — every bootstrap
    replicate at once, as columns of `utils` — are valued by one least-squares solve per size bin, without
    sampling again and without the ``[k, n, m]`` variance terms."""
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[1]
    counts = np.bincount(masks.sum(axis=1), minlength=n + 1).astype(float)
    values, _, _, _ = _solve(masks, np.asarray(utils, dtype=float), counts, stratum_weights(n),
                             np.asarray(u_empty, dtype=float), np.asarray(u_full, dtype=float))
    return values


def _fit(samples: _Samples, u_empty: np.ndarray, u_full: np.ndarray, weights: np.ndarray,
         capacity: list[int]) -> _Fit:
    n, m = samples.n, samples.m
    masks = np.concatenate(samples.masks)
    utils = np.concatenate(samples.utils)
    unit_of = np.concatenate(samples.unit_of)
    sizes = masks.sum(axis=1)
    counts = samples.counts.astype(float)
    values, resid, proj, n_params = _solve(masks, utils, counts, weights, u_empty, u_full)
    # per-coalition score h_S = c_s L_b z̃_S r_S  (E_S = h_S / n_s)
    coal = proj[:, :, None] * resid[:, None, :] * weights[sizes][:, None, None]
    n_units = samples.n_units
    unit_sum = np.zeros((n_units, n, m))
    np.add.at(unit_sum, unit_of, coal)
    e_units = np.zeros((n_units, n, m))
    np.add.at(e_units, unit_of, coal / counts[sizes][:, None, None])
    group = np.asarray(samples.unit_group)
    var = np.zeros((n, m))
    for g in np.unique(group):
        rows = e_units[group == g]
        s = int(g - n) if g > n else int(g)
        frac = min(1.0, counts[s] / capacity[s])
        if frac >= 1.0:
            continue
        if rows.shape[0] >= 2:
            dev = rows - rows.mean(axis=0)
            var += (1.0 - frac) * rows.shape[0] / (rows.shape[0] - 1) * (dev**2).sum(axis=0)
        else:
            var += (1.0 - frac) * rows[0] ** 2
    dof = masks.shape[0] / max(1.0, masks.shape[0] - n_params)  # small-sample correction (HC1 style)
    return _Fit(values=values, std_errs=np.sqrt(var * dof), unit_scores=unit_sum, coalition_scores=coal)


def _solve(masks: np.ndarray, utils: np.ndarray, counts: np.ndarray, weights: np.ndarray, u_empty: np.ndarray,
           u_full: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The stratified least squares on the evaluated coalitions: (φ̂ [n, m], residuals [k, m], the map from
    a coalition's residual to φ̂ [k, n], the number of parameters)."""
    n, m = masks.shape[1], utils.shape[1]
    sizes = masks.sum(axis=1)
    z = masks.astype(float)
    z_mean = np.zeros((n + 1, n))
    u_mean = np.zeros((n + 1, m))
    np.add.at(z_mean, sizes, z)
    np.add.at(u_mean, sizes, utils)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_mean = np.where(counts[:, None] > 0, z_mean / counts[:, None], 0.0)
        u_mean = np.where(counts[:, None] > 0, u_mean / counts[:, None], 0.0)
        w = np.where(counts[sizes] > 0, weights[sizes] / counts[sizes], 0.0)
    zc = z - z_mean[sizes]
    uc = utils - u_mean[sizes]
    zw = zc * w[:, None]
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    bins = size_bins(n, n_bins_for(n, masks.shape[0]))
    n_params = (n - 1) * len(np.unique(bins[1:n])) + int(np.sum(counts[1:n] > 0))
    values = np.repeat(((u_full - u_empty) / n)[None, :], n, axis=0)
    resid = uc.copy()
    proj = np.zeros_like(zc)  # [k, n]: L_b z̃_S, the map from a coalition's score to φ̂
    for b in np.unique(bins[1:n]):
        rows = bins[sizes] == b
        share = float(np.sum(bins[1:n] == b)) / (n - 1)
        gram = zw[rows].T @ zc[rows] + np.full((n, n), 1.0 / n)  # 1/n·11ᵀ pins mean(β) (M's null direction)
        lmap = centre @ np.linalg.pinv(gram, hermitian=True)
        beta = lmap @ (zw[rows].T @ uc[rows])
        values += share * beta
        resid[rows] -= zc[rows] @ beta
        proj[rows] = share * (zc[rows] @ lmap.T)
    return values, resid, proj, n_params
