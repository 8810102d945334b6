"""Calibration of the payout's uncertainty: intervals that claim 95% must cover the truth 95% of the time.

A game whose per-pair utilities are truth + known noise: 4 sources, 3 members (one owns two sources), two
objectives weighted 0.6 / 0.4, and for eval pair j and coalition S

    s_k(S, j) = u_k(S) + a_kj · |S| / n + e_kSj,   a_kj ~ N(0, 0.3²),  e_kSj ~ N(0, 0.1²)

(a_kj: the pair's effect shared by every coalition — the correlation the bootstrap must keep; e: the
coalition's own noise). The truth is the payout of the noiseless table u. Each experiment draws p = 200
pairs per objective, pays out the mean table and builds 200 bootstrap replicate payouts
(`market.uncertainty.payout_uncertainty`); we count how often the 95% intervals of the members' weighted
values, per-objective values and amounts contain the truth.

Fast version: 100 experiments, coverage within 3 binomial standard deviations of 95% (0.885–1.00). Full
version (``slow``): 400 experiments, 93–97% (the README reports its figures).
"""

from __future__ import annotations

import numpy as np
import pytest

from market.rules import RuleContext, compute_payout
from market.scenario.schema import UncertaintySection
from market.uncertainty import payout_uncertainty
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame
from valuation.games.replicates import terms_from_scores

SOURCES = ("s0", "s1", "s2", "s3")
OBJECTIVES = ("helpfulness", "harmlessness")
GROUPS = {"alice": ("s0", "s1"), "bob": ("s2",), "carol": ("s3",)}
MEMBERS = tuple(GROUPS)
WEIGHTS = {"helpfulness": 0.6, "harmlessness": 0.4}
POOL = 9_000_000  # 90,000.00 EUR in cents
PAIRS = 200
REPLICATES = 200


def true_table() -> tuple[np.ndarray, np.ndarray]:
    """The coalitions and the noiseless utilities: additive terms plus one interaction per objective."""
    masks = all_coalitions(len(SOURCES))
    x = masks.astype(float)
    help_ = 0.5 + x @ [0.10, 0.06, 0.04, 0.08] + 0.03 * x[:, 0] * x[:, 2]
    harm = 0.6 + x @ [0.02, 0.05, 0.07, 0.01] - 0.02 * x[:, 1] * x[:, 3]
    return masks, np.stack([help_, harm], axis=1)


def context(utilities: np.ndarray, masks: np.ndarray) -> RuleContext:
    return RuleContext(game=TableGame(SOURCES, OBJECTIVES, masks, utilities), groups=GROUPS, weights=WEIGHTS)


def coverage(experiments: int) -> dict[str, float]:
    """The fraction of (experiment, member[, objective]) intervals that hold the truth, per figure."""
    masks, truth = true_table()
    true_pay = compute_payout(context(truth, masks), MEMBERS, POOL, "EUR")
    assert true_pay.result is not None
    settings = UncertaintySection(replicates=REPLICATES, level=0.95, seed=0)
    hits: dict[str, list[bool]] = {"value": [], "objective value": [], "amount": []}
    size = masks.sum(axis=1)[:, None] / len(SOURCES)
    for seed in range(experiments):
        rng = np.random.default_rng(1000 + seed)
        scores = {
            o: truth[:, k][:, None] + rng.normal(0, 0.3, PAIRS)[None, :] * size + rng.normal(0, 0.1, (len(masks), PAIRS))
            for k, o in enumerate(OBJECTIVES)
        }
        items = terms_from_scores(SOURCES, OBJECTIVES, masks, scores)
        ctx = context(items.utilities(), masks)
        pay = compute_payout(ctx, MEMBERS, POOL, "EUR")
        unc = payout_uncertainty(
            ctx, MEMBERS, POOL, "EUR", pay, items.bootstrap(REPLICATES, seed), settings, sampled=False
        )
        assert unc is not None
        lo, hi = unc.value_interval()
        hits["value"] += list((lo <= true_pay.values) & (true_pay.values <= hi))
        intervals = unc.objective_interval()
        assert intervals is not None
        hits["objective value"] += list(((intervals[0] <= true_pay.result.values) & (true_pay.result.values <= intervals[1])).ravel())
        a_lo, a_hi = unc.amount_interval()
        true_amounts = np.array(true_pay.amounts)
        hits["amount"] += list((a_lo <= true_amounts) & (true_amounts <= a_hi))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_the_95_percent_intervals_cover_the_truth_fast() -> None:
    found = coverage(100)
    for figure, rate in found.items():
        assert 0.885 <= rate <= 1.0, (figure, rate, found)


@pytest.mark.slow
def test_the_95_percent_intervals_cover_the_truth_in_93_to_97_percent() -> None:
    found = coverage(400)
    print(f"coverage over 400 experiments: {found}")
    for figure, rate in found.items():
        assert 0.93 <= rate <= 0.97, (figure, rate, found)
