"""Replicate games and values with intervals (`valuation.games.replicates`, `valuation.games.uncertainty`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.game import TableGame
from valuation.games.replicates import (
    ItemTerms,
    normal_replicates,
    percentile_interval,
    rank_confidence,
    terms_from_scores,
)
from valuation.games.result import ValuationResult
from valuation.games.uncertainty import replicate_values, valued_with_interval

PLAYERS = ("a", "b", "c")


def noisy_terms(pairs: int = 300, seed: int = 0, common: float = 0.5) -> ItemTerms:
    """Per-pair scores: additive truth (0.1, 0.2, 0.05) + a pair effect shared by all coalitions + own noise."""
    rng = np.random.default_rng(seed)
    masks = all_coalitions(3)
    truth = masks @ np.array([0.1, 0.2, 0.05])
    scores = truth[:, None] + common * rng.normal(size=(1, pairs)) + 0.1 * rng.normal(size=(len(masks), pairs))
    return terms_from_scores(PLAYERS, ["h"], masks, {"h": scores})


def test_bootstrap_is_seeded_and_centred_on_the_point_table() -> None:
    items = noisy_terms()
    a, b = items.bootstrap(50, seed=3), items.bootstrap(50, seed=3)
    assert np.array_equal(a.utilities, b.utilities)
    assert not np.array_equal(a.utilities, items.bootstrap(50, seed=4).utilities)
    assert np.abs(a.utilities.mean(axis=0) - items.utilities()).max() < 0.05


def test_common_items_keep_values_precise_where_independent_noise_does_not() -> None:
    """The pair effect is shared by every coalition: it cancels in marginal contributions, so the bootstrap's
    value standard errors are far below the utilities' own; independent normal noise of the same size per
    coalition (no correlation) gives much wider ones — the conservative fallback."""
    items = noisy_terms()
    game = TableGame(PLAYERS, ["h"], items.coalitions, items.utilities())
    point = approximate(game, "exact")
    joint = valued_with_interval(point, items.bootstrap(200, seed=0))
    per_coalition_se = np.sqrt(0.5**2 + 0.1**2) / np.sqrt(300) * np.ones((8, 1))
    independent = valued_with_interval(point, normal_replicates(game, per_coalition_se, 200, seed=0))
    assert np.all(joint.std_errs < 0.5 * independent.std_errs)
    assert np.all(np.abs(joint.values - [[0.1], [0.2], [0.05]]) < 4 * joint.std_errs + 1e-3)
    assert np.all((joint.lo <= joint.values) & (joint.values <= joint.hi))
    assert joint.info["interval"]["replicates"] == 200


def test_stacked_exact_values_equal_the_replicate_by_replicate_values() -> None:
    reps = noisy_terms(pairs=40).bootstrap(7, seed=1)
    stacked = replicate_values(reps, "exact")
    one_by_one = np.stack([approximate(reps.game(b), "exact").values for b in range(7)])
    np.testing.assert_allclose(stacked, one_by_one, rtol=1e-12, atol=1e-14)
    grouped = replicate_values(reps, "exact", groups={"x": ("a", "b"), "y": ("c",)})
    assert grouped.shape == (7, 2, 1)


def test_item_file_round_trip_and_mismatch_errors(tmp_path: Path) -> None:
    items = noisy_terms(pairs=20)
    path = items.save(tmp_path / "items.npz")
    back = ItemTerms.load(path)
    assert back.players == items.players and back.unit == "eval pair"
    np.testing.assert_array_equal(back.numerators[0], items.numerators[0])
    game = TableGame(PLAYERS, ["h"], items.coalitions, items.utilities())
    back.check_matches(game)
    other = TableGame(PLAYERS, ["h"], items.coalitions, items.utilities() + 0.01)
    with pytest.raises(InputError, match="differ"):
        back.check_matches(other, file=path, field="valuation.items")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read the item file"):
        ItemTerms.load(tmp_path / "bad.npz", field="valuation.items")


def test_ratio_terms_weight_prompts_by_their_sample_counts() -> None:
    """Σ N / Σ D: a prompt with more samples counts more, like the plain mean over samples."""
    masks = all_coalitions(1)
    num = np.array([[3.0, 1.0], [2.0, 0.0]])  # coalition ∅: prompt 0 has rewards summing to 3 over 3 samples
    den = np.array([[3.0, 1.0], [2.0, 1.0]])
    items = ItemTerms(("a",), ("r",), masks, (num,), (den,), unit="prompt")
    np.testing.assert_allclose(items.utilities()[:, 0], [4 / 4, 2 / 3])


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=30), st.integers(min_value=2, max_value=5), st.integers(0, 2**31))
def test_rank_confidence_is_a_probability_of_order(replicates: int, players: int, seed: int) -> None:
    samples = np.random.default_rng(seed).integers(0, 4, size=(replicates, players)).astype(float)
    p = rank_confidence(samples)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p + p.T, np.ones((players, players)), atol=1e-12)
    np.testing.assert_allclose(np.diag(p), 0.5)


def test_interval_json_round_trip() -> None:
    items = noisy_terms(pairs=30)
    game = TableGame(PLAYERS, ["h"], items.coalitions, items.utilities())
    result = valued_with_interval(approximate(game, "exact"), items.bootstrap(20, seed=0))
    back = ValuationResult.from_json_dict(json.loads(json.dumps(result.to_json_dict())))
    assert back.lo is not None and back.hi is not None and result.lo is not None and result.hi is not None
    np.testing.assert_allclose(back.lo, result.lo)
    np.testing.assert_allclose(back.hi, result.hi)
    lo, hi = percentile_interval(np.arange(101.0)[:, None], 0.9)
    assert lo[0] == pytest.approx(5.0) and hi[0] == pytest.approx(95.0)
