"""The compact preference game (`valuation.coalition_utility.compact.PairGame`): the same utilities as the
coalition-table path, a lossless file, and bootstrap replicates that a stacked game values in one pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from valuation.coalition_utility.compact import PairGame
from valuation.coalition_utility.preference import preference_utility
from valuation.composition.arithmetic import coalition_weights
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.uncertainty import replicate_values, valued_with_interval


def make_game(n: int = 6, pairs: tuple[int, int] = (30, 20), seed: int = 0, **settings: object) -> PairGame:
    rng = np.random.default_rng(seed)
    deltas = [rng.normal(rng.normal(0, 3, (n, 1)), 5, (n, p)) for p in pairs]
    return PairGame([f"s{i}" for i in range(n)], ["helpfulness", "harmlessness"], deltas, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("weighting", "metric"), [("sum", "bt"), ("mean", "accuracy"), ("size", "bt")])
def test_utilities_are_the_preference_utility_of_every_coalition(weighting: str, metric: str) -> None:
    sizes = [10, 20, 30, 40, 50, 60]
    game = make_game(weighting=weighting, metric=metric, beta=0.2, sizes=sizes)
    masks = all_coalitions(6)
    weights = coalition_weights(masks, weighting, sizes)
    for j in range(2):
        expected = preference_utility(weights, game.deltas[j], metric=metric, beta=0.2).values
        np.testing.assert_allclose(game(masks)[:, j], expected, rtol=1e-12, atol=1e-15)
    assert np.allclose(game(masks[:1]), 0.5)  # the base model: u(∅) = ½


def test_file_round_trip_and_content_hash(tmp_path: Path) -> None:
    game = make_game(weighting="size", sizes=[1, 2, 3, 4, 5, 6])
    back = PairGame.load(game.save(tmp_path / "game.npz"))
    masks = all_coalitions(6)
    np.testing.assert_array_equal(back(masks), game(masks))
    assert back.content_sha256() == game.content_sha256()
    assert make_game(seed=1).content_sha256() != game.content_sha256()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read the pair game"):
        PairGame.load(tmp_path / "bad.npz")


def test_bad_margins_are_refused() -> None:
    with pytest.raises(InputError, match="NaN or infinity"):
        PairGame(["a", "b"], ["h"], [np.array([[0.0, np.nan], [1.0, 2.0]])])
    with pytest.raises(ValueError, match="must be"):
        PairGame(["a", "b"], ["h"], [np.zeros((3, 4))])


def test_replicate_b_is_the_game_on_resampled_pairs_and_the_stacked_game_holds_them_all() -> None:
    game = make_game()
    reps = game.bootstrap(5, seed=3)
    masks = all_coalitions(6)
    stacked = reps.unstack(reps.stacked_game()(masks))  # [k, B·m] → [B, k, m]
    for b in range(5):
        counts = [c[b] for c in reps.counts]
        expected = np.stack(
            [(game.scores(masks, j) @ counts[j]) / counts[j].sum() for j in range(2)], axis=1
        )
        np.testing.assert_allclose(reps.game(b)(masks), expected, rtol=1e-12)
        np.testing.assert_allclose(stacked[b], expected, rtol=1e-12)
    assert reps.n_replicates == 5 and not reps.is_complete()
    again = game.bootstrap(5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(reps.counts, again.counts, strict=True))


def test_sampled_values_with_intervals_share_coalitions_and_add_the_estimators_error() -> None:
    game = make_game(n=20, pairs=(60, 40))
    point = approximate(game, "regression", 4000, seed=0)
    reps = game.bootstrap(30, seed=1)
    samples = replicate_values(reps, "regression", point.n_evaluations, seed=0, common_coalitions=True,
                               design=point.design)
    assert samples.shape == (30, 20, 2)
    valued = valued_with_interval(point, reps, seed=0)
    spread = samples.std(axis=0, ddof=1)
    np.testing.assert_allclose(valued.std_errs, np.hypot(spread, point.std_errs), rtol=1e-9)
    assert valued.lo is not None and valued.hi is not None
    assert np.all(valued.lo <= point.values) and np.all(point.values <= valued.hi)
    assert valued.info["interval"]["estimator_std_err_max"] == pytest.approx(list(point.std_errs.max(axis=0)))


def test_the_regression_design_reproduces_the_estimate_and_values_replicates_without_resampling() -> None:
    """φ̂ is linear in the utilities for a fixed design: the recorded coalitions give back the point
    estimate exactly, and the replicates are valued on them in one solve."""
    from valuation.games.estimators.regression import regression_values

    game = make_game(n=24, pairs=(50, 40))
    point = approximate(game, "regression", 3000, seed=2)
    assert point.design is not None and point.design.shape[1] == 24
    ends = game(np.stack([np.zeros(24, dtype=bool), np.ones(24, dtype=bool)]))
    again = regression_values(point.design, game(point.design), ends[0], ends[1])
    np.testing.assert_allclose(again, point.values, rtol=1e-9, atol=1e-12)
    reps = game.bootstrap(4, seed=0)
    samples = replicate_values(reps, "regression", point.n_evaluations, common_coalitions=True, design=point.design)
    for b in range(4):
        g = reps.game(b)
        e = g(np.stack([np.zeros(24, dtype=bool), np.ones(24, dtype=bool)]))
        np.testing.assert_allclose(samples[b], regression_values(point.design, g(point.design), e[0], e[1]), rtol=1e-9)


def test_shapley_command_values_a_runs_compact_game(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`payoutsim shapley -u RUN/game.npz`: no model, any number of sources; exact refused beyond 22."""
    import json

    from market.cli import main

    game = make_game(n=30, pairs=(40, 30))
    path = game.save(tmp_path / "game.npz")
    assert main(["shapley", "-u", str(path), "-m", "regression", "-b", "3000", "--no-summary"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "regression" and len(result["players"]) == 30
    direct = approximate(game, "regression", 3000, seed=0)
    assert [r["value"] for r in result["values"]] == pytest.approx(direct.values.ravel().tolist())
    assert main(["shapley", "-u", str(path), "-m", "exact"]) == 2
    assert "2^22" in capsys.readouterr().err
    assert main(["shapley", "-u", str(path), "-m", "loo", "--players", "s0,s1,nobody"]) == 2
