"""Language-model arithmetic at the sequence level: coalition weights and combined log-probabilities.

A coalition S of sources gets the model (arXiv 2512.15765; DESIGN.md "The method, written out")

    log π_S(y|x) = log π₀(y|x) + Σ_{ℓ∈S} w_ℓ^S · (log π_ℓ(y|x) − log π₀(y|x))      (+ a normaliser)

where π₀ is the base model and π_ℓ the base with source ℓ's DPO adapter. At the sequence level (scoring a
given response) this is exact arithmetic on per-model summed response log-probs; the normaliser depends on
the prompt only, so it cancels in every chosen-vs-rejected comparison and is left out here.

Weightings (rows of the weight matrix, one per coalition; ∅ always gets all-zero weights, so π_∅ = π₀):

* ``sum``  — w_ℓ^S = 1 for ℓ ∈ S (the paper's choice: the optimum of sequential DPO over S, order-free);
* ``mean`` — w_ℓ^S = 1/|S|;
* ``size`` — w_ℓ^S = |D_ℓ| / Σ_{j∈S} |D_j| (data-size proportional, summing to 1 over S).

Every coalition is matrix arithmetic: ``weights[k, n] @ delta[n, pairs]``. Nothing here loads a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Weighting = Literal["sum", "mean", "size"]
WEIGHTINGS: tuple[str, ...] = ("sum", "mean", "size")


def coalition_weights(
    coalitions: NDArray[np.bool_],
    weighting: str = "sum",
    sizes: Sequence[float] | NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """Weight matrix ``w[k, n]``: the weight of source ℓ in coalition row k (zero outside the coalition).

    Args:
        coalitions: bool[k, n], row k = membership of coalition k (e.g. ``all_coalitions(n)``).
        weighting: ``"sum"``, ``"mean"`` or ``"size"`` (see the module docstring).
        sizes: |D_ℓ| per source, required for ``"size"`` (positive numbers).

    Raises:
        ValueError: unknown weighting, missing/negative sizes or a shape mismatch.
    """
    member = np.asarray(coalitions, dtype=bool)
    if member.ndim != 2:
        raise ValueError(f"coalitions must be a 2-D bool matrix, got shape {member.shape}")
    ones = member.astype(np.float64)
    if weighting == "sum":
        return ones
    if weighting == "mean":
        counts = ones.sum(axis=1, keepdims=True)
        return np.divide(ones, counts, out=np.zeros_like(ones), where=counts > 0)
    if weighting == "size":
        if sizes is None:
            raise ValueError("weighting 'size' needs the data size of every source")
        size_arr = np.asarray(sizes, dtype=np.float64)
        if size_arr.shape != (member.shape[1],):
            raise ValueError(f"sizes has shape {size_arr.shape}, expected ({member.shape[1]},)")
        if np.any(size_arr <= 0):
            raise ValueError("every source size must be positive for weighting 'size'")
        raw = ones * size_arr[None, :]
        totals = raw.sum(axis=1, keepdims=True)
        return np.divide(raw, totals, out=np.zeros_like(raw), where=totals > 0)
    raise ValueError(f"unknown weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")


def log_ratios(model_logps: NDArray[np.floating], base_logps: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per-model log-ratios to the base: ``log π_ℓ(y|x) − log π₀(y|x)``; shapes [n, p] and [p] → [n, p]."""
    models = np.asarray(model_logps, dtype=np.float64)
    base = np.asarray(base_logps, dtype=np.float64)
    return models - base[None, :]


def preference_deltas(
    chosen: NDArray[np.floating],
    rejected: NDArray[np.floating],
    base_chosen: NDArray[np.floating],
    base_rejected: NDArray[np.floating],
) -> NDArray[np.float64]:
    """Δ[n, p]: each source's implicit-reward margin per pair (in log-prob units, β left out).

    ``Δ_ℓ = (log π_ℓ(y_w) − log π₀(y_w)) − (log π_ℓ(y_l) − log π₀(y_l))`` for chosen y_w and rejected y_l,
    from per-model summed response log-probs ``chosen[n, p]``, ``rejected[n, p]`` and the base's ``[p]``.
    """
    return log_ratios(chosen, base_chosen) - log_ratios(rejected, base_rejected)


def coalition_margins(weights: NDArray[np.floating], deltas: NDArray[np.floating]) -> NDArray[np.float64]:
    """Implicit-reward margins of every coalition, ``weights[k, n] @ deltas[n, p] → [k, p]``.

    Row k is ``Σ_{ℓ∈S_k} w_ℓ^{S_k} Δ_ℓ``: the coalition's r_S(chosen) − r_S(rejected) divided by β.
    """
    w = np.asarray(weights, dtype=np.float64)
    d = np.asarray(deltas, dtype=np.float64)
    if w.shape[1] != d.shape[0]:
        raise ValueError(f"weights cover {w.shape[1]} sources but deltas have {d.shape[0]}")
    return w @ d


def combine_sequence_logprobs(
    weights: NDArray[np.floating],
    model_logps: NDArray[np.floating],
    base_logps: NDArray[np.floating],
) -> NDArray[np.float64]:
    """Unnormalised sequence log-probs of every coalition model, ``log π₀ + w @ (log π_ℓ − log π₀)``.

    Shapes: weights [k, n], model_logps [n, p], base_logps [p] → [k, p]. A singleton coalition {ℓ} under
    ``sum`` weighting gives back exactly ``log π_ℓ``; ∅ gives back ``log π₀``.
    """
    base = np.asarray(base_logps, dtype=np.float64)
    return base[None, :] + coalition_margins(weights, log_ratios(model_logps, base_logps))
