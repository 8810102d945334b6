"""Estimators against closed-form values, sampled coverage, axioms (hypothesis) and a peer (shapiq)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions, coalition_index
from valuation.games.estimators import (
    EXACT_MAX_PLAYERS,
    METHODS,
    approximate,
    exact_banzhaf,
    exact_shapley,
)
from valuation.games.game import FunctionGame, TableGame
from valuation.games.stopping import MaxEvaluations, StandardError


@dataclass(frozen=True)
class KnownGame:
    """A one-objective game with closed-form Shapley and Banzhaf values."""

    name: str
    n: int
    fn: Callable[[np.ndarray], np.ndarray]
    shapley: tuple[float, ...]
    banzhaf: tuple[float, ...]
    loo: tuple[float, ...]

    def game(self) -> FunctionGame:
        return FunctionGame([f"p{i}" for i in range(self.n)], ["v"], self.fn)


def _f(m: np.ndarray) -> np.ndarray:
    return m.astype(float)


AIRPORT_COSTS = np.array([1.0, 3.0, 4.0, 6.0])
ADDITIVE = np.array([1.0, -2.0, 0.0, 3.5])  # player 2 is a null player

KNOWN = [
    # glove game: left glove p0, right gloves p1, p2; v(S) = number of matched pairs
    KnownGame("glove", 3, lambda m: np.minimum(_f(m)[:, 0], _f(m)[:, 1:].sum(1)),
              (2 / 3, 1 / 6, 1 / 6), (3 / 4, 1 / 4, 1 / 4), (1, 0, 0)),
    # airport game: v(S) = max cost in S; φ_i = Σ_{j<=i} (c_j − c_{j−1}) / (n − j + 1),
    # Banzhaf β_i = Σ_{j<=i} (c_j − c_{j−1}) / 2^(n−j)
    KnownGame("airport", 4, lambda m: (_f(m) * AIRPORT_COSTS).max(axis=1),
              (1 / 4, 1 / 4 + 2 / 3, 1 / 4 + 2 / 3 + 1 / 2, 1 / 4 + 2 / 3 + 1 / 2 + 2),
              (1 / 8, 5 / 8, 9 / 8, 25 / 8), (0, 0, 0, 2)),
    # unanimity game on T = {p0, p2}: φ = 1/|T| on T, Banzhaf 1/2^(|T|−1)
    KnownGame("unanimity", 4, lambda m: (m[:, 0] & m[:, 2]).astype(float),
              (1 / 2, 0, 1 / 2, 0), (1 / 2, 0, 1 / 2, 0), (1, 0, 1, 0)),
    # weighted majority [4; 3, 1, 1, 1]: p0 wins with any partner
    KnownGame("majority", 4, lambda m: (_f(m) @ np.array([3.0, 1, 1, 1]) >= 4).astype(float),
              (3 / 4, 1 / 12, 1 / 12, 1 / 12), (7 / 8, 1 / 8, 1 / 8, 1 / 8), (1, 0, 0, 0)),
    # additive game with a null player: every value is the player's own weight
    KnownGame("additive_null", 4, lambda m: _f(m) @ ADDITIVE, tuple(ADDITIVE), tuple(ADDITIVE), tuple(ADDITIVE)),
    # symmetric players: v(S) = |S|²
    KnownGame("symmetric", 4, lambda m: _f(m).sum(1) ** 2, (4, 4, 4, 4), (4, 4, 4, 4), (7, 7, 7, 7)),
]


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: k.name)
def test_exact_matches_closed_form(known: KnownGame) -> None:
    game = known.game()
    result = approximate(game, "exact")
    np.testing.assert_allclose(result.values[:, 0], known.shapley, atol=1e-9, rtol=0)
    assert np.all(result.std_errs == 0)
    assert result.n_evaluations == 2**known.n
    table = game(all_coalitions(known.n))
    assert result.values.sum() == pytest.approx(table[-1, 0] - table[0, 0], abs=1e-9)  # efficiency
    np.testing.assert_allclose(approximate(game, "loo").values[:, 0], known.loo, atol=1e-9)
    banzhaf = approximate(game, "banzhaf")
    assert banzhaf.info["estimator"] == "exact"
    np.testing.assert_allclose(banzhaf.values[:, 0], known.banzhaf, atol=1e-9)


def test_multi_objective_in_one_pass() -> None:
    glove, majority = KNOWN[0], KNOWN[3]
    game = FunctionGame(
        ["a", "b", "c"], ["glove", "majority3"],
        lambda m: np.stack([glove.fn(m), (_f(m).sum(1) >= 2).astype(float)], axis=1),
    )
    calls = []
    counting = FunctionGame(game.players, game.objectives, lambda m: calls.append(1) or game(m))
    result = approximate(counting, "exact")
    assert len(calls) == 1
    np.testing.assert_allclose(result.values, [[2 / 3, 1 / 3], [1 / 6, 1 / 3], [1 / 6, 1 / 3]], atol=1e-12)
    assert majority.n == 4


def test_exact_large_game_chunked_and_table() -> None:
    n = 17  # > 2^16 coalitions: evaluated in two chunks
    game = FunctionGame([f"s{i}" for i in range(n)], ["u", "w"],
                        lambda m: np.stack([(m[:, 0] & m[:, 16]).astype(float), _f(m) @ np.arange(n)], axis=1))
    values = approximate(game, "exact").values
    expected_u = np.zeros(n)
    expected_u[[0, 16]] = 0.5
    np.testing.assert_allclose(values[:, 0], expected_u, atol=1e-9)
    np.testing.assert_allclose(values[:, 1], np.arange(n), atol=1e-9)
    np.testing.assert_allclose(exact_shapley(game(all_coalitions(n))), values, atol=1e-12)


def test_too_many_players_for_exact() -> None:
    n = EXACT_MAX_PLAYERS + 1
    game = FunctionGame([f"s{i}" for i in range(n)], ["v"], lambda m: _f(m).sum(1))
    with pytest.raises(InputError, match="use a sampled method: --method regression"):
        approximate(game, "exact")
    result = approximate(game, "permutation", 200, seed=0)  # sampled methods still work
    np.testing.assert_allclose(result.values[:, 0], 1.0)


def test_method_and_budget_errors() -> None:
    game = KNOWN[0].game()
    with pytest.raises(InputError, match="unknown method 'shap'"):
        approximate(game, "shap")
    with pytest.raises(InputError, match="use a sampled method: --method regression"):
        approximate(game, "exact", budget=7)
    with pytest.raises(InputError, match="budget too small"):  # glove, n = 3: u(∅), u(N), two orders of 2
        approximate(game, "permutation", budget=5)
    with pytest.raises(InputError, match="positive"):
        approximate(game, "permutation", budget=0)
    assert set(METHODS) == {"exact", "permutation", "regression", "banzhaf", "loo", "least_core"}


# --- sampled methods -------------------------------------------------------------------------------------


def _coverage(known: KnownGame, method: str, budget: int, truth: tuple[float, ...]) -> int:
    game = known.game()
    hits = 0
    for seed in range(40):
        result = approximate(game, method, budget, seed=seed)
        assert result.n_evaluations <= budget
        error = np.abs(result.values[:, 0] - np.asarray(truth))
        hits += bool(np.all(error <= 3 * result.std_errs[:, 0] + 1e-9))
    return hits


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: k.name)
def test_permutation_on_small_games_ends_exact(known: KnownGame) -> None:
    """With n ≤ 4 a few orders see every coalition: the estimator then returns the exact values."""
    result = approximate(known.game(), "permutation", 2 + 200 * (known.n - 1), seed=3)
    np.testing.assert_allclose(result.values[:, 0], known.shapley, atol=1e-9)
    assert result.info["stopped_by"] == "all_coalitions_evaluated" and np.all(result.std_errs == 0)
    assert result.n_evaluations == 2**known.n  # repeats are served from memory, not re-evaluated


def _large_games() -> list[tuple[str, FunctionGame, np.ndarray]]:
    """n = 10 games with exact values (2^10 coalitions, budgets well below): unanimity, airport, majority."""
    from benchmarks.parts.estimators import airport_game, majority_game, unanimity_game

    games = []
    for builder in (unanimity_game, airport_game, majority_game):
        bench = builder(10, np.random.default_rng(7))
        games.append((bench.kind, bench.as_game(), approximate(bench.as_game(), "exact").values[:, 0]))
    return games


@pytest.mark.parametrize("case", _large_games(), ids=lambda c: c[0])
def test_permutation_within_three_std_errs(case: tuple[str, FunctionGame, np.ndarray]) -> None:
    _, game, truth = case
    hits = 0
    for seed in range(40):
        result = approximate(game, "permutation", 2 + 30 * 9, seed=seed)
        assert result.n_evaluations <= 2 + 30 * 9 and result.info["stopped_by"] == "max_evaluations"
        hits += bool(np.all(np.abs(result.values[:, 0] - truth) <= 3 * result.std_errs[:, 0] + 1e-9))
    assert hits >= 38


def test_latin_square_blocks_put_every_player_at_every_position() -> None:
    from valuation.games.estimators.permutation import latin_square_orders

    rng = np.random.default_rng(0)
    first_players = []
    for _ in range(300):
        block = latin_square_orders(7, rng)
        for rows in (block, block.T):  # each row an order, each column a position
            assert np.all(np.sort(rows, axis=1) == np.arange(7))
        first_players.append(block[0, 0])
    counts = np.bincount(first_players, minlength=7)  # the block's first order is a uniform permutation
    assert counts.min() >= 25 and counts.max() <= 65


def test_stratified_orders_beat_independent_ones_on_a_majority_game() -> None:
    """Position strata remove the size effect of a weighted majority: smaller error at the same budget."""
    from benchmarks.parts.estimators import majority_game

    bench = majority_game(10, np.random.default_rng(1))
    truth = approximate(bench.as_game(), "exact").values[:, 0]
    ours, independent = [], []
    for seed in range(20):
        ours.append(np.abs(approximate(bench.as_game(), "permutation", 2 + 20 * 9, seed=seed).values[:, 0] - truth))
        rng = np.random.default_rng(seed)
        marginals = []
        for _ in range(20):
            rank = np.argsort(rng.permutation(10))
            chain = bench.fn(np.concatenate([np.zeros((1, 10), bool), rank[None, :] < np.arange(1, 11)[:, None]]))
            marginals.append(np.diff(chain)[rank])
        independent.append(np.abs(np.mean(marginals, axis=0) - truth))
    assert np.mean(ours) < 0.8 * np.mean(independent)


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: k.name)
def test_banzhaf_msr_within_three_std_errs(known: KnownGame) -> None:
    assert _coverage(known, "banzhaf", 1200, known.banzhaf) >= 38


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: k.name)
def test_permutation_efficiency_within_std_errs(known: KnownGame) -> None:
    game = known.game()
    table = game(all_coalitions(known.n))
    result = approximate(game, "permutation", 200, seed=11)
    gap = abs(result.values[:, 0].sum() - (table[-1, 0] - table[0, 0]))
    assert gap <= 3 * np.sqrt((result.std_errs[:, 0] ** 2).sum()) + 1e-9


def test_sampling_is_seeded_and_respects_budget() -> None:
    game = _large_games()[2][1]  # n = 10
    a = approximate(game, "permutation", 100, seed=5)
    b = approximate(game, "permutation", 100, seed=5)
    c = approximate(game, "permutation", 100, seed=6)
    np.testing.assert_array_equal(a.values, b.values)  # exact: the same seed runs the same code path twice
    assert not np.array_equal(a.values, c.values)
    assert 2 + 9 * 9 <= a.n_evaluations <= 100 and a.budget == 100  # 10 orders of ≤ 9 new coalitions fit
    assert a.info["stopped_by"] == "max_evaluations" and a.info["n_samples"] >= 10
    assert "note" not in a.info
    assert "exact method would be cheaper" in approximate(KNOWN[3].game(), "permutation", 100).info["note"]
    msr = approximate(game, "banzhaf", 100, seed=5)
    assert msr.info["estimator"] == "msr" and msr.n_evaluations == 100
    stopped = approximate(game, "banzhaf", seed=1, stopping=StandardError(0.1) | MaxEvaluations(10_000))
    assert stopped.info["stopped_by"] == "standard_error" and stopped.std_errs.max() <= 0.1


# --- least core ---------------------------------------------------------------------------------------------


def test_least_core_glove_and_majority() -> None:
    glove = approximate(KNOWN[0].game(), "least_core")
    np.testing.assert_allclose(glove.values[:, 0], [1, 0, 0], atol=1e-9)
    assert glove.info["epsilon"] == [pytest.approx(0.0, abs=1e-9)]
    assert glove.info["constraints"] == "exact" and glove.n_evaluations == 8
    majority = FunctionGame(["a", "b", "c"], ["v"], lambda m: (_f(m).sum(1) >= 2).astype(float))
    result = approximate(majority, "least_core")
    np.testing.assert_allclose(result.values[:, 0], [1 / 3] * 3, atol=1e-9)
    assert result.info["epsilon"][0] == pytest.approx(1 / 3)


def test_least_core_subtracts_empty_value_and_samples_constraints() -> None:
    n = 8
    game = FunctionGame([f"p{i}" for i in range(n)], ["v"], lambda m: 0.5 + (_f(m).sum(1) >= 5))
    exact = approximate(game, "least_core")
    assert exact.values.sum() == pytest.approx(1.0)  # v(N) − v(∅)
    np.testing.assert_allclose(exact.values[:, 0], 1 / n, atol=1e-9)  # symmetric game: equal split
    sampled = approximate(game, "least_core", budget=120, seed=0)
    assert sampled.info["constraints"] == "sampled" and sampled.n_evaluations <= 120
    assert sampled.info["epsilon"][0] <= exact.info["epsilon"][0] + 1e-9  # fewer constraints, smaller ε
    assert sampled.values.sum() == pytest.approx(1.0)


# --- axioms on random games (hypothesis) ----------------------------------------------------------------


def _random_table(n: int, seed: int, m: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2**n, m))


def _permute_players(table: np.ndarray, n: int, perm: list[int]) -> np.ndarray:
    """Table of the game w(S) = u(perm(S)) where perm maps player j to perm[j]."""
    masks = all_coalitions(n)
    image = np.zeros_like(masks)
    image[:, perm] = masks
    return table[coalition_index(image)]


games = st.tuples(st.integers(min_value=2, max_value=7), st.integers(min_value=0, max_value=2**31))


@settings(max_examples=25, deadline=None)
@given(games, st.data())
def test_symmetry(case: tuple[int, int], data: st.DataObject) -> None:
    n, seed = case
    i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    swap = list(range(n))
    swap[i], swap[j] = j, i
    table = _random_table(n, seed)
    symmetric = table + _permute_players(table, n, swap)  # swapping i and j leaves the game unchanged
    for phi in (exact_shapley(symmetric), exact_banzhaf(symmetric)):
        np.testing.assert_allclose(phi[i], phi[j], atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(games, st.data())
def test_null_player(case: tuple[int, int], data: st.DataObject) -> None:
    n, seed = case
    k = data.draw(st.integers(0, n - 1))
    table = _random_table(n, seed)
    masks = all_coalitions(n)
    masks[:, k] = False
    null_table = table[coalition_index(masks)]  # u(S) ignores player k
    for phi in (exact_shapley(null_table), exact_banzhaf(null_table)):
        np.testing.assert_allclose(phi[k], 0.0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(games)
def test_additivity_and_efficiency(case: tuple[int, int]) -> None:
    n, seed = case
    u, v = _random_table(n, seed), _random_table(n, seed + 1)
    np.testing.assert_allclose(exact_shapley(u + v), exact_shapley(u) + exact_shapley(v), atol=1e-9)
    np.testing.assert_allclose(exact_banzhaf(u + v), exact_banzhaf(u) + exact_banzhaf(v), atol=1e-9)
    np.testing.assert_allclose(exact_shapley(u).sum(axis=0), u[-1] - u[0], atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(games)
def test_sampled_permutation_is_exactly_efficient(case: tuple[int, int]) -> None:
    n, seed = case
    table = _random_table(n, seed)
    game = TableGame([f"p{i}" for i in range(n)], ["a", "b"], all_coalitions(n), table)
    result = approximate(game, "permutation", 2 + 8 * 2 * (n - 1), seed=seed)
    np.testing.assert_allclose(result.values.sum(axis=0), table[-1] - table[0], atol=1e-9)


# --- peer: shapiq ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 6, 8])
def test_matches_shapiq_exact(n: int) -> None:
    from shapiq import ExactComputer

    table = _random_table(n, seed=100 + n, m=2)
    game = TableGame([f"p{i}" for i in range(n)], ["a", "b"], all_coalitions(n), table)
    ours = approximate(game, "exact").values
    ours_banzhaf = approximate(game, "banzhaf").values
    for k in range(2):
        computer = ExactComputer(lambda c, k=k: table[coalition_index(c.astype(bool)), k], n_players=n)
        shapley = computer("SV")
        banzhaf = computer("BV")
        np.testing.assert_allclose(ours[:, k], [shapley[(i,)] for i in range(n)], atol=1e-9)
        np.testing.assert_allclose(ours_banzhaf[:, k], [banzhaf[(i,)] for i in range(n)], atol=1e-9)


def test_least_core_large_game_uses_constraint_generation_or_a_budget() -> None:
    n = 17
    game = FunctionGame([f"p{i}" for i in range(n)], ["v"], lambda m: _f(m) @ np.arange(1.0, n + 1))
    generated = approximate(game, "least_core")  # no budget: constraint generation (additive: x = weights)
    assert generated.info["constraints"] == "generated" and generated.info["converged"]
    np.testing.assert_allclose(generated.values[:, 0], np.arange(1.0, n + 1), atol=1e-7)
    result = approximate(game, "least_core", budget=400, seed=0)
    assert result.info["constraints"] == "sampled"
    assert result.values.sum() == pytest.approx(n * (n + 1) / 2)
