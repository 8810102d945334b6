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
from valuation.composition.arithmetic import coalition_margins, coalition_weights
from valuation.composition.logprobs import EvalLogProbs, ResponseLogProbs
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import exact_shapley

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
    ``order_std`` its standard deviation across orders (ddof 1; 0 with one order). ``pair_scores`` holds,
    per objective, the per-pair scores ``[2^n, pairs]`` whose row means are ``values`` (what
    `noise_floor` resamples).
    """

    name: str
    values: np.ndarray
    std_errs: np.ndarray
    per_order: np.ndarray | None = None
    order_std: np.ndarray | None = None
    pair_scores: tuple[np.ndarray, ...] | None = None  # per objective [2^n, pairs]: order-averaged scores


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
    per_pair: list[np.ndarray] = []
    for j, objective in enumerate(objectives):
        n_pairs = len(tables[objective].base)
        per_pair.append(np.zeros((k, n_pairs)))
        for i, row in enumerate(masks):
            coalition = tuple(p for p, present in zip(players, row, strict=True) if present)
            scores = np.stack(
                [pair_scores(margins_of(objective, coalition, r), metric, beta) for r in range(n_orders)]
            )
            per_order[:, i, j] = scores.mean(axis=1)
            mean_scores = scores.mean(axis=0)
            per_pair[j][i] = mean_scores
            values[i, j] = mean_scores.mean()
            std_errs[i, j] = mean_scores.std(ddof=1) / np.sqrt(n_pairs) if n_pairs > 1 else 0.0
    order_std = per_order.std(axis=0, ddof=1) if n_orders > 1 else np.zeros((k, m))
    return VariantTable(
        name, values, std_errs, per_order if n_orders > 1 else None, order_std, tuple(per_pair)
    )


def arithmetic_pair_scores(
    tables: Mapping[str, EvalLogProbs],
    players: Sequence[str],
    *,
    weighting: str,
    sizes: Sequence[int],
    metric: str,
    beta: float,
) -> tuple[np.ndarray, ...]:
    """Per objective the per-pair scores ``[2^n, pairs]`` of language-model arithmetic: the score of the
    margin Σ_{ℓ∈S} w_ℓ^S Δ_ℓ[p] (`valuation.composition.arithmetic.coalition_margins`); their row means are
    the arithmetic utilities of `valuation.pipeline.tables.coalition_table`."""
    weights = coalition_weights(all_coalitions(len(players)), weighting, sizes)
    return tuple(
        pair_scores(coalition_margins(weights, table.deltas(list(players))), metric, beta)
        for table in tables.values()
    )


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


# ---------------------------------------------------------------------------------------------------
# the noise floor: retraining against itself under other seeds

COMPARISONS = (
    "retrain_vs_retrain",
    "arithmetic_vs_retrain",
    "arithmetic_vs_retrain_same_seed",
    "arithmetic_vs_arithmetic",
)
NOISE_METRICS = (
    "utility_pearson",
    "utility_pearson_multi",
    "shapley_spearman",
    "shapley_sign_agreement",
    "shapley_max_abs_diff",
)


def seed_pairs(comparison: str, k: int) -> list[tuple[int, int]]:
    """The (first, second) replicate pairs a comparison averages over, for ``k`` replicates.

    ``retrain_vs_retrain`` and ``arithmetic_vs_arithmetic``: a < b (independent trainings of the same way);
    ``arithmetic_vs_retrain``: a ≠ b (the arithmetic of replicate a against the retraining of replicate b:
    no adapter is shared, so it is comparable with the noise floor); ``arithmetic_vs_retrain_same_seed``:
    (a, a) (the singletons ARE the same adapters, which flatters the arithmetic).
    """
    if comparison in ("retrain_vs_retrain", "arithmetic_vs_arithmetic"):
        return [(a, b) for a in range(k) for b in range(a + 1, k)]
    if comparison == "arithmetic_vs_retrain":
        return [(a, b) for a in range(k) for b in range(k) if a != b]
    if comparison == "arithmetic_vs_retrain_same_seed":
        return [(a, a) for a in range(k)]
    raise ValueError(f"unknown comparison {comparison!r}; expected one of {', '.join(COMPARISONS)}")


def _column_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every column pair of ``a``, ``b`` (``[rows, B]``); NaN where a column is constant."""
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    num = (da * db).sum(axis=0)
    den = np.sqrt((da * da).sum(axis=0) * (db * db).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[~(den > 1e-300)] = np.nan
    return np.clip(r, -1.0, 1.0)


def agreement_columns(
    u_a: np.ndarray, u_b: np.ndarray, phi_a: np.ndarray, phi_b: np.ndarray, sizes: np.ndarray
) -> dict[str, np.ndarray]:
    """`NOISE_METRICS` for every column of two utility tables ``[2^n, B]`` and their Shapley values
    ``[n, B]`` (column b = bootstrap replicate b): the formulas of `utility_fidelity` and `shapley_fidelity`,
    vectorised; Spearman ρ is the Pearson r of the ranks (ties: average rank). NaN where undefined."""
    from scipy.stats import rankdata

    nonempty, multi = sizes >= 1, sizes >= 2
    return {
        "utility_pearson": _column_pearson(u_a[nonempty], u_b[nonempty]),
        "utility_pearson_multi": _column_pearson(u_a[multi], u_b[multi]),
        "shapley_spearman": _column_pearson(rankdata(phi_a, axis=0), rankdata(phi_b, axis=0)),
        "shapley_sign_agreement": np.mean(np.sign(phi_a) == np.sign(phi_b), axis=0),
        "shapley_max_abs_diff": np.max(np.abs(phi_a - phi_b), axis=0),
    }


def _summary(point: float, replicates: np.ndarray | None) -> dict[str, float | None]:
    """``value`` (the full-sample figure) with the bootstrap's ``se`` (std, ddof 1) and 95% percentile
    interval ``lo``/``hi`` (``None`` without replicates or where every replicate is undefined)."""
    out: dict[str, float | None] = {"value": _nan_to_none(point), "se": None, "lo": None, "hi": None}
    if replicates is None:
        return out
    finite = replicates[np.isfinite(replicates)]
    if finite.size >= 2:
        out |= {
            "se": float(finite.std(ddof=1)),
            "lo": float(np.percentile(finite, 2.5)),
            "hi": float(np.percentile(finite, 97.5)),
        }
    return out


def noise_floor(
    arithmetic: Sequence[Sequence[np.ndarray]],
    retrained: Sequence[Sequence[np.ndarray]],
    objectives: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Retraining's agreement with itself beside the arithmetic's agreement with retraining, per objective.

    Args:
        arithmetic: ``arithmetic[i][j]``: per-pair scores ``[2^n, pairs_j]`` of the arithmetic of replicate i
            (its own per-source adapters) on objective j; ``retrained[i][j]`` likewise for one retrained way.
            Utilities are the row means, Shapley values exact (`valuation.games.estimators.exact_shapley`).
        n_boot: bootstrap replicates over eval pairs (0: figures without uncertainty). Each replicate draws
            the objective's pairs with replacement ONCE for every model and replicate (the comparisons stay
            paired, as on the real eval set) and recomputes every utility, value and metric.
        seed: seeds the bootstrap (``numpy.random.default_rng``).

    Returns:
        per objective, per comparison of `COMPARISONS` (replicate pairs: `seed_pairs`) and per metric of
        `NOISE_METRICS`: ``value`` (mean over the comparison's replicate pairs), ``se``/``lo``/``hi`` (the
        bootstrap's std and 95% percentile interval of that mean), ``per_seed_pair``; and ``gap``: per metric
        ``arithmetic_vs_retrain − retrain_vs_retrain`` with its own bootstrap ``se``/``lo``/``hi`` (both
        sides from the same draws). Needs ≥ 2 replicates.
    """
    k = len(retrained)
    if k < 2 or len(arithmetic) != k:
        raise ValueError(f"the noise floor needs >= 2 replicates of both ways, got {len(arithmetic)} and {k}")
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for j, objective in enumerate(objectives):
        n_pairs = arithmetic[0][j].shape[1]
        sizes = all_coalitions(arithmetic[0][j].shape[0].bit_length() - 1).sum(axis=1)
        # column 0: the full sample; columns 1..B: bootstrap draws (pair counts / pairs)
        weights = np.ones((n_pairs, 1)) / n_pairs
        if n_boot > 0:
            counts = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=n_boot)
            weights = np.hstack([weights, counts.T / n_pairs])
        ways = {"arithmetic": arithmetic, "retrain": retrained}
        u = {w: [np.asarray(rep[j], float) @ weights for rep in reps] for w, reps in ways.items()}
        phi = {w: [exact_shapley(t) for t in tables] for w, tables in u.items()}
        per_objective: dict[str, Any] = {}
        means: dict[str, dict[str, np.ndarray]] = {}
        for comparison in COMPARISONS:
            first, second = {
                "retrain_vs_retrain": ("retrain", "retrain"),
                "arithmetic_vs_retrain": ("arithmetic", "retrain"),
                "arithmetic_vs_retrain_same_seed": ("arithmetic", "retrain"),
                "arithmetic_vs_arithmetic": ("arithmetic", "arithmetic"),
            }[comparison]
            pairs = seed_pairs(comparison, k)
            per_pair = [
                agreement_columns(u[first][a], u[second][b], phi[first][a], phi[second][b], sizes)
                for a, b in pairs
            ]
            entry: dict[str, Any] = {"seed_pairs": [list(p) for p in pairs]}
            means[comparison] = {}
            for metric in NOISE_METRICS:
                stacked = np.stack([m[metric] for m in per_pair])  # [pairs, 1 + B]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a column undefined in every pair
                    mean = np.nanmean(stacked, axis=0)
                means[comparison][metric] = mean
                entry[metric] = _summary(mean[0], mean[1:] if n_boot > 0 else None) | {
                    "per_seed_pair": [_nan_to_none(x) for x in stacked[:, 0]]
                }
            per_objective[comparison] = entry
        per_objective["gap"] = {
            metric: _summary(
                float(means["arithmetic_vs_retrain"][metric][0] - means["retrain_vs_retrain"][metric][0]),
                (means["arithmetic_vs_retrain"][metric] - means["retrain_vs_retrain"][metric])[1:]
                if n_boot > 0
                else None,
            )
            for metric in NOISE_METRICS
        }
        out[objective] = per_objective
    return out
