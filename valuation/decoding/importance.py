"""Importance-sampled `reward` utilities: every coalition's mean reward from ONE proposal sample pool.

Direct sampling decodes every coalition S separately: 2^n decodes. Instead, decode once from a proposal
q and reweight (self-normalised importance sampling, SNIS)::

    û(S) = Σ_i w̄_i^S r_i,    w̄_i^S = w_i^S / Σ_j w_j^S,    w_i^S = π_S(y_i | x_i) / q(y_i | x_i)

over the pool's responses y_i (prompts x_i, rewards r_i), with π_S and q the SAMPLING distributions
(temperature and top-p applied, as in `valuation.decoding.next_token`) at sequence level: the product over the
generated tokens, the stop token included. Its standard error is the delta-method one,
``sqrt(Σ_i (w̄_i^S)² (r_i − û(S))²)``, and its effective sample size (Kish) ``ESS = 1 / Σ_i (w̄_i^S)²``.
The normalisation runs over the whole pool (every prompt has the same number of responses, so û(S)
estimates the prompt-averaged utility the direct estimate targets).

Proposal (`proposal_components`, `valuation.decoding.decoder.sample_mixture`): the uniform sequence-level mixture
``q(y | x) = (1/C) Σ_c π_{S_c}(y | x)`` of C component coalitions — all 2^n coalitions when n ≤ 6, else
the base, the n singletons and the grand coalition. Each response picks a component at random and is
decoded from it; all responses share one batched decode with the base and all n adapters per sequence
(1 + n forward rows), which also scores every response under every component (so q and the components'
densities cost no extra pass); a target that is not a component is scored by one teacher-forced forward
pass over the pool (`pool_log_densities`). With q the mixture (the "balance heuristic" of
multiple importance sampling) the weight of a component target is at most C, whatever the sequence
length; when a target is far from every component the ESS says so and
`valuation.coalition_utility.reward.reward_coalition_utilities` falls back to direct sampling for that coalition
(``[sampling] min_ess``, a fraction of the pool size).

torch is imported inside functions: ``import torch`` costs ≈ 1.5 s (measured), and light commands that import
this module never run a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from valuation.composition.multilora import MultiLoraModel
from valuation.decoding.decoder import PromptLike, Sample, SamplingParams, left_padded, prompt_token_ids
from valuation.decoding.next_token import sampling_log_probs
from valuation.games.coalitions import all_coalitions
from valuation.models.devices import model_device

#: All 2^n coalitions are mixture components up to this many sources; above, ∅ + singletons + N.
ALL_COALITIONS_MAX_N = 6
#: Target coalitions scored together in one teacher-forced block (memory: positions × block × vocabulary).
TARGETS_PER_PASS = 8


def proposal_components(n: int) -> NDArray[np.bool_]:
    """The component coalitions ``bool[C, n]`` of the proposal mixture (see the module docstring)."""
    if n <= ALL_COALITIONS_MAX_N:
        return all_coalitions(n)
    return np.concatenate([np.zeros((1, n), bool), np.eye(n, dtype=bool), np.ones((1, n), bool)])


@dataclass(frozen=True)
class ImportanceEstimate:
    """SNIS estimates per coalition (index k): ``values[k]``, ``std_errs[k]`` and ``ess[k]`` (Kish)."""

    values: NDArray[np.float64]
    std_errs: NDArray[np.float64]
    ess: NDArray[np.float64]


def importance_estimate(
    log_p: NDArray[np.floating], log_q: NDArray[np.floating], rewards: NDArray[np.floating]
) -> ImportanceEstimate:
    """SNIS mean reward of K target distributions from R proposal samples.

    Args:
        log_p: float[R, K], log π_k(y_i) of pool sample i under target k.
        log_q: float[R], log q(y_i) under the proposal.
        rewards: float[R].
    """
    log_w = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)[:, None]
    if log_w.shape[0] == 0:
        raise ValueError("importance sampling needs at least one pool sample")
    log_w = log_w - log_w.max(axis=0, keepdims=True)
    w = np.exp(log_w)
    w_bar = w / w.sum(axis=0, keepdims=True)
    r = np.asarray(rewards, dtype=np.float64)[:, None]
    values = (w_bar * r).sum(axis=0)
    std_errs = np.sqrt((w_bar**2 * (r - values[None, :]) ** 2).sum(axis=0))
    ess = 1.0 / (w_bar**2).sum(axis=0)
    return ImportanceEstimate(values, std_errs, ess)


def proposal_log_density(scored: NDArray[np.floating]) -> NDArray[np.float64]:
    """``log q(y_i) = logsumexp_c(scored[i, c]) − log C`` from the pool's component log-densities [R, C]."""
    scored = np.asarray(scored, dtype=np.float64)
    return logsumexp(scored, axis=1) - np.log(scored.shape[1])


def pool_log_densities(
    model: Any,
    tokenizer: Any,
    multi: MultiLoraModel,
    prompts: Sequence[PromptLike],
    samples: Sequence[Sample],
    target_weights: NDArray[np.floating],
    params: SamplingParams,
    *,
    max_prompt_tokens: int | None = None,
    max_batch_rows: int = 64,
) -> NDArray[np.float64]:
    """Sequence log-densities ``log_p float[R, K]`` of the pool under K coalitions, by teacher forcing.

    ``log_p[i, k] = Σ_t log p_k(y_it | h_it)`` with p_k the sampling distribution (τ, top-p;
    `valuation.decoding.next_token.sampling_log_probs`) of the coalition with weights ``target_weights[k]`` over all n
    adapters of ``multi``. One forward per chunk of sequences, rows [base, adapter 0..n−1] per sequence; the
    tokens are the response plus its stop token (if it stopped). ``samples[i].prompt_index`` indexes
    ``prompts``. Needed only for targets that are not mixture components (n > 6 with sampled estimators):
    the components' densities are accumulated while decoding.
    """
    import torch

    if params.temperature == 0:
        raise ValueError("importance sampling needs temperature > 0 (greedy decoding has no density)")
    n = multi.n_adapters
    dev = model_device(model)  # the CPU, or the placement's GPU (valuation.models.devices)
    targets = torch.tensor(np.atleast_2d(target_weights), dtype=torch.float32).to(dev)
    encoded = {i: prompt_token_ids(tokenizer, prompts[i], max_prompt_tokens) for i in {s.prompt_index for s in samples}}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    group = 1 + n
    per_chunk = max(1, max_batch_rows // group)
    log_p = np.zeros((len(samples), targets.shape[0]))
    model.eval()
    for lo in range(0, len(samples), per_chunk):
        chunk = samples[lo : lo + per_chunk]
        responses = [list(s.token_ids) + ([s.stop_token] if s.stop_token is not None else []) for s in chunk]
        sequences = [encoded[s.prompt_index] + r for s, r in zip(chunk, responses, strict=True)]
        steps = max(len(r) for r in responses)
        if steps == 0:
            continue
        ids, mask, positions = (t.to(dev) for t in left_padded(sequences, pad, repeat=group))
        target, valid, _ = (t.to(dev) for t in left_padded(responses, 0))  # right-aligned like the sequences
        route = torch.tensor([-1, *range(n)], dtype=torch.long).repeat(len(chunk))
        with torch.inference_mode(), multi.routing(route):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           logits_to_keep=steps + 1).logits[:, :-1]  # [rows, steps, V]: predicts tokens t
        vocab = logits.shape[-1]
        logps = torch.log_softmax(logits.float(), dim=-1).view(len(chunk), group, steps, vocab)
        logps = logps.permute(0, 2, 1, 3).reshape(len(chunk) * steps, group, vocab)  # [(seq, t), 1 + n, V]
        flat_target = target.reshape(-1, 1)
        valid_f = valid.reshape(len(chunk), steps).double()
        for start in range(0, targets.shape[0], TARGETS_PER_PASS):  # bounded memory: [(seq, t), block, V]
            block = targets[start : start + TARGETS_PER_PASS]
            token_lp = sampling_log_probs(logps, block, flat_target, params.temperature, params.top_p).double()
            per_seq = (token_lp.view(len(chunk), steps, -1) * valid_f[:, :, None]).sum(1)
            log_p[lo : lo + len(chunk), start : start + block.shape[0]] = per_seq.cpu().numpy()
    return log_p


__all__ = [
    "ALL_COALITIONS_MAX_N",
    "ImportanceEstimate",
    "importance_estimate",
    "pool_log_densities",
    "proposal_components",
    "proposal_log_density",
]
