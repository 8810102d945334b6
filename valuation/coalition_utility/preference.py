"""The ``preference`` coalition utility: how well a coalition's implicit reward ranks held-out preference pairs.

The utility scores a coalition S on held-out preference pairs E_k of objective k with its
implicit reward relative to the base model (never raw log-probs: those carry a length bias):

    m_S(x, y_w, y_l) = Σ_{ℓ∈S} w_ℓ^S ((log π_ℓ(y_w) − log π₀(y_w)) − (log π_ℓ(y_l) − log π₀(y_l)))

(see `valuation.composition.arithmetic`), and averages a per-pair score over E_k:

* ``accuracy`` — 1 if m > 0, ½ if m = 0, 0 otherwise (ties count ½);
* ``bt``       — the Bradley–Terry win probability σ(β·m): bounded in (0, 1) and smooth (the default);
* ``loglik``   — log σ(β·m): unbounded below, which blows up Shapley magnitudes; allowed only with a warning.

The base model is the reference point: the empty coalition has m = 0 on every pair, so u(∅) = ½ for
``accuracy`` and ``bt`` (log ½ for ``loglik``) and every value measures improvement over the base.
The standard error of u(S) is the standard error of the mean over pairs, sd(scores, ddof=1)/√|E_k|
(0 when |E_k| < 2).

`UtilityColumn` (one objective's utilities of k coalitions) is the result type of both utilities; the
``reward`` utility is `valuation.coalition_utility.reward`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, log_expit

from valuation.composition.arithmetic import coalition_margins

PreferenceMetric = Literal["bt", "accuracy", "loglik"]
PREFERENCE_METRICS: tuple[str, ...] = ("bt", "accuracy", "loglik")

LOGLIK_WARNING = (
    "utility metric 'loglik' (mean log σ(β·margin)) is unbounded below: a few badly ranked pairs dominate "
    "it and Shapley magnitudes blow up; prefer 'bt' (bounded win probability) or 'accuracy'"
)

BLOCK_ROWS = 4096  # coalitions scored per block, so 2^n × pairs never needs to fit in memory at once


@dataclass(frozen=True)
class UtilityColumn:
    """Utilities of k coalitions for one objective: value, standard error and evaluation count per row."""

    values: NDArray[np.float64]
    std_errs: NDArray[np.float64]
    counts: NDArray[np.int64]


def pair_scores(margins: NDArray[np.floating], metric: str = "bt", beta: float = 0.1) -> NDArray[np.float64]:
    """Per-pair scores of margins (any shape) under ``metric``; see the module docstring for the formulas."""
    m = np.asarray(margins, dtype=np.float64)
    if metric == "accuracy":
        return np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))
    if metric == "bt":
        return expit(beta * m)
    if metric == "loglik":
        return log_expit(beta * m)
    raise ValueError(f"unknown preference metric {metric!r}; expected one of {', '.join(PREFERENCE_METRICS)}")


def preference_utility(
    weights: NDArray[np.floating],
    deltas: NDArray[np.floating],
    *,
    metric: str = "bt",
    beta: float = 0.1,
) -> UtilityColumn:
    """The ``preference`` utility of every coalition for one objective.

    Args:
        weights: w[k, n] from `valuation.composition.arithmetic.coalition_weights` (row k = coalition k).
        deltas: Δ[n, p] from `valuation.composition.arithmetic.preference_deltas` on the objective's eval pairs.
        metric: ``"bt"``, ``"accuracy"`` or ``"loglik"`` (the last one warns, see `LOGLIK_WARNING`).
        beta: the DPO β turning log-ratios into rewards (only ``bt`` and ``loglik`` use it).

    Returns:
        `UtilityColumn` with u(S_k) = mean over pairs of the per-pair score, its standard error and the pair
        count. Computed in blocks of coalitions, so large tables never materialise [2^n, p] at once.
    """
    if metric not in PREFERENCE_METRICS:
        raise ValueError(f"unknown preference metric {metric!r}; expected one of {', '.join(PREFERENCE_METRICS)}")
    if metric == "loglik":
        warnings.warn(LOGLIK_WARNING, UserWarning, stacklevel=2)
    w = np.asarray(weights, dtype=np.float64)
    d = np.asarray(deltas, dtype=np.float64)
    k, p = w.shape[0], d.shape[1]
    values = np.zeros(k, dtype=np.float64)
    std_errs = np.zeros(k, dtype=np.float64)
    if p > 0:
        for start in range(0, k, BLOCK_ROWS):
            block = pair_scores(coalition_margins(w[start : start + BLOCK_ROWS], d), metric, beta)
            values[start : start + block.shape[0]] = block.mean(axis=1)
            if p > 1:
                std_errs[start : start + block.shape[0]] = block.std(axis=1, ddof=1) / np.sqrt(p)
    else:
        values[:] = np.nan
    return UtilityColumn(values=values, std_errs=std_errs, counts=np.full(k, p, dtype=np.int64))



__all__ = [
    "BLOCK_ROWS",
    "LOGLIK_WARNING",
    "PREFERENCE_METRICS",
    "PreferenceMetric",
    "UtilityColumn",
    "pair_scores",
    "preference_utility",
]
