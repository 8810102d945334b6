"""Pool recommendation: which members should pool, and is there a stable way to split what they make?

With ``v'(T) = v(T) − v(∅)`` the objective-weighted value a pool T creates (the scalar member game of the
period's members), the recommended pool is the subset that creates the most value:

    T* = argmax_{∅ ≠ T ⊆ N} v'(T)        (ties: the larger pool, then the first in coalition order)

found over every subset up to `EXHAUSTIVE_MAX_MEMBERS` members; above, by local search (`best_pool`):
greedy removal from N (drop the member whose removal raises v' most while that helps), then single
add/remove moves while one helps, compared with the best pool of the blocking-coalition search run on
``e(S) = v'(S)`` (`valuation.games.search`, x = 0) polished the same way. The members left out are listed
with their marginal contribution ``v'(T ∪ {j}) − v'(T)`` (≤ 0 at a local optimum: adding them destroys
value), the members in with ``v'(T) − v'(T ∖ {i})``.

Is a stable split possible? The least-core ε of the sub-game on T (exact up to 16 members, constraint
generation above — a lower bound when it did not converge, which still proves an empty core when > 0):
``ε ≤ tol`` ⇔ the core is non-empty. The scenario's rule is paid out on T and its stability checked on
the sub-game (`valuation.games.stability.check_stability`, searched above 16 members); when that payout is
not in the core but the core is non-empty, the least-core payoff (a core point; equal members get their
class average) is given as well.

Money: the model of `market.pooling` — pool T earns ``P · max(0, v'(T)) / v'(N)`` (P the grand pool's pot,
the grand pool earns P), split by the rule; the core point in money is ``revenue(T) · x_i / v'(T)``
(largest remainder when every x_i ≥ 0; a negative amount means the member would pay in, each rounded
half to even).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from market.money import fee_minor, largest_remainder, to_minor
from market.rules import Payout, RuleContext, compute_payout
from market.scenario.inputs import load_inputs
from market.scenario.schema import load_scenario
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.estimators.least_core import least_core
from valuation.games.players import symmetrise
from valuation.games.search import RELATIVE_TOLERANCE, search_blocking
from valuation.games.stability import CORE_MAX_MEMBERS, StabilityReport, check_stability

EXHAUSTIVE_MAX_MEMBERS = 16
POOL_SEARCH_BUDGET = 20_000
STABLE_POOL_TRIES = 64  # least-core LPs spent looking for a stable alternative

Values = Callable[[np.ndarray], np.ndarray]  # bool[k, n] -> v'(T) float[k]


@dataclass(frozen=True)
class PoolRecommendation:
    """The recommended pool and how its value could be split (module docstring).

    Attributes:
        members: the period's members; pool: T*, in member order.
        value, grand_value: ``v'(T*)`` and ``v'(N)``.
        how: how T* was found (exhaustive over k pools, or local search).
        left_out: ``(member, v'(T ∪ {j}) − v'(T))`` for every member not in T.
        marginals: ``(member, v'(T) − v'(T ∖ {i}))`` for every member of T.
        revenue_minor: what T earns (the grand pool's pot when T = N).
        payout: the scenario's rule on T; stability: its stability on the sub-game.
        epsilon: the least-core ε of the sub-game; epsilon_exact: exact (or converged generation) rather
            than a lower bound.
        core_nonempty: ε ≤ tolerance (None when unknown: a lower bound ≤ 0 that did not converge).
        core_point: the least-core payoff (utility units, sums to v'(T)) when the rule's payout is not in
            the core and the core is non-empty; core_amounts: the same in minor units.
        notes: caveats (search, convergence, pricing).
        scenario: the scenario's name (empty when not made from a file).
        alone_value: ``Σ_{i∈T} v'({i})``, what T's members create each on their own.
        stable_alternative: when T*'s core is empty, the most valuable pool whose core is non-empty
            (`stable_pool`), with its rule payout and a core split; None otherwise or when none was found.
    """

    period: str
    currency: str
    pool_minor: int
    rule: str
    members: tuple[str, ...]
    pool: tuple[str, ...]
    value: float
    grand_value: float
    how: str
    left_out: tuple[tuple[str, float], ...]
    marginals: tuple[tuple[str, float], ...]
    revenue_minor: int
    payout: Payout
    stability: StabilityReport
    epsilon: float
    epsilon_exact: bool
    core_nonempty: bool | None
    core_point: tuple[float, ...] | None
    core_amounts: tuple[int, ...] | None
    notes: tuple[str, ...] = field(default=())
    scenario: str = ""
    alone_value: float = 0.0
    stable_alternative: PoolRecommendation | None = None


def pool_values(ctx: RuleContext, members: Sequence[str]) -> Values:
    """``masks -> v'(T)`` on the scalar member game of `members`."""
    scalar = ctx.scalar_game(members)
    empty = float(scalar(np.zeros((1, len(members)), dtype=bool))[0, 0])
    return lambda masks: np.asarray(scalar(masks), dtype=float)[:, 0] - empty


def best_pool(values: Values, n: int, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """``(mask of T*, how)``: exhaustive up to `EXHAUSTIVE_MAX_MEMBERS`, local search above."""
    if n <= EXHAUSTIVE_MAX_MEMBERS:
        masks = all_coalitions(n)[1:]
        v = values(masks)
        tol = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(v))))
        near = np.flatnonzero(v >= v.max() - tol)
        best = max(near.tolist(), key=lambda i: (int(masks[i].sum()), -i))
        return masks[best], f"exhaustive over all {2**n - 1} pools"
    candidates = [_polish(values, _greedy_removal(values, n))]
    found = search_blocking(values, np.zeros(n), budget=POOL_SEARCH_BUDGET, seed=seed, threshold=-np.inf)
    if found.best_mask.any():
        candidates.append(_polish(values, found.best_mask))
    candidates.append(np.ones(n, dtype=bool))
    v = values(np.stack(candidates))
    tol = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(v))))
    best = max(np.flatnonzero(v >= v.max() - tol).tolist(), key=lambda i: (int(candidates[i].sum()), -i))
    return candidates[best], (f"local search (greedy removal from all members, single moves, and "
                              f"{found.examined} pools examined by search; not a proof)")


def _greedy_removal(values: Values, n: int) -> np.ndarray:
    """From N, drop the member whose removal raises v' most while that raises it."""
    current = np.ones(n, dtype=bool)
    value = float(values(current[None])[0])
    while current.sum() > 1:
        inside = np.flatnonzero(current)
        trial = np.repeat(current[None], inside.size, axis=0)
        trial[np.arange(inside.size), inside] = False
        v = values(trial)
        j = int(np.argmax(v))
        if v[j] <= value + RELATIVE_TOLERANCE * max(1.0, abs(value)):
            break
        current, value = trial[j], float(v[j])
    return current


def _polish(values: Values, start: np.ndarray) -> np.ndarray:
    """Steepest single add/remove moves (never to ∅) while one raises v'."""
    current = start.copy()
    value = float(values(current[None])[0])
    eye = np.eye(current.size, dtype=bool)
    while True:
        trial = current[None] ^ eye
        nonempty = trial.any(axis=1)
        v = np.where(nonempty, values(trial), -np.inf)
        j = int(np.argmax(v))
        if v[j] <= value + RELATIVE_TOLERANCE * max(1.0, abs(value)):
            return current
        current, value = trial[j], float(v[j])


def recommend_pool(
    ctx: RuleContext, members: Sequence[str], pool_minor: int, currency: str, *, period: str = ""
) -> PoolRecommendation:
    """Recommend the pool that creates the most value and say how to split it (module docstring)."""
    members = tuple(members)
    if not members:
        raise InputError("no members to recommend a pool for", field="members")
    n = len(members)
    values = pool_values(ctx, members)
    mask, how = best_pool(values, n, seed=ctx.seed)
    pool = tuple(m for m, inside in zip(members, mask, strict=True) if inside)
    eye = np.eye(n, dtype=bool)
    grand = float(values(np.ones((1, n), dtype=bool))[0])
    value, left_out, marginals = pool_terms(values, members, mask)
    notes: list[str] = []
    if len(pool) == n:
        revenue = pool_minor
    elif grand <= 0:
        revenue = 0
        notes.append("the grand pool creates no value: the recommended pool is priced at 0")
    else:
        revenue = round(pool_minor * Fraction(max(0.0, value)) / Fraction(grand))
    payout = compute_payout(ctx, pool, revenue, currency)
    rec = _split(ctx, members, pool, value, grand, how, left_out, marginals, revenue, payout, notes, period)
    alone = float(values(eye[mask]).sum())
    rec = replace(rec, pool_minor=pool_minor, alone_value=alone)
    if rec.core_nonempty is False and n <= EXHAUSTIVE_MAX_MEMBERS:
        rec = replace(rec, stable_alternative=stable_pool(ctx, members, values, mask, pool_minor, currency, period))
    return rec


def pool_terms(
    values: Values, members: Sequence[str], mask: np.ndarray
) -> tuple[float, tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]]:
    """``v'(T)``, the members left out with ``v'(T ∪ {j}) − v'(T)`` and the members in with
    ``v'(T) − v'(T ∖ {i})`` (``T ∖ {i} = ∅`` is worth 0), in one game call for all n flips."""
    n = len(members)
    value = float(values(mask[None])[0])
    flipped = mask[None] ^ np.eye(n, dtype=bool)  # row j: T with member j added or removed
    flips = np.zeros(n)
    nonempty = flipped.any(axis=1)
    flips[nonempty] = values(flipped[nonempty])
    left_out = tuple((members[j], float(flips[j] - value)) for j in np.flatnonzero(~mask))
    marginals = tuple((members[i], float(value - flips[i])) for i in np.flatnonzero(mask))
    return value, left_out, marginals


def stable_pool(
    ctx: RuleContext,
    members: tuple[str, ...],
    values: Values,
    best: np.ndarray,
    pool_minor: int,
    currency: str,
    period: str,
) -> PoolRecommendation | None:
    """The most valuable pool other than `best` whose game has a non-empty core (least-core ε ≤ tolerance;
    a one-member pool always has one), priced and split like the recommendation: pools in decreasing
    ``v'(T)`` (every subset, up to `EXHAUSTIVE_MAX_MEMBERS` members), at most `STABLE_POOL_TRIES` least-core
    LPs; None when none of them is stable or no pool creates value."""
    n = len(members)
    masks = all_coalitions(n)[1:]
    v = values(masks)
    order = sorted(range(len(masks)), key=lambda i: (-v[i], -int(masks[i].sum()), i))
    grand = float(values(np.ones((1, n), dtype=bool))[0])
    tries = 0
    for i in order:
        if v[i] <= 0 or tries >= STABLE_POOL_TRIES:
            return None
        if np.array_equal(masks[i], best):
            continue
        pool = tuple(m for m, inside in zip(members, masks[i], strict=True) if inside)
        tries += 1
        if len(pool) > 1:
            sub = ctx.scalar_game(pool)
            table = np.asarray(sub(all_coalitions(len(pool))), dtype=float)[:, 0]
            scale = float(np.max(np.abs(table - table[0])))
            epsilon = float(approximate(sub, "least_core").info["epsilon"][0])
            if epsilon > RELATIVE_TOLERANCE * max(1.0, scale):
                continue
        value, left_out, marginals = pool_terms(values, members, masks[i])
        revenue = round(pool_minor * Fraction(value) / Fraction(grand)) if grand > 0 else 0
        eye = np.eye(n, dtype=bool)
        payout = compute_payout(ctx, pool, revenue, currency)
        how = f"the most valuable of the pools with a non-empty core ({tries} examined in decreasing value)"
        rec = _split(ctx, members, pool, value, grand, how, left_out, marginals, revenue, payout, [], period)
        return replace(rec, pool_minor=pool_minor, alone_value=float(values(eye[masks[i]]).sum()))
    return None


def _split(
    ctx: RuleContext,
    members: tuple[str, ...],
    pool: tuple[str, ...],
    value: float,
    grand: float,
    how: str,
    left_out: tuple[tuple[str, float], ...],
    marginals: tuple[tuple[str, float], ...],
    revenue: int,
    payout: Payout,
    notes: list[str],
    period: str,
) -> PoolRecommendation:
    """The sub-game's least core, the rule's stability on it and, if needed, a core point in money."""
    k = len(pool)
    sub = ctx.scalar_game(pool)
    if k <= CORE_MAX_MEMBERS:
        table = np.asarray(sub(all_coalitions(k)), dtype=float)[:, 0]
        lc = approximate(sub, "least_core")
        epsilon, exact = float(lc.info["epsilon"][0]), True
        point = symmetrise(lc.values[:, 0].copy(), table)
        stability = check_stability(pool, table, payout.shares, least_core_epsilon=epsilon)
    else:
        lc = least_core(sub, seed=ctx.seed, strict=False)
        epsilon, exact = float(lc.info["epsilon"][0]), bool(lc.info["converged"])
        point = lc.values[:, 0].copy()
        stability = check_stability(pool, None, payout.shares, game=sub, seed=ctx.seed, least_core_epsilon=epsilon)
        notes.append(f"least core by constraint generation ({lc.info['rounds'][0]} rounds, "
                     f"{'converged' if exact else 'NOT converged: ε is a lower bound'}; heuristic separation)")
    tol = stability.tolerance
    nonempty = True if epsilon <= tol and exact else (False if epsilon > tol else None)
    core_point = core_amounts = None
    if stability.stable is not True and nonempty:
        core_point = tuple(float(x) for x in point)
        core_amounts = money_of(point, value, revenue, pool)
    return PoolRecommendation(
        period=period, currency=payout.currency, pool_minor=0, rule=ctx.rule, members=members, pool=pool,
        value=value, grand_value=grand, how=how, left_out=left_out, marginals=marginals, revenue_minor=revenue,
        payout=payout, stability=stability, epsilon=epsilon, epsilon_exact=exact, core_nonempty=nonempty,
        core_point=core_point, core_amounts=core_amounts, notes=tuple(notes),
    )


def money_of(x: np.ndarray, value: float, revenue: int, pool: Sequence[str]) -> tuple[int, ...]:
    """``revenue · x_i / v'(T)`` in minor units: largest remainder when every x_i ≥ 0, else each rounded
    half to even (a negative amount: the member pays in). All 0 when T creates no value."""
    if value <= 0 or revenue == 0:
        return tuple(0 for _ in pool)
    exact = [Fraction(float(xi)) for xi in x]
    if all(e >= 0 for e in exact):
        return tuple(largest_remainder(revenue, exact, list(pool)))
    return tuple(round(revenue * e / Fraction(value)) for e in exact)


def recommend_scenario_pool(scenario: str | Path, *, period: str | None = None) -> PoolRecommendation:
    """`recommend_pool` for one period of a scenario file (default: its first period); the pot is the
    period's pool (revenue − platform fee)."""
    inputs = load_inputs(load_scenario(scenario))
    sc = inputs.scenario
    p = sc.check_period(period) if period is not None else sc.period_names()[0]
    members = [m.name for m in sc.members_in(p)]
    if not members:
        raise InputError(f"no member is in the pool in period {p!r}", field="periods")
    ctx = RuleContext.from_inputs(inputs)
    currency = sc.market.currency
    revenue = to_minor(sc.revenue_for(p), currency, file=ctx.file, field="revenue")
    pot = revenue - fee_minor(revenue, sc.market.platform_fee)
    return replace(recommend_pool(ctx, members, pot, currency, period=p), scenario=sc.market.name)
