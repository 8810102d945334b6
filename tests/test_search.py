"""The blocking-coalition search (`valuation.games.search`) on games with planted blocking coalitions."""

from __future__ import annotations

import numpy as np
import pytest

from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.game import FunctionGame
from valuation.games.search import search_blocking


class Counting:
    """A scalar game that counts the coalitions it is asked for (repeats included)."""

    def __init__(self, fn) -> None:
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows += masks.shape[0]
        return self.fn(masks)


def synergy_game(n: int, planted: np.ndarray, bonus: float, seed: int = 0):
    """Additive weights plus `bonus` when the whole planted subset is in; an offset v(∅) = 3."""
    w = np.random.default_rng(seed).random(n)

    def v(masks: np.ndarray) -> np.ndarray:
        m = np.asarray(masks, dtype=bool)
        return 3.0 + m.astype(float) @ w + bonus * m[:, planted].all(axis=1)

    return v, w


def test_finds_a_planted_synergy_that_the_allocation_underpays() -> None:
    n, bonus = 64, 2.0
    planted = np.array([3, 17, 29, 40, 58])
    v, w = synergy_game(n, planted, bonus)
    x = w + bonus / n  # the bonus spread over everybody: the planted five are under-paid
    game = Counting(v)
    result = search_blocking(game, x, budget=5_000, seed=1)
    assert result.n_found > 0 and result.masks.shape[1] == n
    top = np.flatnonzero(result.masks[0])
    assert top.tolist() == planted.tolist()  # the largest excess is the planted subset itself
    assert result.excess[0] == pytest.approx(bonus * (1 - planted.size / n))
    assert result.best_excess == pytest.approx(result.excess[0])
    assert np.all(np.diff(result.excess) <= 0)  # largest first
    assert all(row[planted].all() for row in result.masks)  # every blocking one contains the planted set
    assert len({row.tobytes() for row in result.masks}) == result.masks.shape[0]  # deduplicated
    assert result.evaluations == game.rows <= 5_000  # each coalition once, within the budget
    assert not result.exhaustive


def test_climbs_a_sharp_bump_to_a_planted_coalition_sampling_alone_misses() -> None:
    n, radius, bonus = 48, 3.0, 1.0
    rng = np.random.default_rng(3)
    planted = np.zeros(n, dtype=bool)
    planted[rng.choice(n, 20, replace=False)] = True
    w = rng.random(n)

    def v(masks: np.ndarray) -> np.ndarray:
        distance = (np.asarray(masks, bool) != planted).sum(axis=1)
        return np.asarray(masks, float) @ w + bonus * np.exp(-distance / radius)

    empty, grand = v(np.zeros((1, n), bool))[0], v(np.ones((1, n), bool))[0]
    x = w + (grand - empty - w.sum()) / n  # efficient: Σx = v'(N)
    vp = lambda m: v(m) - empty  # noqa: E731
    excess_planted = vp(planted[None])[0] - x[planted].sum()
    # the planted coalition is a strict local maximum of the excess and blocks
    flips = planted[None] ^ np.eye(n, dtype=bool)
    assert excess_planted > 0 and np.all(vp(flips) - flips @ x < excess_planted)
    # uniform sampling alone (the same number of coalitions) never gets near it
    sizes = rng.integers(1, n, 20_000)
    u = rng.random((20_000, n))
    sampled = u <= np.sort(u, axis=1)[np.arange(20_000), sizes - 1][:, None]
    assert np.max(vp(sampled) - sampled @ x) < 0.5 * excess_planted

    result = search_blocking(v, x, budget=20_000, seed=0)
    assert np.array_equal(result.best_mask, planted)
    assert result.best_excess == pytest.approx(excess_planted)
    assert result.masks.shape[0] == min(200, result.n_found)  # capped at MAX_REPORTED
    assert np.array_equal(result.masks[0], planted)


def test_convex_game_with_its_shapley_value_has_no_blocking_coalition() -> None:
    n = 40
    w = np.random.default_rng(2).random(n)
    total = w.sum()
    game = FunctionGame([f"p{i}" for i in range(n)], ["u"], lambda m: (m.astype(float) @ w) ** 2)
    result = search_blocking(game, w * total, budget=8_000, seed=0)  # Shapley of (Σw)² is w_i·Σw: in the core
    assert result.n_found == 0 and result.masks.shape == (0, n)
    assert result.best_excess < 0
    assert result.examined > 7_000  # the budget was used (∅ and N are not counted as examined)


def test_additive_game_paid_its_weights_has_no_blocking_coalition() -> None:
    n = 50
    w = np.random.default_rng(4).normal(size=n)
    result = search_blocking(lambda m: m.astype(float) @ w + 1.0, w, budget=3_000, seed=5)
    assert result.n_found == 0
    assert abs(result.best_excess) < 1e-9


def test_budget_determinism_and_threshold() -> None:
    n = 64
    planted = np.arange(8)
    v, w = synergy_game(n, planted, 1.0, seed=7)
    x = w + 1.0 / n
    for budget in (2 * n + 2, 500, 2_345):
        game = Counting(v)
        result = search_blocking(game, x, budget=budget, seed=3)
        assert game.rows == result.evaluations <= budget
        assert result.examined == result.evaluations - 2
    a = search_blocking(v, x, budget=3_000, seed=11)
    b = search_blocking(v, x, budget=3_000, seed=11)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.excess, b.excess) and a.examined == b.examined
    high = search_blocking(v, x, budget=3_000, seed=11, threshold=a.best_excess)
    assert high.n_found == 0  # nothing exceeds the best excess
    with pytest.raises(InputError, match="at least 2n"):
        search_blocking(v, x, budget=2 * n + 1)


def test_small_games_are_searched_exhaustively() -> None:
    n = 8
    rng = np.random.default_rng(9)
    table = rng.normal(size=2**n)
    masks = all_coalitions(n)
    index = masks.astype(np.int64) @ (1 << np.arange(n))
    x = np.full(n, (table[-1] - table[0]) / n)
    result = search_blocking(lambda m: table[m.astype(np.int64) @ (1 << np.arange(n))], x, budget=1_000)
    excess = table[index] - table[0] - masks @ x
    expected = np.sort(excess[1:-1][excess[1:-1] > 1e-9])[::-1]
    assert result.exhaustive and result.examined == 2**n - 2
    np.testing.assert_allclose(result.excess, expected[: result.excess.size])
    assert result.n_found == expected.size


def test_multi_objective_game_is_refused() -> None:
    game = FunctionGame(["a", "b", "c"], ["h", "k"], lambda m: np.zeros((m.shape[0], 2)))
    with pytest.raises(InputError, match="one-objective"):
        search_blocking(game, np.zeros(3))
