"""Payout rules: from the member-level game to integer payouts that sum exactly to the pool.

The member game is grouped from source ownership, ``v(T) = u(∪_{m∈T} sources(m))`` (no new model
calls), and the objective weights a_k are applied: by linearity ``Σ_k a_k φ_k`` for the linear rules,
on the scalarised game ``Σ_k a_k u_k`` for the least core. Each rule gives every member a **value** (its
claim) in the units below; the pool is then split in proportion to the claims after the negative-value
policy (largest-remainder rounding in `market.money`, ties broken by member name).

Rules and their value:

* ``shapley``: the Shapley value (exact up to ``max_exact_members`` members, the sampled estimator
  `SAMPLED_SHAPLEY_METHOD` above, with standard errors);
* ``banzhaf``: the Banzhaf value (exact for small games, MSR sampling otherwise);
* ``loo``: leave-one-out, ``v(N) − v(N∖i)``;
* ``least_core``: the least-core payoff (HiGHS LP on the scalarised game; interchangeable members get
  their class average, which stays in the least core — equal treatment of equals); above 16 members by
  constraint generation (`least_core_result`: a clear error, not a hang, when it does not converge
  within its limits);
* ``robust_shapley``: the Shapley value scaled down by the member's data similarity to the other
  members (see `market.robust`);
* ``proportional``: the member's data size (number of preference pairs over all its sources);
* ``equal``: 1 for every member.

Negative-value policy (``[market] negative``), applied to the values v_i to get the split weights w_i:

* ``clip`` (default): ``w_i = max(v_i, 0)`` — a member whose data hurts the pool gets nothing and pays
  nothing; the others split the pool in proportion to their positive values.
* ``shift``: ``w_i = v_i − min(0, min_j v_j)`` — every value is moved up by the same amount so the worst
  member gets 0; keeps the differences between members (a member with a small negative value still gets
  something when another member is worse).
* ``error``: refuse to pay out (`InputError`, field ``market.negative``) when any value is negative.

No-value policy (``[market] no_value``): when **no member created value** — no value v_i is positive
(after snapping, below), whatever the negative policy — no split can be justified by the values:

* ``hold`` (default): nothing is paid; every amount is 0 and the whole pool is **held** (`Allocation.held`,
  `Payout.held_minor`), recorded as such, printed as a ``held`` line and exported as a held row;
  ``paid + held = pool`` always holds. A single member whose data hurts the pool is not paid it.
* ``equal``: the pool is split equally among the members whose data has any effect (null members, whose
  data changes no coalition's utility, get 0; all members when every one is null).

Either way a warning says so. The test looks at the values, not at the weights after the negative policy:
under ``shift`` with every value negative the least bad member would otherwise get the whole pool.
Degenerate cases never crash and never produce NaN. Non-finite values (which a sampled estimator should
not produce) are treated as 0, with a warning. Values within ``1e-12 · max |v(S)|`` of 0 are snapped to
0, so a null member gets exactly 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from market.money import largest_remainder
from market.robust import DEFAULT_STRENGTH, DEFAULT_THRESHOLD, member_similarity, robust_values
from market.scenario.inputs import ScenarioInputs
from market.scenario.schema import NEGATIVE_POLICIES, NO_VALUE_POLICIES, RULES
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.estimators.least_core import EXACT_CONSTRAINTS_MAX_PLAYERS
from valuation.games.game import FunctionGame, Game, GroupedGame, TableGame, scalarised_game
from valuation.games.methods import LINEAR_METHODS
from valuation.games.players import SNAP_RELATIVE, null_players, symmetrise
from valuation.games.result import ValuationResult
from valuation.games.stopping import large_game_stopping

#: The game-engine method behind each value-based rule (``robust_shapley`` rescales the Shapley value by
#: fixed, data-similarity factors, so it keeps Shapley's linearity).
RULE_METHODS: dict[str, str] = {"shapley": "exact", "robust_shapley": "exact", "banzhaf": "banzhaf", "loo": "loo"}
#: Rules whose value of a weighted game Σ a_k u_k is Σ a_k φ_k (re-weighting needs no re-solving); derived
#: from the engine's `LINEAR_METHODS`, the one home of linearity.
LINEAR_RULES: frozenset[str] = frozenset(rule for rule, method in RULE_METHODS.items() if method in LINEAR_METHODS)


@dataclass(frozen=True)
class RuleContext:
    """What a rule needs besides the set of members it pays.

    Attributes:
        game: the source-level game.
        groups: member -> owned sources (every member of the scenario).
        weights: objective weights (objectives missing get 0).
        rule: one of `RULES`.
        negative: one of ``clip``, ``shift``, ``error``.
        no_value: one of ``hold``, ``equal`` (what happens when no member created value).
        sizes: source -> number of pairs (for ``proportional``), or None.
        texts: source -> texts (for ``robust_shapley``), or None.
        robust_strength, robust_threshold: λ and τ of `market.robust`.
        seed, budget: for sampled estimators.
        max_exact_members: exact Shapley up to this many members.
        file: the scenario file, for error messages.
    """

    game: Game
    groups: Mapping[str, Sequence[str]]
    weights: Mapping[str, float]
    rule: str = "shapley"
    negative: str = "clip"
    no_value: str = "hold"
    sizes: Mapping[str, int] | None = None
    texts: Mapping[str, Sequence[str]] | None = None
    robust_strength: float = DEFAULT_STRENGTH
    robust_threshold: float = DEFAULT_THRESHOLD
    seed: int = 0
    budget: int | None = None
    max_exact_members: int = 12
    file: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InputError(f"unknown rule {self.rule!r}: expected one of {', '.join(RULES)}", field="market.rule")
        if self.negative not in NEGATIVE_POLICIES:
            raise InputError(
                f"unknown policy {self.negative!r}: expected one of {', '.join(NEGATIVE_POLICIES)}",
                field="market.negative",
            )
        if self.no_value not in NO_VALUE_POLICIES:
            raise InputError(
                f"unknown policy {self.no_value!r}: expected one of {', '.join(NO_VALUE_POLICIES)}",
                field="market.no_value",
            )

    @classmethod
    def from_inputs(cls, inputs: ScenarioInputs) -> RuleContext:
        """The context of a loaded scenario."""
        sc = inputs.scenario
        return cls(
            game=inputs.game,
            groups=sc.groups(),
            weights=inputs.weights,
            rule=sc.market.rule,
            negative=sc.market.negative,
            no_value=sc.market.no_value,
            sizes=inputs.sizes,
            texts=inputs.texts,
            robust_strength=sc.robust.strength,
            robust_threshold=sc.robust.threshold,
            seed=sc.valuation.seed,
            budget=sc.valuation.budget,
            max_exact_members=sc.valuation.max_exact_members,
            file=str(inputs.loaded.path),
        )

    def member_game(self, members: Sequence[str]) -> GroupedGame:
        """The member-level game of `members` (sources of anybody else are absent).

        Its players are positional aliases ``#0, #1, …`` (member names may contain characters a game's
        player names may not, such as ``+``); everything downstream works by position.
        """
        return GroupedGame(self.game, {f"#{i}": tuple(self.groups[m]) for i, m in enumerate(members)})

    def scalar_game(self, members: Sequence[str]) -> FunctionGame:
        """The objective-weighted one-objective member game ``Σ_k a_k v_k``."""
        return scalarised_game(self.member_game(members), self.weights)


@dataclass(frozen=True)
class RuleValues:
    """The rule's claim per member, before the negative policy and rounding.

    Attributes:
        members: names, in the given order.
        values: ``float[n]`` claims (units in the module docstring).
        std_errs: ``float[n]`` standard errors (0 for exact methods and non-statistical rules).
        result: the per-objective `ValuationResult` on the member game (None for equal/proportional;
            one objective ``weighted`` for the least core).
        info: rule details (similarities and penalty factors for robust_shapley, ε for least_core…).
    """

    members: tuple[str, ...]
    values: np.ndarray
    std_errs: np.ndarray
    result: ValuationResult | None = None
    info: dict = field(default_factory=dict)


#: The sampled Shapley method above ``max_exact_members``: size-stratified regression, measured at least as
#: accurate as permutation sampling and within 1.2× of shapiq's best approximator (``payoutsim bench --only e``).
SAMPLED_SHAPLEY_METHOD = "regression"


def shapley_result(game: Game, ctx: RuleContext) -> ValuationResult:
    """Shapley values of every player of `game`, per objective: exact (`approximate(game, "exact")`) up to
    ``ctx.max_exact_members`` players, `SAMPLED_SHAPLEY_METHOD` with ``ctx.budget`` evaluations and
    ``ctx.seed`` above (with standard errors). When the scenario's game is not a table (a large market's
    compact game, where evaluations are cheap) it samples until every standard error is 1% of the grand
    coalition's value, at most ``ctx.budget`` evaluations (`valuation.games.stopping.large_game_stopping`)."""
    if len(game.players) <= ctx.max_exact_members:
        return approximate(game, "exact")
    if isinstance(ctx.game, TableGame):
        return approximate(game, SAMPLED_SHAPLEY_METHOD, ctx.budget, seed=ctx.seed)
    return approximate(game, SAMPLED_SHAPLEY_METHOD, seed=ctx.seed, stopping=large_game_stopping(game, None, ctx.budget))


def is_sampled(ctx: RuleContext, n_members: int) -> bool:
    """True when ``ctx.rule`` estimates its value by sampling for `n_members` members (Shapley and Banzhaf
    above ``max_exact_members``, the least core with a constraint budget), so it carries estimator noise."""
    if ctx.rule in ("shapley", "robust_shapley", "banzhaf"):
        return n_members > ctx.max_exact_members
    return ctx.rule == "least_core" and ctx.budget is not None


def least_core_result(ctx: RuleContext, scalar: Game, n: int) -> ValuationResult:
    """The least core of the scalar member game: exact up to 16 members, sampled constraints with
    ``ctx.budget``, constraint generation above 16 without a budget (`valuation.games.estimators.least_core`);
    when that does not converge within its limits, or there are too many members, an `InputError` names
    the limit and the alternatives (field ``market.rule``)."""
    try:
        return approximate(scalar, "least_core", ctx.budget, seed=ctx.seed)
    except InputError as err:
        if ctx.budget is not None or n <= EXACT_CONSTRAINTS_MAX_PLAYERS:
            raise
        raise InputError(
            f"rule 'least_core' with {n} members: {err.message}. Choose rule = 'shapley', 'banzhaf' or 'loo', "
            "or set [valuation] budget to solve the least core on that many sampled coalitions (ε is then a "
            "lower bound)",
            file=ctx.file,
            field="market.rule",
        ) from err


def rule_values(ctx: RuleContext, members: Sequence[str]) -> RuleValues:
    """Compute the claims of `members` under ``ctx.rule`` on their member game."""
    members = tuple(members)
    n = len(members)
    if n == 0:
        raise InputError("no members in the pool", file=ctx.file, field="members")
    rule = ctx.rule
    info: dict[str, Any] = {}
    if rule in RULE_METHODS:
        game = ctx.member_game(members)
        if rule == "banzhaf":
            result = approximate(game, "banzhaf", ctx.budget if n > ctx.max_exact_members else None, seed=ctx.seed)
        elif rule == "loo":
            result = approximate(game, "loo")
        else:
            result = shapley_result(game, ctx)
        values, std_errs = result.scalarised(ctx.weights)
        if rule == "robust_shapley":
            sim = member_similarity(members, ctx.groups, ctx.texts, file=ctx.file)
            shapley = values
            values = robust_values(shapley, sim, ctx.robust_strength, ctx.robust_threshold)
            ratio = np.divide(values, shapley, out=np.ones_like(values), where=shapley != 0)
            std_errs = std_errs * np.abs(ratio)
            info.update(
                shapley=[float(v) for v in shapley],
                similarity=[[float(x) for x in row] for row in sim],
                strength=ctx.robust_strength,
                threshold=ctx.robust_threshold,
            )
        return RuleValues(members, np.asarray(values, float), np.asarray(std_errs, float), result, info)
    if rule == "least_core":
        scalar = ctx.scalar_game(members)
        result = least_core_result(ctx, scalar, n)
        info["epsilon"] = float(result.info["epsilon"][0])
        values = result.values[:, 0].copy()
        if n <= ctx.max_exact_members:
            values = symmetrise(values, scalar(all_coalitions(n))[:, 0])
        return RuleValues(members, values, result.std_errs[:, 0].copy(), result, info)
    if rule == "proportional":
        if ctx.sizes is None:
            raise InputError(
                "rule 'proportional' pays by data size: set [valuation] data or a [sizes] table",
                file=ctx.file,
                field="sizes",
            )
        sizes = []
        for m in members:
            missing = [s for s in ctx.groups[m] if s not in ctx.sizes]
            if missing:
                raise InputError(
                    f"rule 'proportional': no size for source {missing[0]!r} of member {m!r}",
                    file=ctx.file,
                    field=f"sizes.{missing[0]}",
                )
            sizes.append(float(sum(ctx.sizes[s] for s in ctx.groups[m])))
        return RuleValues(members, np.array(sizes), np.zeros(n), None, {})
    # equal
    return RuleValues(members, np.ones(n), np.zeros(n), None, {})


@dataclass(frozen=True)
class Allocation:
    """A pool split among members.

    Attributes:
        weights: the split weights after the negative and no-value policies (exact, from the float values;
            all 0 when the pool is held).
        shares: ``w_i / Σ w`` as floats (all equal after the ``equal`` fallback, all 0 when held).
        amounts: integer minor units; ``sum(amounts) + held == pool``.
        warnings: what was degenerate and what was done about it.
        held: minor units not paid out (the whole pool under ``no_value = "hold"`` when no member created
            value, else 0).
    """

    weights: tuple[Fraction, ...]
    shares: np.ndarray
    amounts: tuple[int, ...]
    warnings: tuple[str, ...]
    held: int = 0


def allocate(
    members: Sequence[str],
    values: np.ndarray,
    pool_minor: int,
    negative: str = "clip",
    *,
    no_value: str = "hold",
    scale: float | None = None,
    null: Sequence[bool] | None = None,
    file: str | None = None,
) -> Allocation:
    """Split `pool_minor` minor units among `members` in proportion to their values (module docstring).

    `scale` (default ``max |values|``) sets the snap-to-zero threshold ``1e-12 · scale``. When no value is
    positive, `no_value` decides: ``hold`` pays nothing (``held`` = the pool), ``equal`` splits equally,
    leaving out the members flagged in `null` (their data changes no coalition's utility) unless every
    member is null, so a null member is never paid.
    """
    members = tuple(members)
    v = np.array(values, dtype=float)
    if v.shape != (len(members),):
        raise ValueError("one value per member")
    warnings: list[str] = []
    bad = ~np.isfinite(v)
    if bad.any():
        names = ", ".join(m for m, b in zip(members, bad, strict=True) if b)
        warnings.append(f"non-finite value for {names}: treated as 0")
        v[bad] = 0.0
    ref = float(np.max(np.abs(v))) if scale is None and v.size else float(scale or 0.0)
    v[np.abs(v) <= SNAP_RELATIVE * ref] = 0.0
    negatives = ", ".join(f"{m} ({x:.6g})" for m, x in zip(members, v, strict=True) if x < 0)
    if negative == "error" and negatives:
        raise InputError(
            f"negative value for {negatives}: choose negative = 'clip' or 'shift' to pay out anyway",
            file=file,
            field="market.negative",
        )
    if not (v > 0).any():
        return _no_value_allocation(members, pool_minor, no_value, negatives, null, warnings)
    if negative == "shift":
        w = v - min(0.0, float(v.min()))
    else:
        w = np.maximum(v, 0.0)
        if negatives:
            clipped = ", ".join(m for m, x in zip(members, v, strict=True) if x < 0)
            warnings.append(f"negative value clipped to 0 for {clipped}")
    exact = [Fraction(float(x)) for x in w]
    total = sum(exact, Fraction(0))
    shares = np.array([float(x / total) for x in exact])
    amounts = largest_remainder(pool_minor, exact, members)
    return Allocation(tuple(exact), shares, tuple(amounts), tuple(warnings))


def _no_value_allocation(
    members: tuple[str, ...],
    pool_minor: int,
    no_value: str,
    negatives: str,
    null: Sequence[bool] | None,
    warnings: list[str],
) -> Allocation:
    """The allocation when no member created value: the pool held (``hold``) or split equally among the
    members whose data has any effect (``equal``); a warning says which and why."""
    why = "no member created value (no value is positive" + (f"; negative: {negatives}" if negatives else "") + ")"
    if no_value == "hold":
        warnings.append(f"{why}: the pool is held, nothing is paid out (no_value = 'hold')")
        zero = tuple(Fraction(0) for _ in members)
        return Allocation(zero, np.zeros(len(members)), tuple(0 for _ in members), tuple(warnings), held=pool_minor)
    eligible = [not x for x in null] if null is not None and not all(null) else [True] * len(members)
    who = "" if all(eligible) else " among the members whose data has any effect"
    warnings.append(f"{why}: the pool is split equally{who} (no_value = 'equal')")
    exact = [Fraction(1 if ok else 0) for ok in eligible]
    total = sum(exact, Fraction(0))
    shares = np.array([float(x / total) for x in exact])
    return Allocation(tuple(exact), shares, tuple(largest_remainder(pool_minor, exact, members)), tuple(warnings))


@dataclass(frozen=True)
class Payout:
    """One pool paid out under one rule.

    Attributes:
        members, rule, currency, pool_minor: what was split.
        values, std_errs: the rule's claims (`RuleValues`).
        shares: fractions of the pool (sum 1).
        amounts: minor units per member; ``sum(amounts) + held_minor == pool_minor``.
        result: the per-objective valuation on the member game (or None).
        warnings: degenerate-case notes.
        info: rule details.
        held_minor: minor units not paid out (`Allocation.held`: the pool under ``no_value = "hold"`` when
            no member created value, else 0).
    """

    members: tuple[str, ...]
    rule: str
    currency: str
    pool_minor: int
    values: np.ndarray
    std_errs: np.ndarray
    shares: np.ndarray
    amounts: tuple[int, ...]
    result: ValuationResult | None
    warnings: tuple[str, ...]
    info: dict
    held_minor: int = 0

    @property
    def paid_minor(self) -> int:
        """Minor units paid to members (``pool_minor − held_minor``)."""
        return int(sum(self.amounts))


def compute_payout(ctx: RuleContext, members: Sequence[str], pool_minor: int, currency: str) -> Payout:
    """Value `members` under ``ctx.rule`` and split `pool_minor` minor units of `currency` among them."""
    rv = rule_values(ctx, members)
    scale = None
    null = None
    if ctx.rule not in ("proportional", "equal") and len(members) <= 20:
        table = ctx.scalar_game(members)(all_coalitions(len(members)))[:, 0]
        scale = float(np.max(np.abs(table - table[0])))
        null = null_players(table)
    alloc = allocate(
        rv.members, rv.values, pool_minor, ctx.negative, no_value=ctx.no_value, scale=scale, null=null, file=ctx.file
    )
    return Payout(
        members=rv.members,
        rule=ctx.rule,
        currency=currency,
        pool_minor=pool_minor,
        values=rv.values,
        std_errs=rv.std_errs,
        shares=alloc.shares,
        amounts=alloc.amounts,
        result=rv.result,
        warnings=alloc.warnings,
        info=rv.info,
        held_minor=alloc.held,
    )
