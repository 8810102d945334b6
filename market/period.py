"""One period of a scenario: who is in the pool, what the pool is, its payout, the payout's uncertainty
and its stability (`run_period`, the unit the ledger records).

Stability (`valuation.games.stability.check_stability`): the core is checked over every coalition up to
`CORE_MAX_MEMBERS` members; above, blocking coalitions are searched for on the scalar member game
(`valuation.games.search`, `DEFAULT_SEARCH_BUDGET` evaluations, the scenario's seed), and the least-core ε
is reported only under the ``least_core`` rule (its payout computes it).

The uncertainty (`market.uncertainty`) comes from the scenario's replicate tables
(`market.scenario.inputs.ScenarioInputs.replicates`) with its ``[uncertainty]`` settings; when it is
found, the payout's standard errors (the rule's weighted value and the per-objective values) are those
of the replicates, with their intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from market.money import fee_minor, to_minor
from market.rules import Payout, RuleContext, compute_payout, is_sampled
from market.scenario.inputs import ScenarioInputs
from market.uncertainty import PayoutUncertainty, payout_uncertainty
from valuation.coalition_utility.compact import PairGame
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.estimators.least_core import EXACT_CONSTRAINTS_MAX_PLAYERS, GENERATION_TIME_CAP_S
from valuation.games.replicates import percentile_interval
from valuation.games.stability import CORE_MAX_MEMBERS, StabilityReport, check_stability


@dataclass(frozen=True)
class PeriodRun:
    """The payout of one period of a scenario, with its stability verdict.

    Attributes:
        period: the period label.
        revenue_minor, fee_minor, pool_minor: revenue, platform fee and the pool (revenue − fee).
        payout: the `Payout`.
        stability: the `StabilityReport` of the payout.
        coalitions: member coalitions of the game table as JSON arrays of member names (``[]`` = ∅,
            coalition-index order), or () when too large.
        utilities: ``float[2^n, m]`` member-game utilities per objective (aligned with `coalitions`).
        objectives: objective names of `utilities`.
        uncertainty: the replicate payouts (`market.uncertainty.PayoutUncertainty`), or None when there is
            nothing to resample (exact values of a given table without standard errors) or it is off.
        compact_game: ``PairGame.to_bytes()`` of the source-level game when the period has more than
            `CORE_MAX_MEMBERS` members and the game is a `PairGame` (the ledger keeps it instead of the
            2^n table), else None.
    """

    period: str
    revenue_minor: int
    fee_minor: int
    pool_minor: int
    payout: Payout
    stability: StabilityReport
    coalitions: tuple[str, ...]
    utilities: np.ndarray
    objectives: tuple[str, ...]
    uncertainty: PayoutUncertainty | None = None
    compact_game: bytes | None = None


def run_period(inputs: ScenarioInputs, period: str, ctx: RuleContext | None = None) -> PeriodRun:
    """Pay out one period of a loaded scenario: members present, revenue − fee, rule, uncertainty, stability."""
    sc = inputs.scenario
    ctx = ctx or RuleContext.from_inputs(inputs)
    sc.check_period(period)
    members = [m.name for m in sc.members_in(period)]
    if not members:
        raise InputError(f"no member is in the pool in period {period!r}", file=ctx.file, field="periods")
    currency = sc.market.currency
    revenue_minor = to_minor(sc.revenue_for(period), currency, file=ctx.file, field="revenue")
    fee = fee_minor(revenue_minor, sc.market.platform_fee)
    pool = revenue_minor - fee
    settings = sc.uncertainty
    check_least_core_replicates(ctx, len(members), settings.replicates if inputs.replicates is not None else 0)
    payout = compute_payout(ctx, members, pool, currency)
    uncertainty = payout_uncertainty(
        ctx, tuple(members), pool, currency, payout, inputs.replicates, settings, sampled=is_sampled(ctx, len(members))
    )
    if uncertainty is not None:
        payout = with_replicate_errors(payout, uncertainty)

    n = len(members)
    if n <= CORE_MAX_MEMBERS:
        masks = all_coalitions(n)
        member_game = ctx.member_game(members)
        utilities = np.asarray(member_game(masks), dtype=float)
        scalar = utilities @ np.array([float(ctx.weights.get(o, 0.0)) for o in member_game.objectives])
        if ctx.rule == "least_core":
            epsilon = float(payout.info["epsilon"])
        else:
            epsilon = float(approximate(ctx.scalar_game(members), "least_core").info["epsilon"][0])
        stability = check_stability(members, scalar, payout.shares, least_core_epsilon=epsilon)
        labels = tuple(
            json.dumps([m for m, inside in zip(members, row, strict=True) if inside], ensure_ascii=False)
            for row in masks
        )
        objectives = tuple(member_game.objectives)
    else:
        # 2^n coalitions are too many: blocking coalitions are searched for (found: unstable; none found:
        # not proven stable); ε only when the rule computed it (constraint generation costs seconds here)
        epsilon = float(payout.info["epsilon"]) if ctx.rule == "least_core" else None
        stability = check_stability(
            members, None, payout.shares, game=ctx.scalar_game(members), seed=ctx.seed, least_core_epsilon=epsilon
        )
        labels, utilities, objectives = (), np.zeros((0, 0)), ()
    return PeriodRun(
        period=period,
        revenue_minor=revenue_minor,
        fee_minor=fee,
        pool_minor=pool,
        payout=payout,
        stability=stability,
        coalitions=labels,
        utilities=utilities,
        objectives=objectives,
        uncertainty=uncertainty,
        compact_game=ctx.game.to_bytes() if n > CORE_MAX_MEMBERS and isinstance(ctx.game, PairGame) else None,
    )


def check_least_core_replicates(ctx: RuleContext, n: int, replicates: int) -> None:
    """Refuse at once (`InputError`, field ``uncertainty.replicates``) the ``least_core`` rule above
    `EXACT_CONSTRAINTS_MAX_PLAYERS` members without a budget when the uncertainty would pay out
    `replicates` replicate games: each would need its own constraint generation (up to
    `GENERATION_TIME_CAP_S` seconds), which is no answer in reasonable time."""
    if ctx.rule != "least_core" or n <= EXACT_CONSTRAINTS_MAX_PLAYERS or ctx.budget is not None or replicates == 0:
        return
    raise InputError(
        f"rule 'least_core' with {n} members: the payout's uncertainty would solve the least core by constraint "
        f"generation on each of {replicates} replicate games (up to {GENERATION_TIME_CAP_S:g} s each); set "
        "[uncertainty] replicates = 0, or [valuation] budget to sample constraints, or choose rule = 'shapley', "
        "'banzhaf' or 'loo'",
        file=ctx.file,
        field="uncertainty.replicates",
    )


def with_replicate_errors(payout: Payout, uncertainty: PayoutUncertainty) -> Payout:
    """`payout` whose standard errors are the replicates': the weighted value's, and the per-objective
    values' (with their intervals) when the rule is linear."""
    result = payout.result
    if result is not None and uncertainty.objective_values is not None:
        samples = uncertainty.objective_values
        lo, hi = percentile_interval(samples, uncertainty.level)
        std_errs = samples.std(axis=0, ddof=1) if samples.shape[0] > 1 else np.full(result.values.shape, np.nan)
        result = replace(result, std_errs=std_errs, lo=lo, hi=hi, info={**result.info, "interval": uncertainty.describe()})
    return replace(payout, std_errs=uncertainty.value_se, result=result)
