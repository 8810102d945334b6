"""Pooling what-if: compare pool structures by value created and each member's payout.

A *structure* is a partition of the period's members into pools. Compared structures: the grand pool,
everyone alone, the leave-one-out pools (``N∖{i}`` together, ``i`` alone) — of every member up to
`LEAVE_ONE_OUT_MAX_MEMBERS` members, above only of the members named with ``--members`` (each costs a
payout of n − 1 members, a sampled Shapley value at that size) — and the user's partitions (``[pool]
partitions`` in the scenario, or ``--partition`` on the command line; ``--partition a+b+c`` is the pool of
only those members, the rest alone). Everything comes from the coalition game: no retraining.

Money model: the market pays for value created at the grand pool's price. With ``v'(S) = v(S) − v(∅)``
the objective-weighted value a pool S creates, pool S earns

    revenue(S) = P · max(0, v'(S)) / v'(N)        (rounded half-to-even to a minor unit)

where P is the grand pool's payout pot (revenue − platform fee), and splits it among its members with
the scenario's rule on its own member game. (When the grand pool creates no value, v'(N) ≤ 0, every
other pool is priced at 0 and a warning says so.) A member **would rather leave** the grand pool for a
structure when it is paid more there; members of the structure's other pools that gain are listed too.
Under this model a payout in the core of the game is exactly one no structure beats for any group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from market.period import run_period
from market.rules import Payout, RuleContext, compute_payout
from market.scenario.inputs import load_inputs
from market.scenario.schema import load_scenario
from valuation.errors import InputError

Partition = tuple[tuple[str, ...], ...]

LEAVE_ONE_OUT_MAX_MEMBERS = 16  # above, leave-one-out structures only for the members asked for


@dataclass(frozen=True)
class PoolOutcome:
    """One pool of a structure: its members, the value it creates, its revenue and payouts."""

    members: tuple[str, ...]
    value_created: float
    revenue_minor: int
    amounts: tuple[int, ...]


@dataclass(frozen=True)
class StructureOutcome:
    """One structure: its pools, the total value created, each member's payout and the comparison."""

    name: str
    pools: tuple[PoolOutcome, ...]
    value_created: float
    payouts: dict[str, int]
    delta: dict[str, int]  # payout here − payout in the grand pool
    better_off: tuple[str, ...]  # members paid strictly more here than in the grand pool


@dataclass(frozen=True)
class PoolComparison:
    """All compared structures (the grand pool first) and the period's money terms.

    ``rule`` is the rule every pool is split with; ``scenario`` the scenario's name (empty when the
    comparison was not made from a scenario file).
    """

    period: str
    currency: str
    pool_minor: int
    members: tuple[str, ...]
    structures: tuple[StructureOutcome, ...]
    warnings: tuple[str, ...] = field(default=())
    rule: str = ""
    scenario: str = ""

    @property
    def grand(self) -> StructureOutcome:
        return self.structures[0]

    def would_leave(self) -> dict[str, list[str]]:
        """member -> the structures (other than the grand pool) in which it is paid more."""
        out: dict[str, list[str]] = {}
        for s in self.structures[1:]:
            for m in s.better_off:
                out.setdefault(m, []).append(s.name)
        return out


def parse_partition(text: str, members: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Parse ``"alice+bob|carol"`` (pools separated by ``|``, members by ``+``) into a partition.

    Members of the period missing from the text are each put in a pool of their own. Unknown or repeated
    members raise `InputError` (field ``partition``).
    """
    pools = [tuple(p.strip() for p in block.split("+") if p.strip()) for block in text.split("|")]
    pools = [p for p in pools if p]
    return complete_partition(pools, members, label=text)


def complete_partition(
    pools: Sequence[Sequence[str]], members: Sequence[str], *, label: str = "partition"
) -> tuple[tuple[str, ...], ...]:
    """Check a partition of (a subset of) `members`; the members it leaves out go alone."""
    seen: set[str] = set()
    out: list[tuple[str, ...]] = []
    for pool in pools:
        for m in pool:
            if m not in members:
                raise InputError(f"unknown member {m!r} in {label!r} (members: {', '.join(members)})", field="partition")
            if m in seen:
                raise InputError(f"member {m!r} is in two pools of {label!r}", field="partition")
            seen.add(m)
        out.append(tuple(pool))
    out.extend((m,) for m in members if m not in seen)
    return tuple(out)


def describe(partition: Sequence[Sequence[str]]) -> str:
    """``"alice+bob | carol"``."""
    return " | ".join("+".join(p) for p in partition)


def compare_pools(
    ctx: RuleContext,
    members: Sequence[str],
    pool_minor: int,
    currency: str,
    *,
    partitions: Sequence[Sequence[Sequence[str]]] = (),
    period: str = "",
    leave_one_out: Sequence[str] | None = None,
    grand_payout: Payout | None = None,
) -> PoolComparison:
    """Compare the grand pool, everyone alone, the leave-one-out pools and `partitions` (module docstring).

    `leave_one_out`: the members whose ``without <m>`` structure is built (default: every member up to
    `LEAVE_ONE_OUT_MAX_MEMBERS` members, none above); `grand_payout`: the grand pool's payout when already
    computed (it is not computed again).
    """
    members = tuple(members)
    if not members:
        raise InputError("no members to compare", field="members")
    if leave_one_out is None:
        leave_one_out = members if len(members) <= LEAVE_ONE_OUT_MAX_MEMBERS else ()
    check_members(leave_one_out, members)
    created = value_created(ctx, members)
    grand_value = created(members)
    warnings: list[str] = []
    if grand_value <= 0:
        warnings.append("the grand pool creates no value: other pools are priced at 0")

    def revenue(pool: Sequence[str]) -> int:
        if tuple(pool) == members:
            return pool_minor
        if grand_value <= 0:
            return 0
        share = Fraction(max(0.0, created(pool))) / Fraction(grand_value)
        return round(pool_minor * share)  # Fraction rounds half to even

    structures: list[StructureOutcome] = []
    grand_pay: dict[str, int] = {}
    cache: dict[tuple[str, ...], PoolOutcome] = {}
    if grand_payout is not None and tuple(grand_payout.members) == members:
        cache[members] = PoolOutcome(members, grand_value, pool_minor, grand_payout.amounts)
        warnings.extend(f"{'+'.join(members)}: {w}" for w in grand_payout.warnings if "clipped" not in w)
    if len(members) > LEAVE_ONE_OUT_MAX_MEMBERS and len(leave_one_out) < len(members):
        warnings.append(f"more than {LEAVE_ONE_OUT_MAX_MEMBERS} members: leave-one-out pools only for "
                        f"{len(leave_one_out)} member(s) (--members a,b,… names them)")
    for name, partition in named_structures(members, partitions, leave_one_out):
        pools = []
        pay: dict[str, int] = {}
        for pool in partition:
            if pool not in cache:
                rev = revenue(pool)
                payout = compute_payout(ctx, pool, rev, currency)
                warnings.extend(f"{'+'.join(pool)}: {w}" for w in payout.warnings if "clipped" not in w)
                cache[pool] = PoolOutcome(pool, created(pool), rev, payout.amounts)
            outcome = cache[pool]
            pools.append(outcome)
            pay.update(zip(outcome.members, outcome.amounts, strict=True))
        if not grand_pay:
            grand_pay = dict(pay)
        structures.append(structure_outcome(name, pools, pay, grand_pay, members))
    return PoolComparison(
        period=period,
        currency=currency,
        pool_minor=pool_minor,
        members=members,
        structures=tuple(structures),
        warnings=tuple(dict.fromkeys(warnings)),
        rule=ctx.rule,
    )


def value_created(ctx: RuleContext, members: tuple[str, ...]) -> Callable[[Sequence[str]], float]:
    """``pool -> v'(pool) = v(pool) − v(∅)`` on the objective-weighted member game of `members`."""
    scalar = ctx.scalar_game(members)
    empty = float(scalar(np.zeros((1, len(members)), dtype=bool))[0, 0])

    def created(pool: Sequence[str]) -> float:
        mask = np.array([[m in pool for m in members]], dtype=bool)
        return float(scalar(mask)[0, 0]) - empty

    return created


def check_members(names: Sequence[str], members: Sequence[str]) -> None:
    """`InputError` (field ``members``) naming the first of `names` that is not a member."""
    unknown = [m for m in names if m not in members]
    if unknown:
        shown = ", ".join(members[:20]) + (", …" if len(members) > 20 else "")
        raise InputError(f"unknown member {unknown[0]!r} (members: {shown})", field="members")


def named_structures(
    members: tuple[str, ...], partitions: Sequence[Sequence[Sequence[str]]], leave_one_out: Sequence[str] | None = None
) -> list[tuple[str, Partition]]:
    """The structures to compare, named: the grand pool, then (with more than one member) everyone alone
    and ``without <m>`` for each member of `leave_one_out` (default: every member), then each of
    `partitions` completed (`complete_partition`)."""
    named: list[tuple[str, Partition]] = [("grand pool", (members,))]
    if len(members) > 1:
        named.append(("everyone alone", tuple((m,) for m in members)))
        for m in members if leave_one_out is None else [x for x in members if x in set(leave_one_out)]:
            rest = tuple(x for x in members if x != m)
            named.append((f"without {m}", (rest, (m,))))
    for partition in partitions:
        full = complete_partition(partition, members)
        named.append((describe(full), full))
    return named


def structure_outcome(
    name: str,
    pools: Sequence[PoolOutcome],
    pay: dict[str, int],
    grand_pay: dict[str, int],
    members: tuple[str, ...],
) -> StructureOutcome:
    """A structure's outcome from its pools' outcomes: value created, payouts and the change from the
    grand pool (``delta``; ``better_off`` lists the members whose payout grows)."""
    delta = {m: pay[m] - grand_pay[m] for m in members}
    return StructureOutcome(
        name=name,
        pools=tuple(pools),
        value_created=sum(p.value_created for p in pools),
        payouts={m: pay[m] for m in members},
        delta=delta,
        better_off=tuple(m for m in members if delta[m] > 0),
    )


def compare_scenario_pools(
    scenario: str | Path,
    *,
    period: str | None = None,
    partitions: Sequence[str] = (),
    leave_one_out: Sequence[str] | None = None,
) -> PoolComparison:
    """`compare_pools` for one period of a scenario file (default: its first period).

    The pot is the period's pool (revenue − platform fee, `market.period.run_period`); the compared
    partitions are the scenario's ``[pool] partitions`` and `partitions` (texts for `parse_partition`),
    each restricted to the members in the pool during the period; `leave_one_out` as in `compare_pools`
    (unknown names: `InputError`, field ``members``).
    """
    inputs = load_inputs(load_scenario(scenario))
    sc = inputs.scenario
    p = sc.check_period(period) if period is not None else sc.period_names()[0]
    members = [m.name for m in sc.members_in(p)]
    if leave_one_out is not None:
        check_members(leave_one_out, members)
    ctx = RuleContext.from_inputs(inputs)
    run = run_period(inputs, p, ctx)
    given = [*sc.pool.partitions, *(parse_partition(t, members) for t in partitions)]
    present = [tuple(tuple(m for m in pool if m in members) for pool in part) for part in given]
    present = [tuple(pool for pool in part if pool) for part in present]
    comparison = compare_pools(ctx, members, run.pool_minor, sc.market.currency, partitions=present, period=p,
                               leave_one_out=leave_one_out, grand_payout=run.payout)
    return replace(comparison, scenario=sc.market.name)
