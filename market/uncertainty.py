"""The uncertainty of a payout: every replicate game paid out by the same rule, to the minor unit.

The rule's value is only as exact as the coalition table it is computed from, and the table was
measured on a finite eval set (`valuation.games.replicates`). For each replicate table u_b (B of them:
a bootstrap over the eval pairs or prompts, jointly across coalitions; or normal noise from the table's
standard errors when it comes without its items) the whole payout is recomputed — the rule's values,
the negative-value and no-value policies, the normalisation to shares and the largest-remainder
rounding to minor units (`market.rules.compute_payout`) — giving B amounts per member. A sampled
estimator is re-seeded on every replicate, so its own noise is included. From those:

* ``value_se``, ``share_se``, ``amount_se``: standard deviations over the replicates (ddof = 1);
* ``value_lo/hi``, ``share_lo/hi``, ``amount_lo/hi``: the central ``level`` percentile intervals
  (amounts: the replicate amounts at those ranks, whole minor units);
* ``rank``: P[i, j], the fraction of replicates in which member i is paid more than member j (ties
  count half) — "is alice really paid more than bob?".

With neither replicates nor a sampled estimator there is nothing to resample (exact values of a given
table without standard errors): `payout_uncertainty` returns None and every figure is reported as exact.

Under ``negative = "error"`` a replicate with a negative value would refuse to pay; it is paid with
``clip`` instead and counted in ``refused`` (the share of draws in which the payout would have stopped).

Cost: B payouts. On the demo (2 members, 7 sources, B = 200) it takes about 0.3 s; the least core
solves one LP per replicate. On the compact game of a large market (no table; `valuation.coalition_utility.
compact.PairReplicates`) a sampled Shapley or Banzhaf payout values all B replicates in one estimator pass on
the same sampled coalitions (`common_coalition_values`) and adds the estimator's own noise from its standard
errors; only the allocation (policies, shares, rounding) runs B times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from market.robust import robust_values
from market.rules import Payout, RuleContext, allocate, compute_payout
from market.scenario.schema import UncertaintySection
from valuation.errors import InputError
from valuation.games.game import GroupedGame, objective_weights
from valuation.games.replicates import ReplicateGames, percentile_interval, rank_confidence
from valuation.games.uncertainty import design_values

#: Replicates used when only the estimator is resampled (a given table without standard errors).
ESTIMATOR_ONLY_REPLICATES = 50
#: Sampled linear rules whose replicates of a compact game are valued in one pass (`common_coalition_values`).
COMMON_COALITION_RULES = frozenset({"shapley", "robust_shapley", "banzhaf"})


@dataclass(frozen=True)
class PayoutUncertainty:
    """B replicate payouts of one pool and their summaries (module docstring).

    Attributes:
        members: names, in payout order.
        kind: what was resampled, in words.
        level: the interval's coverage (0.95).
        seed: the resampling seed.
        values: ``float[B, n]`` the rule's (objective-weighted) values per replicate.
        shares: ``float[B, n]``.
        amounts: ``int[B, n]`` minor units.
        objective_values: ``float[B, n, k]`` per-objective values (linear rules), or None.
        objectives: the names of its last axis.
        refused: replicates that ``negative = "error"`` would have refused to pay.
        held: replicates in which the pool was held (no member created value).
    """

    members: tuple[str, ...]
    kind: str
    level: float
    seed: int
    values: np.ndarray
    shares: np.ndarray
    amounts: np.ndarray
    objective_values: np.ndarray | None = None
    objectives: tuple[str, ...] = ()
    refused: int = 0
    held: int = 0

    @property
    def n_replicates(self) -> int:
        return int(self.values.shape[0])

    @property
    def value_se(self) -> np.ndarray:
        return _sd(self.values)

    @property
    def share_se(self) -> np.ndarray:
        return _sd(self.shares)

    @property
    def amount_se(self) -> np.ndarray:
        """Standard error of each amount, in minor units (a float)."""
        return _sd(self.amounts.astype(float))

    def value_interval(self) -> tuple[np.ndarray, np.ndarray]:
        return percentile_interval(self.values, self.level)

    def share_interval(self) -> tuple[np.ndarray, np.ndarray]:
        return percentile_interval(self.shares, self.level)

    def amount_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole minor units: the replicate amounts at the interval's ranks."""
        alpha = (1.0 - self.level) / 2.0
        lo = np.quantile(self.amounts, alpha, axis=0, method="lower")
        hi = np.quantile(self.amounts, 1.0 - alpha, axis=0, method="higher")
        return lo.astype(np.int64), hi.astype(np.int64)

    def objective_interval(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.objective_values is None:
            return None
        return percentile_interval(self.objective_values, self.level)

    @property
    def rank(self) -> np.ndarray:
        """P[i, j] = P(member i is paid more than member j), over the replicates (ties half)."""
        return rank_confidence(self.amounts.astype(float))

    def describe(self) -> dict[str, Any]:
        """The method in JSON form: what was resampled, how many replicates, level, seed, refusals, holds."""
        return {
            "method": "replicate payouts",
            "resampled": self.kind,
            "replicates": self.n_replicates,
            "level": self.level,
            "seed": self.seed,
            "refused": self.refused,
            "held": self.held,
        }


def payout_uncertainty(
    ctx: RuleContext,
    members: tuple[str, ...],
    pool_minor: int,
    currency: str,
    payout: Payout,
    replicates: ReplicateGames | None,
    settings: UncertaintySection,
    *,
    sampled: bool,
) -> PayoutUncertainty | None:
    """The replicate payouts of `payout` (module docstring); None when nothing can be resampled (no
    `replicates` and no sampled estimator: `sampled` False) or ``settings.replicates`` is 0."""
    if settings.replicates == 0 or (replicates is None and not sampled):
        return None
    if replicates is not None:
        count, kind = replicates.n_replicates, replicates.kind
    else:
        count, kind = min(settings.replicates, ESTIMATOR_ONLY_REPLICATES), "the estimator's samples only (re-seeded)"
    negative = "clip" if ctx.negative == "error" else ctx.negative
    common = common_coalition_values(ctx, members, payout, replicates, settings.seed) if sampled else None
    if common is not None:
        kind += "; the estimator's noise drawn from its standard errors"
    values, shares, amounts, per_objective = [], [], [], []
    refused = held = 0
    for b in range(count):
        if common is not None:
            alloc = allocate(members, common[0][b], pool_minor, negative, no_value=ctx.no_value, file=ctx.file)
            pay = replace(payout, values=common[0][b], shares=alloc.shares, amounts=alloc.amounts, held_minor=alloc.held,
                          result=replace(payout.result, values=common[1][b]) if payout.result is not None else None)
        else:
            pay = replicate_payout(ctx, members, pool_minor, currency, replicates, b, negative)
        if ctx.negative == "error" and np.any(pay.values < 0):
            refused += 1
        held += int(pay.held_minor > 0)
        values.append(pay.values)
        shares.append(pay.shares)
        amounts.append(pay.amounts)
        if pay.result is not None and pay.result.is_linear:
            per_objective.append(pay.result.values)
    objectives = tuple(payout.result.objectives) if payout.result is not None and per_objective else ()
    return PayoutUncertainty(
        members=tuple(members),
        kind=kind,
        level=settings.level,
        seed=settings.seed,
        values=np.array(values, dtype=float),
        shares=np.array(shares, dtype=float),
        amounts=np.array(amounts, dtype=np.int64),
        objective_values=np.array(per_objective) if len(per_objective) == count else None,
        objectives=objectives if len(per_objective) == count else (),
        refused=refused,
        held=held,
    )


def replicate_payout(
    ctx: RuleContext,
    members: tuple[str, ...],
    pool_minor: int,
    currency: str,
    replicates: ReplicateGames | None,
    b: int,
    negative: str,
) -> Payout:
    """The whole payout recomputed on replicate `b` (or, without replicates, with the estimator re-seeded)."""
    game = replicates.game(b) if replicates is not None else ctx.game
    rctx = replace(ctx, game=game, seed=ctx.seed + 1 + b, negative=negative)
    try:
        return compute_payout(rctx, members, pool_minor, currency)
    except InputError as err:  # a rule that cannot pay this draw (e.g. no sizes) cannot pay the point either
        raise InputError(f"replicate {b} of the uncertainty: {err.message}", file=ctx.file, field=err.field) from None


def common_coalition_values(
    ctx: RuleContext,
    members: tuple[str, ...],
    payout: Payout,
    replicates: ReplicateGames | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The rule's values on every replicate in ONE sampled pass, for replicates that are not complete
    tables (the compact game's bootstrap) under a sampled linear rule (shapley, robust_shapley, banzhaf):
    the stacked member game is valued on the point payout's own coalitions (`valuation.games.uncertainty.
    design_values`: a linear solve for regression; banzhaf samples the same budget again), and its own noise — which the common coalitions leave out of the spread —
    is drawn per replicate as normal noise with the point estimate's standard errors (seeded by `seed`).
    Returns (weighted values ``[B, n]``, per-objective values ``[B, n, k]``), or None when this does not
    apply (then every replicate is paid out on its own, `replicate_payout`)."""
    result = payout.result
    if replicates is None or replicates.is_complete() or result is None or ctx.rule not in COMMON_COALITION_RULES:
        return None
    groups = {f"#{i}": tuple(ctx.groups[m]) for i, m in enumerate(members)}
    stacked = GroupedGame(replicates.stacked_game(), groups)
    budget = max(int(result.n_evaluations), 2)
    per_objective = replicates.unstack(design_values(stacked, result.method, budget, seed=ctx.seed, design=result.design))
    noise = np.random.default_rng(seed).standard_normal(per_objective.shape)
    per_objective = per_objective + noise * np.nan_to_num(result.std_errs, nan=0.0)[None]
    weighted = per_objective @ objective_weights(result.objectives, ctx.weights)
    if ctx.rule == "robust_shapley":
        similarity = np.asarray(payout.info["similarity"], dtype=float)
        weighted = np.stack([robust_values(v, similarity, ctx.robust_strength, ctx.robust_threshold) for v in weighted])
    return weighted, per_objective


def _sd(x: np.ndarray) -> np.ndarray:
    return x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.full(x.shape[1:], np.nan)


__all__ = ["COMMON_COALITION_RULES", "ESTIMATOR_ONLY_REPLICATES", "PayoutUncertainty", "common_coalition_values",
           "payout_uncertainty", "replicate_payout"]
