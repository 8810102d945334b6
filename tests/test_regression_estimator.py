"""The size-stratified regression Shapley estimator (`valuation.games.estimators.regression`): accuracy within
its own standard errors on games with exact values, calibration of those standard errors, efficiency,
exactness on pairwise games and complete budgets, seeds, budgets and stopping rules."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.parts.estimators import airport_game, majority_game, pairwise_game, unanimity_game
from valuation.errors import InputError
from valuation.games.estimators import approximate
from valuation.games.estimators.regression import n_bins_for, size_bins
from valuation.games.game import FunctionGame
from valuation.games.stopping import StandardError

BUILDERS = {"majority": majority_game, "airport": airport_game, "pairwise": pairwise_game,
            "unanimity": unanimity_game}


@pytest.mark.parametrize("kind", ["majority", "airport", "unanimity"])
@pytest.mark.parametrize("n", [8, 10])
def test_within_its_standard_errors_of_the_exact_values(kind: str, n: int) -> None:
    """Every player within 4.5 reported standard errors, over 3 seeds and two budgets (a tolerance taken
    from the estimator's own standard errors; with calibrated ones a miss has probability ~1e-5)."""
    game = BUILDERS[kind](n, np.random.default_rng(n))
    exact = approximate(game.as_game(), "exact").values[:, 0]
    for budget in (120, 200):
        for seed in range(3):
            result = approximate(game.as_game(), "regression", budget, seed=seed)
            z = np.abs(result.values[:, 0] - exact) / result.std_errs[:, 0]
            assert np.all(z <= 4.5), (kind, budget, seed, z.max())
            assert result.n_evaluations <= budget


def test_standard_errors_are_calibrated_on_a_majority_game() -> None:
    """About 95% of (player, seed) within 2 standard errors; the mean over seeds unbiased within its own
    standard error."""
    game = majority_game(12, np.random.default_rng(4))
    runs = [approximate(game.as_game(), "regression", 300, seed=seed) for seed in range(30)]
    errors = np.array([r.values[:, 0] for r in runs]) - game.closed_form
    z = np.abs(errors) / np.array([r.std_errs[:, 0] for r in runs])
    assert 0.88 <= np.mean(z <= 2.0) <= 0.995
    mean_error = errors.mean(axis=0)
    spread = errors.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(mean_error) <= 4.0 * spread)


@pytest.mark.parametrize("kind", ["majority", "airport", "unanimity"])
def test_values_are_exactly_efficient(kind: str) -> None:
    game = BUILDERS[kind](11, np.random.default_rng(2))
    grand = float(game.fn(np.ones((1, 11), dtype=bool))[0] - game.fn(np.zeros((1, 11), dtype=bool))[0])
    result = approximate(game.as_game(), "regression", 150, seed=1)
    assert result.values.sum() == pytest.approx(grand, abs=1e-9)


def test_paired_fit_is_exact_on_a_pairwise_game() -> None:
    """u(S) − u(N∖S) is additive for a game with at most pairwise interactions: the paired fit is exact."""
    game = pairwise_game(16, np.random.default_rng(0))
    result = approximate(game.as_game(), "regression", 300, seed=0)
    assert result.info["pairs_kept"] is True
    np.testing.assert_allclose(result.values[:, 0], game.closed_form, atol=1e-9)
    assert np.all(result.std_errs < 1e-9)


def test_self_dual_game_drops_pairs_after_the_pilot() -> None:
    game = majority_game(16, np.random.default_rng(0))
    result = approximate(game.as_game(), "regression", 800, seed=0)
    assert result.info["pairs_kept"] is False


def test_same_seed_same_result_and_budget_respected() -> None:
    game = unanimity_game(9, np.random.default_rng(3)).as_game()
    a = approximate(game, "regression", 100, seed=5)
    b = approximate(game, "regression", 100, seed=5)
    c = approximate(game, "regression", 100, seed=6)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.std_errs, b.std_errs)
    assert not np.allclose(a.values, c.values)
    assert a.n_evaluations <= 100 and a.method == "regression"


def test_a_budget_covering_every_coalition_gives_exact_values() -> None:
    game = airport_game(6, np.random.default_rng(1))
    result = approximate(game.as_game(), "regression", 64, seed=0)
    np.testing.assert_allclose(result.values[:, 0], game.closed_form, atol=1e-12)
    assert np.all(result.std_errs == 0) and result.n_evaluations == 64


def test_sampling_every_coalition_by_rounds_ends_exact() -> None:
    """Without a budget, a standard-error target on a small game: the rounds exhaust the strata."""
    game = unanimity_game(5, np.random.default_rng(0))
    result = approximate(game.as_game(), "regression", stopping=StandardError(1e-12), seed=0)
    np.testing.assert_allclose(result.values[:, 0], game.closed_form, atol=1e-9)
    assert result.info["stopped_by"] == "all_coalitions_evaluated" and result.n_evaluations <= 2**5


def test_stops_on_a_standard_error_target() -> None:
    game = majority_game(20, np.random.default_rng(0)).as_game()
    result = approximate(game, "regression", 50_000, stopping=StandardError(2e-3), seed=0)
    assert result.info["stopped_by"] == "standard_error" and result.info["converged"]
    assert result.std_errs.max() <= 2e-3 and result.n_evaluations < 50_000


def test_several_objectives_in_one_pass() -> None:
    weights = np.arange(1.0, 8.0)

    def fn(masks: np.ndarray) -> np.ndarray:
        z = masks.astype(float)
        return np.stack([z @ weights, (z @ weights) ** 2 / 10], axis=1)

    game = FunctionGame([f"p{i}" for i in range(7)], ["lin", "sq"], fn)
    result = approximate(game, "regression", 60, seed=0)
    exact = approximate(game, "exact").values
    np.testing.assert_allclose(result.values[:, 0], exact[:, 0], atol=1e-9)  # additive: exact
    assert np.all(np.abs(result.values[:, 1] - exact[:, 1]) <= 4.5 * result.std_errs[:, 1] + 1e-9)


def test_too_small_a_budget_is_an_input_error() -> None:
    game = majority_game(8, np.random.default_rng(0)).as_game()
    with pytest.raises(InputError, match="budget too small"):
        approximate(game, "regression", 3)


def test_size_bins_are_mirrored() -> None:
    for n in (5, 12, 13, 64):
        for n_bins in (1, 3, 5, 7):
            bins = size_bins(n, n_bins)
            assert np.all(bins + bins[::-1] == n_bins - 1) or n_bins == 1
    assert n_bins_for(12, 100) == 1 and n_bins_for(12, 500) == 5 and n_bins_for(12, 10_000) == 7
