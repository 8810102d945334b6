"""Utilities of retrained models, and how faithfully language-model arithmetic reproduces them.

Utilities are the SAME ``preference`` utility (``[utility] metric``, β) on the SAME eval sets as the
arithmetic path — also when ``[utility] kind = "reward"`` values the arithmetic run: a retrained
model π_S is scored by its implicit reward relative to the base, margin m_S = (log π_S(y_w) − log π₀(y_w))
− (log π_S(y_l) − log π₀(y_l)) (`model_margins`), then σ(β·m_S) / accuracy / log σ averaged over pairs
(`variant_table`). The sequential utility of S is the mean over its R orders; the order sensitivity is the
standard deviation across orders (ddof = 1).

Fidelity (`utility_fidelity`, `shapley_fidelity`, per objective `fidelity_metrics`): Pearson r of
u_arith(S) vs u_variant(S) over the non-empty coalitions (``utility_pearson``; singletons are identical by
construction for sequential/union) and over |S| ≥ 2 only (``utility_pearson_multi``), max/mean |Δu|; of the
exact Shapley values: Spearman ρ across players, max |φ_arith − φ_variant| and the fraction of players whose
values have the same sign.

scipy.stats is imported inside the correlation functions: importing it costs about 1 s (measured here) and
only a retraining run needs it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuation.coalition_utility.preference import pair_scores
from valuation.composition.logprobs import EvalLogProbs, ResponseLogProbs
from valuation.games.coalitions import all_coalitions

FIDELITY_FORMAT = "payoutsim-fidelity/1"


# ---------------------------------------------------------------------------------------------------
# utilities of retrained models


def model_margins(table: EvalLogProbs, logps: ResponseLogProbs) -> np.ndarray:
    """m[p] = (log π(y_w) − log π₀(y_w)) − (log π(y_l) − log π₀(y_l)) of one model on one eval set."""
    return (logps.chosen - table.base.chosen) - (logps.rejected - table.base.rejected)


@dataclass(frozen=True)
class VariantTable:
    """Utilities of one retrained (or merged) variant over all 2^n coalitions, per objective.

    ``values``/``std_errs`` are ``[2^n, m]``; ``per_order`` is ``[R, 2^n, m]`` (sequential only) and
    ``order_std`` its standard deviation across orders (ddof 1; 0 with one order).
    """

    name: str
    values: np.ndarray
    std_errs: np.ndarray
    per_order: np.ndarray | None = None
    order_std: np.ndarray | None = None


def variant_table(
    name: str,
    players: Sequence[str],
    tables: Mapping[str, EvalLogProbs],
    margins_of: Callable[[str, tuple[str, ...], int], np.ndarray],
    *,
    n_orders: int,
    metric: str,
    beta: float,
) -> VariantTable:
    """Score every coalition: ``margins_of(objective, coalition, order)`` gives its per-pair margins.

    The per-pair score (`valuation.coalition_utility.preference.pair_scores`) is averaged over orders, then over
    pairs; the standard error is that of the mean over pairs of the order-averaged scores.
    """
    masks = all_coalitions(len(players))
    objectives = list(tables)
    k, m = masks.shape[0], len(objectives)
    per_order = np.zeros((n_orders, k, m))
    values, std_errs = np.zeros((k, m)), np.zeros((k, m))
    for j, objective in enumerate(objectives):
        n_pairs = len(tables[objective].base)
        for i, row in enumerate(masks):
            coalition = tuple(p for p, present in zip(players, row, strict=True) if present)
            scores = np.stack(
                [pair_scores(margins_of(objective, coalition, r), metric, beta) for r in range(n_orders)]
            )
            per_order[:, i, j] = scores.mean(axis=1)
            mean_scores = scores.mean(axis=0)
            values[i, j] = mean_scores.mean()
            std_errs[i, j] = mean_scores.std(ddof=1) / np.sqrt(n_pairs) if n_pairs > 1 else 0.0
    order_std = per_order.std(axis=0, ddof=1) if n_orders > 1 else np.zeros((k, m))
    return VariantTable(name, values, std_errs, per_order if n_orders > 1 else None, order_std)


# ---------------------------------------------------------------------------------------------------
# fidelity


def _nan_to_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def utility_fidelity(reference: np.ndarray, other: np.ndarray, sizes: np.ndarray) -> dict[str, float | None]:
    """Agreement of two utility columns over the same coalitions (``sizes`` = |S| per row).

    ``utility_pearson``: Pearson r over the non-empty coalitions; ``utility_pearson_multi``: over |S| ≥ 2;
    ``utility_max_abs_diff`` / ``utility_mean_abs_diff``: over the non-empty coalitions. A correlation of
    a constant column is undefined (``None``).
    """
    ref, oth, sizes = np.asarray(reference, float), np.asarray(other, float), np.asarray(sizes)
    nonempty, multi = sizes >= 1, sizes >= 2
    diff = np.abs(ref[nonempty] - oth[nonempty])
    return {
        "utility_pearson": pearson(ref[nonempty], oth[nonempty]),
        "utility_pearson_multi": pearson(ref[multi], oth[multi]),
        "utility_max_abs_diff": _nan_to_none(diff.max()) if diff.size else None,
        "utility_mean_abs_diff": _nan_to_none(diff.mean()) if diff.size else None,
    }


def shapley_fidelity(reference: np.ndarray, other: np.ndarray) -> dict[str, float | None]:
    """Agreement of two value vectors over the same players.

    ``shapley_spearman``: Spearman ρ (rank correlation; ``None`` when a vector is constant or n < 2);
    ``shapley_max_abs_diff``: max_i |φ_i − φ'_i|; ``shapley_sign_agreement``: the fraction of players with
    sign(φ_i) = sign(φ'_i) (0 counts as its own sign).
    """
    ref, oth = np.asarray(reference, float), np.asarray(other, float)
    return {
        "shapley_spearman": spearman(ref, oth),
        "shapley_max_abs_diff": float(np.max(np.abs(ref - oth))) if ref.size else None,
        "shapley_sign_agreement": float(np.mean(np.sign(ref) == np.sign(oth))) if ref.size else None,
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r of ``a`` and ``b``; ``None`` when undefined (fewer than 2 points, a constant vector, NaN)."""
    from scipy.stats import pearsonr

    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return _nan_to_none(float(pearsonr(a, b).statistic))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman ρ of ``a`` and ``b``; ``None`` when undefined (fewer than 2 points, a constant vector, NaN)."""
    from scipy.stats import spearmanr

    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _nan_to_none(float(spearmanr(a, b).statistic))


def fidelity_metrics(
    objectives: Sequence[str],
    sizes: np.ndarray,
    reference_values: np.ndarray,
    reference_shapley: np.ndarray,
    variant_values: np.ndarray,
    variant_shapley: np.ndarray,
) -> dict[str, dict[str, float | None]]:
    """Per objective: `utility_fidelity` of the ``[2^n, m]`` tables and `shapley_fidelity` of the ``[n, m]``
    values (reference = arithmetic)."""
    return {
        objective: utility_fidelity(reference_values[:, j], variant_values[:, j], sizes)
        | shapley_fidelity(reference_shapley[:, j], variant_shapley[:, j])
        for j, objective in enumerate(objectives)
    }


def fidelity_rows(fidelity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (variant, objective, fine-tunings, train wall time, metrics) of a ``fidelity.json`` report,
    for a summary table."""
    rows = []
    cost = fidelity.get("cost", {})
    for name, variant in fidelity["variants"].items():
        for objective, metrics in variant["objectives"].items():
            rows.append(
                {
                    "variant": name,
                    "objective": objective,
                    "fine_tunings": cost.get(name, {}).get("fine_tunings"),
                    "train_wall_time_s": cost.get(name, {}).get("train_wall_time_s"),
                    **metrics,
                }
            )
    return rows
