"""Sequence-level language-model arithmetic and the preference utility (pure numpy, no model)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from valuation.coalition_utility import preference
from valuation.coalition_utility.preference import LOGLIK_WARNING, pair_scores, preference_utility
from valuation.composition.arithmetic import (
    coalition_margins,
    coalition_weights,
    combine_sequence_logprobs,
    preference_deltas,
)
from valuation.games.coalitions import all_coalitions


@pytest.fixture
def logps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n, p = 4, 50
    base_c, base_r = rng.normal(-40, 5, p), rng.normal(-40, 5, p)
    return {
        "chosen": base_c[None, :] + rng.normal(0.5, 1.0, (n, p)),
        "rejected": base_r[None, :] + rng.normal(-0.5, 1.0, (n, p)),
        "base_chosen": base_c,
        "base_rejected": base_r,
    }


def test_sum_weights_are_membership_and_empty_row_is_zero() -> None:
    masks = all_coalitions(3)
    w = coalition_weights(masks, "sum")
    assert np.array_equal(w, masks.astype(float))
    assert not w[0].any()


def test_mean_weights_sum_to_one_over_the_coalition() -> None:
    masks = all_coalitions(4)
    w = coalition_weights(masks, "mean")
    assert np.allclose(w[1:].sum(axis=1), 1.0)
    assert np.allclose(w[0b0110], [0, 0.5, 0.5, 0])
    assert not w[0].any()


def test_size_weights_are_proportional_to_data_size() -> None:
    masks = all_coalitions(3)
    w = coalition_weights(masks, "size", sizes=[100, 300, 600])
    assert np.allclose(w[0b011], [0.25, 0.75, 0.0])
    assert np.allclose(w[0b111], [0.1, 0.3, 0.6])
    assert not w[0].any()


@pytest.mark.parametrize(
    ("weighting", "sizes", "message"),
    [("median", None, "unknown weighting"), ("size", None, "needs the data size"), ("size", [1, 0, 2], "positive")],
)
def test_bad_weightings_raise(weighting: str, sizes: list[int] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coalition_weights(all_coalitions(3), weighting, sizes)


def test_singleton_coalition_reproduces_the_adapter_and_empty_the_base(logps: dict[str, np.ndarray]) -> None:
    masks = all_coalitions(4)
    combined = combine_sequence_logprobs(coalition_weights(masks, "sum"), logps["chosen"], logps["base_chosen"])
    assert np.array_equal(combined[0], logps["base_chosen"])  # S = ∅ is the base model, exactly (base + 0·Δ)
    for ell in range(4):
        assert np.allclose(combined[1 << ell], logps["chosen"][ell], rtol=0, atol=1e-12)


def test_singleton_margin_is_the_adapters_own_log_ratio(logps: dict[str, np.ndarray]) -> None:
    deltas = preference_deltas(logps["chosen"], logps["rejected"], logps["base_chosen"], logps["base_rejected"])
    margins = coalition_margins(coalition_weights(all_coalitions(4), "sum"), deltas)
    for ell in range(4):
        own = (logps["chosen"][ell] - logps["base_chosen"]) - (logps["rejected"][ell] - logps["base_rejected"])
        assert np.allclose(margins[1 << ell], own, rtol=0, atol=1e-12)
    assert not margins[0].any()


def test_coalition_margins_match_a_loop_over_subsets(logps: dict[str, np.ndarray]) -> None:
    deltas = preference_deltas(logps["chosen"], logps["rejected"], logps["base_chosen"], logps["base_rejected"])
    masks = all_coalitions(4)
    margins = coalition_margins(coalition_weights(masks, "mean"), deltas)
    for k, mask in enumerate(masks):
        members = np.flatnonzero(mask)
        expected = deltas[members].mean(axis=0) if members.size else np.zeros(deltas.shape[1])
        assert np.allclose(margins[k], expected)


def test_pair_scores() -> None:
    m = np.array([-2.0, 0.0, 3.0])
    assert list(pair_scores(m, "accuracy")) == [0.0, 0.5, 1.0]
    assert np.allclose(pair_scores(m, "bt", beta=0.5), 1 / (1 + np.exp(-0.5 * m)))
    assert np.allclose(pair_scores(m, "loglik", beta=0.5), np.log(1 / (1 + np.exp(-0.5 * m))))
    with pytest.raises(ValueError, match="unknown preference metric"):
        pair_scores(m, "likelihood")


def test_empty_coalition_utility_is_one_half_with_zero_std_err(logps: dict[str, np.ndarray]) -> None:
    deltas = preference_deltas(logps["chosen"], logps["rejected"], logps["base_chosen"], logps["base_rejected"])
    w = coalition_weights(all_coalitions(4), "sum")
    for metric in ("bt", "accuracy"):
        col = preference_utility(w, deltas, metric=metric, beta=0.1)
        assert col.values[0] == 0.5
        assert col.std_errs[0] == 0.0
        assert (col.counts == deltas.shape[1]).all()


def test_utility_is_the_mean_score_with_the_std_err_of_the_mean() -> None:
    deltas = np.array([[1.0, -1.0, 0.0, 4.0]])
    w = coalition_weights(all_coalitions(1), "sum")
    acc = preference_utility(w, deltas, metric="accuracy")
    scores = np.array([1.0, 0.0, 0.5, 1.0])
    assert acc.values[1] == pytest.approx(scores.mean())
    assert acc.std_errs[1] == pytest.approx(scores.std(ddof=1) / 2.0)
    bt = preference_utility(w, deltas, metric="bt", beta=0.1)
    expected = np.mean([1 / (1 + math.exp(-0.1 * d)) for d in deltas[0]])
    assert bt.values[1] == pytest.approx(expected)


def test_blocked_evaluation_equals_one_block(logps: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    deltas = preference_deltas(logps["chosen"], logps["rejected"], logps["base_chosen"], logps["base_rejected"])
    w = coalition_weights(all_coalitions(4), "sum")
    whole = preference_utility(w, deltas, metric="bt")
    monkeypatch.setattr(preference, "BLOCK_ROWS", 3)
    blocked = preference_utility(w, deltas, metric="bt")
    # other block shapes → other BLAS calls for w @ Δ: equal to float rounding, not bit for bit
    np.testing.assert_allclose(blocked.values, whole.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(blocked.std_errs, whole.std_errs, rtol=0, atol=1e-12)


def test_loglik_warns_and_bt_does_not(logps: dict[str, np.ndarray]) -> None:
    deltas = preference_deltas(logps["chosen"], logps["rejected"], logps["base_chosen"], logps["base_rejected"])
    w = coalition_weights(all_coalitions(4), "sum")
    with pytest.warns(UserWarning, match="unbounded"):
        col = preference_utility(w, deltas, metric="loglik")
    assert col.values[0] == pytest.approx(math.log(0.5))
    assert "unbounded" in LOGLIK_WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preference_utility(w, deltas, metric="bt")


def test_sum_coalition_of_helpful_adapters_beats_each_alone() -> None:
    # two adapters that rank pairs right on different halves: their sum fixes more pairs than either
    deltas = np.array([[3.0, 3.0, -1.0, -1.0], [-1.0, -1.0, 3.0, 3.0]])
    acc = preference_utility(coalition_weights(all_coalitions(2), "sum"), deltas, metric="accuracy")
    assert acc.values[0b01] == 0.5 and acc.values[0b10] == 0.5
    assert acc.values[0b11] == 1.0
