"""One decoding step of a coalition model π_S: its next-token distribution and the token drawn from it.

For a sequence with history h, the base π₀ and every adapter ℓ ∈ S give next-token log-softmaxes (rows
``[base, ℓ₁, …, ℓ_m]`` of one batched forward, `valuation.composition.multilora`), combined as in arXiv 2512.15765
(`combine_next_token_logprobs`):

    log π_S(v | h) = log_softmax_v( log π₀(v|h) + Σ_{ℓ∈S} w_ℓ^S (log π_ℓ(v|h) − log π₀(v|h)) )

renormalised over the vocabulary each step (an approximation of the sequence-level product). Then the
temperature τ (logits / τ, renormalised; τ = 0 is greedy) and top-p (the smallest set of most likely tokens
with mass ≥ p, renormalised; `nucleus_probs`) are applied, and the token is drawn by INVERSE CDF in vocabulary
order with a pre-drawn uniform u ∈ [0, 1) (`inverse_cdf`, `draw_tokens`): the first token v with cdf(v) > u.

The uniforms are common random numbers (`crn_uniforms`): stream (prompt i, sample k) is the same whatever
the coalition, so coalitions with similar next-token distributions draw the same tokens. `sampling_log_probs`
scores given tokens under the sampling distribution (τ, top-p) of several coalitions at once (the densities
importance sampling needs, `valuation.decoding.importance`). The decoding loop that calls these pieces is
`valuation.decoding.decoder`.

torch is imported inside functions: ``import torch`` costs ≈ 1.5 s (measured), and light commands that import
this module never run a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def crn_uniforms(
    seed: int, prompt_indices: Sequence[int], samples_per_prompt: int, steps: int, *, stream: int = 0
) -> np.ndarray:
    """Uniforms u[i, k, t] ∈ [0, 1) for prompt ``prompt_indices[i]``, sample k, step t.

    Stream (i, k) is ``numpy.random.default_rng([seed, prompt_index, k]).random(steps)``: independent of the
    coalition and of the other prompts; a longer ``steps`` extends the same stream. ``stream`` ≥ 1 selects a
    disjoint family ``[seed, prompt_index, k, stream]`` (the importance-sampling pool uses 1, so its draws are
    independent of direct sampling's).
    """
    out = np.empty((len(prompt_indices), samples_per_prompt, steps), dtype=np.float64)
    for i, p in enumerate(prompt_indices):
        for k in range(samples_per_prompt):
            key = [seed, int(p), k] if stream == 0 else [seed, int(p), k, stream]
            out[i, k] = np.random.default_rng(key).random(steps)
    return out


def combine_next_token_logprobs(logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``log_softmax(lp₀ + Σ_ℓ w_ℓ (lp_ℓ − lp₀))`` over the last axis.

    Args:
        logps: [R, 1 + m, V] next-token log-softmaxes, row 0 of each group the base, rows 1..m the adapters.
        weights: [m] the coalition weights w_ℓ^S, or [R, m]: one coalition per row.
    """
    import torch

    base = logps[:, 0]
    if logps.shape[1] == 1:
        return base
    ratios = logps[:, 1:] - base[:, None]
    pattern = "rmv,m->rv" if weights.dim() == 1 else "rmv,rm->rv"
    combined = base + torch.einsum(pattern, ratios, weights.to(logps.dtype))
    return torch.log_softmax(combined, dim=-1)


def draw_tokens(logp: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Tokens [R] from log-probs [R, V] by inverse CDF in vocabulary order with uniforms [R] (see module doc)."""
    import torch

    if temperature == 0:
        return torch.argmax(logp, dim=-1)
    return inverse_cdf(nucleus_probs(logp, temperature, top_p), uniforms)


def nucleus_probs(logp: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The sampling distribution [R, V] (float64, NOT renormalised after top-p: divide by its sum) of
    log-probs [R, V]: ``softmax(logp / τ)`` with the tokens outside the top-p nucleus set to 0 (τ > 0)."""
    import torch

    probs = torch.softmax(logp.double() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
        keep_sorted = before < top_p  # always keeps the most likely token
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    return probs


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Tokens [R]: the first v (vocabulary order) with cdf(v) > u · total mass, for probs [R, V] ≥ 0."""
    import torch

    cdf = torch.cumsum(probs, dim=-1)
    target = uniforms.double().clamp(0.0, 1.0 - 1e-12) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)
    return index.clamp(max=probs.shape[-1] - 1)


def sampling_log_probs(logps: torch.Tensor, weights: torch.Tensor, tokens: torch.Tensor,
                       temperature: float, top_p: float) -> torch.Tensor:
    """log p_c(token) [R, C] under the SAMPLING distribution (τ, top-p) of each of C coalitions with weights
    ``weights`` [C, n], from next-token log-softmaxes ``logps`` [R, 1 + n, V] (base first), ``tokens`` [R, 1].

    top-p = 1: ``log_softmax(combined_c / τ)`` for all C at once (τ = 1: the combined log-softmax itself);
    else the renormalised nucleus probabilities (`nucleus_probs`, float64), one coalition at a time. τ > 0."""
    import torch

    if top_p < 1.0:
        out = []
        for row in weights:
            probs = nucleus_probs(combine_next_token_logprobs(logps, row), temperature, top_p)
            picked = probs.gather(-1, tokens).squeeze(-1) / probs.sum(-1)
            out.append(torch.log(picked.clamp(min=1e-300)).float())
        return torch.stack(out, dim=1)
    base = logps[:, 0]
    ratios = logps[:, 1:] - base[:, None]
    combined = base[:, None, :] + torch.einsum("rmv,cm->rcv", ratios, weights.to(logps.dtype))  # [R, C, V]
    combined = torch.log_softmax(combined, dim=-1)
    if temperature != 1.0:
        combined = torch.log_softmax(combined / temperature, dim=-1)
    return combined.gather(-1, tokens[:, None, :].expand(-1, combined.shape[1], 1)).squeeze(-1)


__all__ = [
    "combine_next_token_logprobs",
    "crn_uniforms",
    "draw_tokens",
    "inverse_cdf",
    "nucleus_probs",
    "sampling_log_probs",
]
