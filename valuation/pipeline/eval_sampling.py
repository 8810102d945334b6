"""Standard errors of exact Shapley values that come from evaluating on a finite eval set.

The ``preference`` utility of a coalition is a mean over the objective's p eval pairs,
u_k(S) = (1/p) Σ_j s_k(S, j), and the Shapley value is linear in u, so φ_i = (1/p) Σ_j φ_i(j) where φ_i(j)
is the Shapley value of the one-pair game s_k(·, j). The standard error of φ_i is the sample standard
deviation of φ_i(j) over the pairs divided by √p (exact Shapley has no estimator error of its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from valuation.coalition_utility.preference import pair_scores
from valuation.composition.arithmetic import coalition_margins, coalition_weights
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import exact_shapley
from valuation.games.result import ValuationResult
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.tables import eval_logprobs

MAX_GROUPS_FOR_STD_ERRS = 14  # exact Shapley over the players: a [2^players, eval pairs] score table per objective


def eval_sampling_values(run: ValuationRun, groups: Mapping[str, Sequence[str]]) -> ValuationResult:
    """Exact Shapley values of the players in `groups` with their evaluation-sampling standard errors
    (the formula is in the module docstring).

    A player's coalitions are the unions of its sources, so the same call serves members (several sources
    each) and single sources. Everything comes from the run's cached log-probs; no model is loaded when
    the cache is complete.

    Raises:
        ValueError: more than `MAX_GROUPS_FOR_STD_ERRS` players, or a run without the preference utility.
    """
    prepared = run.prepared
    config = prepared.config
    if config.utility.kind != "preference":
        raise ValueError("eval-sampling standard errors need the preference utility")
    if len(groups) > MAX_GROUPS_FOR_STD_ERRS:
        raise ValueError(f"at most {MAX_GROUPS_FOR_STD_ERRS} players, got {len(groups)}")
    report = eval_logprobs(prepared, run.adapters, progress=False)
    sources = list(prepared.sources)
    players = list(groups)
    masks = all_coalitions(len(players))
    owned = np.zeros((len(players), len(sources)), dtype=bool)
    for g, name in enumerate(players):
        for src in groups[name]:
            owned[g, sources.index(src)] = True
    source_masks = (masks.astype(np.int64) @ owned.astype(np.int64)) > 0
    weights = coalition_weights(source_masks, config.arithmetic.weighting, [len(prepared.train[s]) for s in sources])
    objectives = list(report.tables)
    values = np.zeros((len(players), len(objectives)))
    std_errs = np.zeros_like(values)
    for k, objective in enumerate(objectives):
        margins = coalition_margins(weights, report.tables[objective].deltas(sources))
        scores = pair_scores(margins, config.utility.metric, config.utility_beta)  # [2^m, p]
        per_pair = exact_shapley(scores)  # [m, p]: the one-pair games are the table's columns
        p = per_pair.shape[1]
        values[:, k] = per_pair.mean(axis=1)
        std_errs[:, k] = per_pair.std(axis=1, ddof=1) / np.sqrt(p) if p > 1 else np.nan
    return ValuationResult("exact", tuple(players), tuple(objectives), values, std_errs, info={"std_err": "eval sampling"})


__all__ = ["MAX_GROUPS_FOR_STD_ERRS", "eval_sampling_values"]
