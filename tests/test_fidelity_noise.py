"""Retraining's noise floor (`valuation.retraining.fidelity.noise_floor`) on hand-made per-pair scores: the
vectorised agreement figures equal the scipy ones, identical replicates agree perfectly, a faithful arithmetic
sits on the noise floor and an unfaithful one below it, and the arithmetic's per-pair scores average to its
coalition table. No model is trained."""

from __future__ import annotations

import numpy as np
import pytest

from valuation.composition.logprobs import EvalLogProbs, ResponseLogProbs
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import exact_shapley
from valuation.pipeline.tables import coalition_table
from valuation.retraining.fidelity import (
    COMPARISONS,
    NOISE_METRICS,
    agreement_columns,
    arithmetic_pair_scores,
    noise_floor,
    seed_pairs,
    shapley_fidelity,
    utility_fidelity,
)

N = 4
OBJECTIVES = ("helpfulness", "harmlessness")


def test_seed_pairs_of_each_comparison() -> None:
    assert seed_pairs("retrain_vs_retrain", 3) == [(0, 1), (0, 2), (1, 2)]
    assert seed_pairs("arithmetic_vs_arithmetic", 2) == [(0, 1)]
    assert seed_pairs("arithmetic_vs_retrain", 2) == [(0, 1), (1, 0)]  # never the same seed
    assert seed_pairs("arithmetic_vs_retrain_same_seed", 2) == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="unknown comparison"):
        seed_pairs("retrain_vs_merge", 2)


def test_vectorised_agreement_equals_the_scipy_fidelity_functions() -> None:
    rng = np.random.default_rng(3)
    sizes = all_coalitions(N).sum(axis=1)
    u_a, u_b = rng.normal(size=(2**N, 5)), rng.normal(size=(2**N, 5))
    phi_a, phi_b = exact_shapley(u_a), exact_shapley(u_b)
    phi_b[:, 1] = phi_a[:, 1]  # identical values
    phi_b[2, 2] = phi_b[1, 2]  # a tie (average ranks)
    phi_b[0, 3] = -phi_b[0, 3]  # a sign flip
    got = agreement_columns(u_a, u_b, phi_a, phi_b, sizes)
    for col in range(5):
        want = utility_fidelity(u_a[:, col], u_b[:, col], sizes) | shapley_fidelity(phi_a[:, col], phi_b[:, col])
        for metric in NOISE_METRICS:
            assert got[metric][col] == pytest.approx(want[metric], abs=1e-9), (metric, col)


def test_a_constant_column_gives_nan_not_an_error() -> None:
    sizes = all_coalitions(2).sum(axis=1)
    u = np.zeros((4, 1))
    got = agreement_columns(u, u + 1.0, np.zeros((2, 1)), np.ones((2, 1)), sizes)
    assert np.isnan(got["utility_pearson"][0]) and np.isnan(got["shapley_spearman"][0])
    assert got["shapley_sign_agreement"][0] == 0.0 and got["shapley_max_abs_diff"][0] == 1.0


def _scores(rng: np.random.Generator, truth: np.ndarray, coalition_noise: float, pairs: int) -> np.ndarray:
    """Per-pair scores [2^n, pairs] around ``truth`` [2^n] plus a training-noise offset per coalition
    (∅ keeps the truth: it is the base model); ``pairs`` noise shared with every model via the same seed."""
    offset = rng.normal(scale=coalition_noise, size=truth.shape)
    offset[0] = 0.0
    pair_noise = np.random.default_rng(99).normal(scale=0.2, size=(1, pairs))  # the same eval pairs for all
    return (truth + offset)[:, None] + pair_noise


def _truth(seed: int) -> np.ndarray:
    """A game with well-separated Shapley values: u(S) = Σ_{i∈S} w_i plus small interactions."""
    rng = np.random.default_rng(seed)
    masks = all_coalitions(N)
    return 0.5 + masks @ np.array([0.08, 0.03, -0.04, 0.12]) + rng.normal(scale=0.004, size=2**N)


def test_identical_replicates_agree_perfectly_and_the_gap_is_the_arithmetics_shortfall() -> None:
    rng = np.random.default_rng(0)
    truth = _truth(1)
    retrained = [[_scores(rng, truth, 0.0, 40)] for _ in range(2)]  # no training noise at all
    arithmetic = [[_scores(rng, truth, 0.03, 40)] for _ in range(2)]
    out = noise_floor(arithmetic, retrained, OBJECTIVES[:1], n_boot=100, seed=0)["helpfulness"]
    assert set(out) == {*COMPARISONS, "gap"}
    rr = out["retrain_vs_retrain"]
    assert rr["utility_pearson"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert rr["shapley_spearman"]["value"] == pytest.approx(1.0, abs=1e-12)
    assert rr["shapley_sign_agreement"]["value"] == 1.0 and rr["shapley_max_abs_diff"]["value"] == pytest.approx(0.0)
    assert rr["shapley_spearman"]["per_seed_pair"] == [pytest.approx(1.0)]
    ar = out["arithmetic_vs_retrain"]
    assert len(ar["utility_pearson"]["per_seed_pair"]) == 2
    gap = out["gap"]["utility_pearson"]
    assert gap["value"] == pytest.approx(ar["utility_pearson"]["value"] - 1.0, abs=1e-12)
    assert gap["value"] < 0 and gap["lo"] <= gap["value"] <= gap["hi"]


def test_a_faithful_arithmetic_sits_on_the_noise_floor_and_an_unfaithful_one_below_it() -> None:
    rng = np.random.default_rng(5)
    truth = _truth(2)
    masks = all_coalitions(N)
    other = 0.5 + masks @ np.array([-0.06, 0.1, 0.05, -0.02])  # another game: other ranking, other signs
    retrained = [[_scores(rng, truth, 0.01, 60), _scores(rng, truth, 0.01, 60)] for _ in range(2)]
    faithful = [[_scores(rng, truth, 0.01, 60), _scores(rng, truth, 0.01, 60)] for _ in range(2)]
    unfaithful = [[_scores(rng, other, 0.01, 60), _scores(rng, other, 0.01, 60)] for _ in range(2)]
    good = noise_floor(faithful, retrained, OBJECTIVES, n_boot=200, seed=1)
    bad = noise_floor(unfaithful, retrained, OBJECTIVES, n_boot=200, seed=1)
    for objective in OBJECTIVES:
        g, b = good[objective]["gap"], bad[objective]["gap"]
        assert abs(g["shapley_spearman"]["value"]) <= 0.2
        assert g["utility_pearson"]["value"] > -0.1
        assert b["shapley_spearman"]["value"] < -0.5 and b["shapley_spearman"]["hi"] < 0
        assert b["shapley_sign_agreement"]["value"] <= -0.25
        assert bad[objective]["retrain_vs_retrain"]["shapley_spearman"]["value"] == pytest.approx(
            good[objective]["retrain_vs_retrain"]["shapley_spearman"]["value"]
        )  # the noise floor does not depend on the arithmetic


def test_bootstrap_uncertainty_is_reported_and_absent_without_replicates() -> None:
    rng = np.random.default_rng(7)
    truth = _truth(3)
    reps = [[_scores(rng, truth, 0.02, 30)] for _ in range(3)]
    arith = [[_scores(rng, truth, 0.02, 30)] for _ in range(3)]
    with_boot = noise_floor(arith, reps, OBJECTIVES[:1], n_boot=300, seed=4)["helpfulness"]
    entry = with_boot["arithmetic_vs_retrain"]["utility_pearson"]
    assert entry["se"] > 0 and entry["lo"] < entry["hi"]
    assert len(with_boot["retrain_vs_retrain"]["shapley_spearman"]["per_seed_pair"]) == 3
    again = noise_floor(arith, reps, OBJECTIVES[:1], n_boot=300, seed=4)["helpfulness"]
    assert again == with_boot  # seeded
    without = noise_floor(arith, reps, OBJECTIVES[:1], n_boot=0)["helpfulness"]
    assert without["arithmetic_vs_retrain"]["utility_pearson"]["se"] is None
    assert without["arithmetic_vs_retrain"]["utility_pearson"]["value"] == pytest.approx(entry["value"], abs=1e-12)
    with pytest.raises(ValueError, match=">= 2 replicates"):
        noise_floor(arith[:1], reps[:1], OBJECTIVES[:1])


def _logps(rng: np.random.Generator, pairs: int) -> ResponseLogProbs:
    tokens = np.full(pairs, 5, dtype=np.int64)
    return ResponseLogProbs(rng.normal(-20, 3, pairs), rng.normal(-20, 3, pairs), tokens, tokens)


@pytest.mark.parametrize("weighting", ["sum", "mean", "size"])
def test_arithmetic_pair_scores_average_to_the_coalition_table(weighting: str) -> None:
    rng = np.random.default_rng(11)
    players = ("a", "b", "c")
    tables = {
        o: EvalLogProbs(o, _logps(rng, 25), {p: _logps(rng, 25) for p in players}) for o in OBJECTIVES
    }
    per_pair = arithmetic_pair_scores(tables, players, weighting=weighting, sizes=[10, 20, 30], metric="bt", beta=0.1)
    table = coalition_table(
        tables, players, all_coalitions(3), weighting=weighting, sizes=[10, 20, 30], metric="bt", beta=0.1
    )
    for j in range(len(OBJECTIVES)):
        assert per_pair[j].shape == (8, 25)
        assert np.allclose(per_pair[j].mean(axis=1), table.values[:, j], atol=1e-12)
