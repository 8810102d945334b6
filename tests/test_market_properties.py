"""Money properties at scale: random scenarios across every payout rule, every negative-value policy and
0/2/3/4-digit currencies, from a revenue string to integer payouts (500 in the fast suite, 10,000 in the
slow one).

Each scenario ``i`` is drawn from ``numpy.random.default_rng(i)`` (a failure names its seed; rerun one with
``check_scenario(draw_scenario(seed))``). The properties, checked on every scenario:

* **integers**: every amount is a Python ``int`` ≥ 0;
* **conservation**: the amounts sum exactly to the pool, and the pool is revenue − fee in minor units
  (revenue parsed from its decimal string, fee rounded half-to-even);
* **deterministic ties**: a larger share never gets fewer minor units; equal shares differ by at most one
  unit; where the weights are exact (``equal``, ``proportional``) equal weights are broken by member name
  (the smaller name gets the extra unit), whatever the order the members are listed in;
* **same input, same output**: paying the same scenario again gives identical amounts and values (the same
  code path runs twice, so exact equality is right here).

A scenario that cannot be paid (``negative = "error"`` with a negative value) must raise `InputError` naming
``market.negative``, and only then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from market.money import fee_minor, largest_remainder, parse_decimal, to_minor
from market.rules import Payout, RuleContext, compute_payout, rule_values
from market.scenario.schema import NEGATIVE_POLICIES, RULES
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame

#: One currency per minor-unit exponent (ISO 4217): 0, 2, 3 and 4 digits, plus a second of each kind.
CURRENCIES = {"JPY": 0, "KRW": 0, "EUR": 2, "USD": 2, "KWD": 3, "BHD": 3, "CLF": 4, "UYW": 4}
WORDS = [f"w{i}" for i in range(120)]
FAST_SCENARIOS = 500
SLOW_SCENARIOS = 10_000


@dataclass(frozen=True)
class Scenario:
    """One random pool: the source game, who owns what, the rule and the money."""

    seed: int
    ctx: RuleContext
    members: tuple[str, ...]
    currency: str
    revenue: str  # a decimal string with the currency's digits, as a scenario file would give it
    fee: Decimal

    def describe(self) -> str:
        c = self.ctx
        return (
            f"seed {self.seed}: rule={c.rule} negative={c.negative} currency={self.currency} revenue={self.revenue} "
            f"fee={self.fee} members={list(self.members)} groups={dict(c.groups)} weights={dict(c.weights)}"
        )


def _utilities(rng: np.random.Generator, n_sources: int, n_objectives: int) -> np.ndarray:
    """``float[2^s, m]``: a random game of one of several kinds (generic, additive, integer-valued with exact
    ties, no value at all, every source harmful, tiny or huge magnitudes, two interchangeable sources)."""
    masks = all_coalitions(n_sources).astype(float)
    kind = rng.integers(0, 7)
    if kind == 0:  # generic
        u = rng.normal(0.0, 1.0, (2**n_sources, n_objectives))
    elif kind == 1:  # additive, mixed signs
        u = masks @ rng.normal(0.2, 1.0, (n_sources, n_objectives))
    elif kind == 2:  # small integers: many exact ties between members' values
        u = rng.integers(-2, 4, (2**n_sources, n_objectives)).astype(float)
    elif kind == 3:  # the pool creates no value
        u = np.full((2**n_sources, n_objectives), rng.normal())
    elif kind == 4:  # every source hurts
        u = 1.0 - masks @ rng.uniform(0.01, 1.0, (n_sources, n_objectives))
    elif kind == 5:  # tiny or huge scale
        u = rng.normal(0.0, 1.0, (2**n_sources, n_objectives)) * 10.0 ** rng.integers(-9, 10)
    elif n_sources >= 2:  # sources 0 and 1 interchangeable (symmetric members when owned by different members)
        u = rng.normal(0.0, 1.0, (2**n_sources, n_objectives))
        idx = np.arange(2**n_sources)
        swapped = (idx & ~3) | ((idx & 1) << 1) | ((idx >> 1) & 1)
        u = (u + u[swapped]) / 2.0
    else:
        u = rng.normal(0.0, 1.0, (2**n_sources, n_objectives))
    return u + 0.5  # v(∅) need not be 0 (the base model's utility)


def _revenue(rng: np.random.Generator, digits: int) -> str:
    """A revenue string with exactly the currency's digits: often small (0, 1, a few units), else up to 10^12
    minor units."""
    pick = rng.integers(0, 4)
    minor = int(rng.integers(0, 8)) if pick == 0 else int(rng.integers(0, 10 ** int(rng.integers(1, 13))))
    whole, frac = divmod(minor, 10**digits)
    return f"{whole}.{frac:0{digits}d}" if digits else str(whole)


def draw_scenario(seed: int) -> Scenario:
    """Scenario ``seed``: the rule cycles through `RULES` and the currency through `CURRENCIES` (so any 28
    consecutive seeds cover every rule with every currency); everything else is random."""
    rng = np.random.default_rng(seed)
    rule = RULES[seed % len(RULES)]
    currency = list(CURRENCIES)[(seed // len(RULES)) % len(CURRENCIES)]
    n_members = int(rng.integers(1, 6))
    n_sources = int(rng.integers(1, 6))
    n_objectives = int(rng.integers(1, 3))
    names = sorted(rng.choice([f"m{i}" for i in range(10)], size=n_members, replace=False).tolist())
    members = tuple(rng.permutation(names).tolist())  # listed in any order: ties go by name, not position
    owner = rng.integers(0, n_members + 1, n_sources)  # owner n_members: a source nobody in the pool owns
    sources = [f"s{j}" for j in range(n_sources)]
    groups = {m: tuple(s for s, o in zip(sources, owner, strict=True) if o == i) for i, m in enumerate(members)}
    objectives = [f"o{k}" for k in range(n_objectives)]
    raw = rng.integers(0, 5, n_objectives).astype(float)
    raw = raw if raw.sum() else np.ones(n_objectives)
    weights = {o: float(w) for o, w in zip(objectives, raw / raw.sum(), strict=True)}
    game = TableGame(sources, objectives, all_coalitions(n_sources), _utilities(rng, n_sources, n_objectives))
    texts = None
    if rule == "robust_shapley":  # only this rule reads the data; sources 0 and 1 may hold the same texts
        shared = [" ".join(rng.choice(WORDS, size=12)) for _ in range(6)]
        texts = {s: shared if j < 2 and rng.integers(0, 2) else [" ".join(rng.choice(WORDS, size=12)) for _ in range(6)]
                 for j, s in enumerate(sources)}
    sizes = {s: int(rng.integers(0, 4)) * int(rng.integers(1, 50)) for s in sources}  # zeros and equal sizes
    ctx = RuleContext(
        game=game, groups=groups, weights=weights, rule=rule, negative=str(rng.choice(NEGATIVE_POLICIES)),
        sizes=sizes, texts=texts,
    )
    fee = Decimal(int(rng.integers(0, 10_000))) / Decimal(10_000) if rng.integers(0, 3) else Decimal(0)
    return Scenario(seed, ctx, members, currency, _revenue(rng, CURRENCIES[currency]), fee)


def _pay(s: Scenario, members: tuple[str, ...] | None = None) -> tuple[int, int, Payout]:
    """``(revenue_minor, pool_minor, payout)`` the way a scenario period is paid (`market.period.run_period`):
    revenue string → Decimal → minor units, fee half-to-even, pool = revenue − fee, then the rule."""
    revenue_minor = to_minor(parse_decimal(s.revenue, field="market.revenue"), s.currency, field="revenue")
    pool = revenue_minor - fee_minor(revenue_minor, s.fee)
    return revenue_minor, pool, compute_payout(s.ctx, members or s.members, pool, s.currency)


def check_scenario(s: Scenario) -> None:
    """Every property of the module docstring on scenario `s` (AssertionError naming the seed)."""
    where = s.describe()
    try:
        revenue_minor, pool, payout = _pay(s)
    except InputError as err:
        assert s.ctx.negative == "error" and err.field == "market.negative", where
        assert (rule_values(s.ctx, s.members).values < 0).any(), where
        return
    amounts = payout.amounts
    assert all(type(a) is int and a >= 0 for a in amounts), where
    assert 0 <= pool <= revenue_minor and revenue_minor - fee_minor(revenue_minor, s.fee) == pool, where
    held = payout.held_minor
    assert type(held) is int and sum(amounts) + held == pool, where  # paid + held = pool, to the minor unit
    if held:  # no_value = "hold": nobody created value, nothing is paid (market.rules)
        assert held == pool and not any(amounts), where
        values = rule_values(s.ctx, s.members).values  # positive only by float noise (the rule snaps those to 0)
        assert not (values > 1e-9 * max(1.0, float(np.abs(values).max()))).any(), where
    assert payout.members == s.members and np.all(np.isfinite(payout.shares)), where
    if pool and not held:
        assert abs(float(payout.shares.sum()) - 1.0) <= 1e-9, where
    for i in range(len(amounts)):
        assert abs(amounts[i] - pool * payout.shares[i]) <= 1 + 1e-9 * pool, where  # within a unit of its quota
        for j in range(len(amounts)):
            if payout.shares[i] > payout.shares[j]:
                assert amounts[i] >= amounts[j], where
            elif payout.shares[i] == payout.shares[j]:
                assert abs(amounts[i] - amounts[j]) <= 1, where
    if s.ctx.rule in ("equal", "proportional"):  # exact weights: equal weights are broken by name
        for i in range(len(amounts)):
            for j in range(len(amounts)):
                if payout.shares[i] == payout.shares[j] and s.members[i] < s.members[j]:
                    assert amounts[i] - amounts[j] in (0, 1), where
        reordered = tuple(sorted(s.members))
        again = dict(zip(reordered, _pay(s, reordered)[2].amounts, strict=True))
        assert again == dict(zip(s.members, amounts, strict=True)), where
    # same input, same output: the same code path runs again
    _, _, twin = _pay(s)
    assert twin.amounts == amounts and np.array_equal(twin.values, payout.values), where


def test_scenarios_cover_every_rule_policy_and_currency_digits() -> None:
    drawn = [draw_scenario(seed) for seed in range(FAST_SCENARIOS)]
    assert {s.ctx.rule for s in drawn} == set(RULES)
    assert {s.ctx.negative for s in drawn} == set(NEGATIVE_POLICIES)
    assert {CURRENCIES[s.currency] for s in drawn} == {0, 2, 3, 4}
    assert {(s.ctx.rule, CURRENCIES[s.currency]) for s in drawn} == {(r, d) for r in RULES for d in (0, 2, 3, 4)}
    assert any(len(s.members) == 1 for s in drawn) and any(s.revenue in ("0", "0.00", "0.000", "0.0000") for s in drawn)


def test_money_properties_on_500_random_scenarios() -> None:
    start = time.perf_counter()
    for seed in range(FAST_SCENARIOS):
        check_scenario(draw_scenario(seed))
    print(f"{FAST_SCENARIOS} scenarios in {time.perf_counter() - start:.2f} s")


@pytest.mark.slow
def test_money_properties_on_10000_random_scenarios() -> None:
    for seed in range(FAST_SCENARIOS, FAST_SCENARIOS + SLOW_SCENARIOS):
        check_scenario(draw_scenario(seed))


def test_largest_remainder_ties_go_by_key_whatever_the_order() -> None:
    """Exact weights with many ties: the amount each key gets does not depend on the order the weights are
    listed in, equal weights differ by at most one unit and the smaller key gets the extra one (2,000 draws)."""
    rng = np.random.default_rng(14)
    for _ in range(2_000):
        n = int(rng.integers(1, 8))
        keys = [f"k{i}" for i in rng.permutation(n)]
        weights = [Fraction(int(w)) for w in rng.integers(0, 4, n)]
        weights = weights if any(weights) else [Fraction(1)] * n
        total = int(rng.integers(0, 10 ** int(rng.integers(1, 10))))
        amounts = dict(zip(keys, largest_remainder(total, weights, keys), strict=True))
        perm = rng.permutation(n)
        shuffled = largest_remainder(total, [weights[i] for i in perm], [keys[i] for i in perm])
        assert dict(zip([keys[i] for i in perm], shuffled, strict=True)) == amounts
        assert sum(amounts.values()) == total
        by_key = dict(zip(keys, weights, strict=True))
        for a in keys:
            for b in keys:
                if by_key[a] == by_key[b] and a < b:
                    assert amounts[a] - amounts[b] in (0, 1), (total, by_key, amounts)
