"""Payout rules, stability and replication robustness on small coalition tables."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.rules import RuleContext, allocate, compute_payout
from market.scenario.schema import RULES
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.game import TableGame, scalarised_game
from valuation.games.players import symmetric_classes
from valuation.games.stability import check_stability

CURRENCY_POOLS = {"EUR": 2, "JPY": 0, "KWD": 3, "CLF": 4}
WORDS = [f"w{i}" for i in range(200)]


def table_game(players: list[str], objectives: list[str], utilities: np.ndarray) -> TableGame:
    return TableGame(players, objectives, all_coalitions(len(players)), utilities)


def texts_for(rng: np.random.Generator, k: int = 12) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=20)) for _ in range(k)]


def symmetric_null_game(seed: int, n: int, m: int) -> TableGame:
    """Random game where players 0 and 1 are interchangeable and player n-1 is null."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, size=(2**n, m))
    idx = np.arange(2**n)
    canon = idx & ~(1 << (n - 1))  # the null player changes nothing
    only_1 = ((canon >> 1) & 1 == 1) & (canon & 1 == 0)
    canon = np.where(only_1, (canon & ~2) | 1, canon)  # {1} ∪ S behaves like {0} ∪ S
    return table_game([f"s{j}" for j in range(n)], [f"o{k}" for k in range(m)], base[canon])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(3, 5),
    m=st.integers(1, 2),
    rule=st.sampled_from(RULES),
    currency=st.sampled_from(sorted(CURRENCY_POOLS)),
    pool=st.integers(0, 10**11),
    negative=st.sampled_from(["clip", "shift"]),
    no_value=st.sampled_from(["hold", "equal"]),
)
def test_payout_properties_on_random_games(
    seed: int, n: int, m: int, rule: str, currency: str, pool: int, negative: str, no_value: str
) -> None:
    game = symmetric_null_game(seed, n, m)
    rng = np.random.default_rng(seed + 1)
    members = [f"m{j}" for j in range(n)]
    shared_text = texts_for(rng)
    texts = {"s0": shared_text, "s1": shared_text, **{f"s{j}": texts_for(rng) for j in range(2, n)}}
    sizes = {"s0": 50, "s1": 50, **{f"s{j}": int(rng.integers(0, 100)) for j in range(2, n)}}
    weights = {f"o{k}": 1.0 / m for k in range(m)}
    ctx = RuleContext(
        game=game,
        groups={f"m{j}": [f"s{j}"] for j in range(n)},
        weights=weights,
        rule=rule,
        negative=negative,
        no_value=no_value,
        sizes=sizes,
        texts=texts,
    )
    payout = compute_payout(ctx, members, pool, currency)
    assert sum(payout.amounts) + payout.held_minor == pool  # paid + held = pool
    assert payout.held_minor in (0, pool) and (no_value == "hold" or payout.held_minor == 0)
    if payout.held_minor:
        assert not any(payout.amounts) and not (payout.values > 0).any()
    assert all(a >= 0 for a in payout.amounts)
    assert np.all(np.isfinite(payout.shares))
    assert abs(payout.amounts[0] - payout.amounts[1]) <= 1  # m0 and m1 are interchangeable
    if rule in ("shapley", "banzhaf") and negative == "clip":
        assert payout.values[-1] == 0.0  # exact by construction: the null player's two sums add equal terms
        assert payout.amounts[-1] == 0  # the null member


def test_identical_inputs_give_identical_payouts() -> None:
    game = symmetric_null_game(3, 4, 2)
    ctx = RuleContext(game=game, groups={f"m{j}": [f"s{j}"] for j in range(4)}, weights={"o0": 0.3, "o1": 0.7})
    a = compute_payout(ctx, ["m0", "m1", "m2", "m3"], 123_456_789, "EUR")
    b = compute_payout(ctx, ["m0", "m1", "m2", "m3"], 123_456_789, "EUR")
    assert a.amounts == b.amounts
    assert np.array_equal(a.values, b.values)  # exact: the same code path runs twice


def test_members_owning_several_sources_are_one_player() -> None:
    # additive game: the member owning s0 and s1 is worth their sum
    u = all_coalitions(3).astype(float) @ np.array([1.0, 2.0, 3.0])
    game = table_game(["s0", "s1", "s2"], ["h"], u)
    ctx = RuleContext(game=game, groups={"a": ["s0", "s1"], "b": ["s2"]}, weights={"h": 1.0})
    payout = compute_payout(ctx, ["a", "b"], 600, "JPY")
    assert np.allclose(payout.values, [3.0, 3.0])
    assert payout.amounts == (300, 300)


def test_objective_weights_apply_by_linearity() -> None:
    masks = all_coalitions(2).astype(float)
    u = np.stack([masks @ [1.0, 0.0], masks @ [0.0, 1.0]], axis=1)  # a helps o0 only, b helps o1 only
    game = table_game(["a", "b"], ["o0", "o1"], u)
    ctx = RuleContext(game=game, groups={"a": ["a"], "b": ["b"]}, weights={"o0": 0.75, "o1": 0.25})
    payout = compute_payout(ctx, ["a", "b"], 10_000, "EUR")
    assert payout.amounts == (7500, 2500)


# ---------------------------------------------------------------------------------------------------
# degenerate cases and the negative policy


def test_pool_that_creates_no_value_is_split_equally_with_a_warning() -> None:
    game = table_game(["a", "b", "c"], ["h"], np.full(8, 0.5))
    for rule in ("shapley", "banzhaf", "loo", "least_core", "robust_shapley"):
        ctx = RuleContext(
            game=game, groups={p: [p] for p in "abc"}, weights={"h": 1.0}, rule=rule, no_value="equal",
            texts={p: texts_for(np.random.default_rng(i)) for i, p in enumerate("abc")},
        )
        payout = compute_payout(ctx, ["a", "b", "c"], 100, "EUR")
        assert payout.amounts == (34, 33, 33)
        assert np.allclose(payout.shares, 1 / 3)
        assert any("no member created value" in w and "split equally" in w for w in payout.warnings)


def test_all_negative_values_are_split_equally_under_no_value_equal() -> None:
    u = 1.0 - all_coalitions(2).astype(float) @ [0.2, 0.1]  # every source hurts
    game = table_game(["a", "b"], ["h"], u)
    ctx = RuleContext(game=game, groups={"a": ["a"], "b": ["b"]}, weights={"h": 1.0}, no_value="equal")
    payout = compute_payout(ctx, ["a", "b"], 1001, "EUR")
    assert payout.amounts == (501, 500)
    assert payout.held_minor == 0
    assert any("negative: a (-0.2), b (-0.1)" in w and "split equally" in w for w in payout.warnings)


def test_negative_policies() -> None:
    values = np.array([3.0, 1.0, -1.0])
    clip = allocate(["a", "b", "c"], values, 400, "clip")
    assert clip.amounts == (300, 100, 0)
    shift = allocate(["a", "b", "c"], values, 600, "shift")
    assert shift.amounts == (400, 200, 0)  # weights 4, 2, 0
    with pytest.raises(InputError, match="negative value for c") as err:
        allocate(["a", "b", "c"], values, 600, "error")
    assert err.value.field == "market.negative"
    nan = allocate(["a", "b"], np.array([np.nan, 1.0]), 10, "clip")
    assert nan.amounts == (0, 10)
    assert any("non-finite" in w for w in nan.warnings)


def test_rules_that_need_data_name_the_missing_field() -> None:
    game = table_game(["a", "b"], ["h"], all_coalitions(2).astype(float) @ [1.0, 2.0])
    ctx = RuleContext(game=game, groups={"a": ["a"], "b": ["b"]}, weights={"h": 1.0}, rule="proportional")
    with pytest.raises(InputError, match="proportional") as err:
        compute_payout(ctx, ["a", "b"], 10, "EUR")
    assert err.value.field == "sizes"
    ctx = RuleContext(game=game, groups={"a": ["a"], "b": ["b"]}, weights={"h": 1.0}, rule="robust_shapley")
    with pytest.raises(InputError, match="robust_shapley") as err:
        compute_payout(ctx, ["a", "b"], 10, "EUR")
    assert err.value.field == "valuation.data"


def test_proportional_and_equal() -> None:
    game = table_game(["a", "b", "c"], ["h"], np.zeros(8))
    groups = {"x": ["a", "b"], "y": ["c"]}
    prop = RuleContext(game=game, groups=groups, weights={"h": 1.0}, rule="proportional", sizes={"a": 1, "b": 2, "c": 1})
    assert compute_payout(prop, ["x", "y"], 1000, "EUR").amounts == (750, 250)
    equal = RuleContext(game=game, groups=groups, weights={"h": 1.0}, rule="equal")
    assert compute_payout(equal, ["x", "y"], 1001, "EUR").amounts == (501, 500)


# ---------------------------------------------------------------------------------------------------
# stability


def stability_of(game: TableGame, rule: str = "shapley"):
    members = list(game.players)
    ctx = RuleContext(game=game, groups={p: [p] for p in members}, weights={game.objectives[0]: 1.0}, rule=rule)
    payout = compute_payout(ctx, members, 10**6, "EUR")
    scalar = scalarised_game(game, {game.objectives[0]: 1.0})
    table = scalar(all_coalitions(len(members)))[:, 0]
    eps = approximate(scalar, "least_core").info["epsilon"][0]
    return check_stability(members, table, payout.shares, least_core_epsilon=eps)


def test_convex_game_is_stable_under_shapley() -> None:
    w = np.array([1.0, 2.0, 3.0, 0.5])
    u = 0.5 + (all_coalitions(4).astype(float) @ w) ** 2  # supermodular; v(∅) = 0.5 is the base model
    report = stability_of(table_game(["a", "b", "c", "d"], ["h"], u))
    assert report.individually_rational
    assert report.in_core is True
    assert report.stable is True
    assert report.blocking == ()
    assert report.least_core_epsilon is not None and report.least_core_epsilon < 0
    assert "stable" in report.verdict()


def test_majority_game_has_an_empty_core_with_blocking_coalitions() -> None:
    size = all_coalitions(3).sum(axis=1)
    u = (size >= 2).astype(float)
    report = stability_of(table_game(["a", "b", "c"], ["h"], u))
    assert report.stable is False
    assert report.in_core is False
    assert {c for c, _ in report.blocking} == {("a", "b"), ("a", "c"), ("b", "c")}
    assert all(abs(e - 1 / 3) < 1e-6 for _, e in report.blocking)
    assert report.least_core_epsilon == pytest.approx(1 / 3)
    assert "UNSTABLE" in report.verdict()
    # the least-core payout is the best one can do: every pair still blocks by exactly ε
    lc = stability_of(table_game(["a", "b", "c"], ["h"], u), rule="least_core")
    assert max(e for _, e in lc.blocking) == pytest.approx(1 / 3, abs=1e-6)


def test_individual_rationality_violation_is_reported() -> None:
    masks = all_coalitions(2).astype(float)
    u = masks @ [1.0, 1.0]
    report = check_stability(["a", "b"], u, np.array([0.9, 0.1]))
    assert not report.individually_rational
    assert report.ir_violations[0][0] == "b"
    assert report.stable is False


def test_symmetric_classes_and_least_core_equal_treatment() -> None:
    game = symmetric_null_game(11, 4, 1)
    table = game(all_coalitions(4))[:, 0]
    classes = symmetric_classes(table)
    assert [0, 1] in classes
    ctx = RuleContext(game=game, groups={f"m{j}": [f"s{j}"] for j in range(4)}, weights={"o0": 1.0}, rule="least_core")
    payout = compute_payout(ctx, ["m0", "m1", "m2", "m3"], 10**6, "EUR")
    assert payout.values[0] == payout.values[1]  # exact by construction: both get their class mean


# ---------------------------------------------------------------------------------------------------
# replication: duplicating a source under a second identity


BETA = 0.1


def preference_game(deltas: dict[str, np.ndarray]) -> TableGame:
    """u(S) = mean over held-out pairs of σ(β · Σ_{ℓ∈S} Δ_ℓ): the preference utility, `sum` weighting."""
    names = list(deltas)
    masks = all_coalitions(len(names)).astype(float)
    margin = masks @ np.stack([deltas[s] for s in names])
    return table_game(names, ["helpfulness"], 1.0 / (1.0 + np.exp(-BETA * margin)).mean(axis=1)[:, None])


def topic_texts(topic: str, rng: np.random.Generator, k: int = 30) -> list[str]:
    vocab = [f"{topic}{i}" for i in range(60)]
    return [" ".join(rng.choice(vocab, size=25)) for _ in range(k)]


def attacker_total(rule: str, duplicate: bool) -> int:
    rng = np.random.default_rng(0)
    pairs = 300
    deltas = {
        "mallory_data": rng.normal(2.0, 1.0, pairs),
        "bob_data": rng.normal(1.5, 1.0, pairs),
        "carol_data": rng.normal(1.0, 1.0, pairs),
    }
    texts = {
        "mallory_data": topic_texts("cooking", rng),
        "bob_data": topic_texts("physics", rng),
        "carol_data": topic_texts("gardening", rng),
    }
    groups = {"mallory": ["mallory_data"], "bob": ["bob_data"], "carol": ["carol_data"]}
    if duplicate:
        deltas["mallory_copy"] = deltas["mallory_data"].copy()  # the same adapter margins, added twice
        texts["mallory_copy"] = list(texts["mallory_data"])
        groups["mallory_alt"] = ["mallory_copy"]
    ctx = RuleContext(game=preference_game(deltas), groups=groups, weights={"helpfulness": 1.0}, rule=rule, texts=texts)
    payout = compute_payout(ctx, list(groups), 1_000_000_00, "EUR")
    paid = dict(zip(payout.members, payout.amounts, strict=True))
    return paid["mallory"] + paid.get("mallory_alt", 0)


def test_duplicating_a_source_pays_under_shapley_but_not_under_robust_shapley() -> None:
    honest, attack = attacker_total("shapley", False), attacker_total("shapley", True)
    assert attack > 1.3 * honest  # the attack is lucrative under plain Shapley
    robust_honest, robust_attack = attacker_total("robust_shapley", False), attacker_total("robust_shapley", True)
    assert robust_honest == honest  # distinct honest sources are not penalised (factor exp(0) = 1: the same values)
    assert robust_attack < robust_honest
