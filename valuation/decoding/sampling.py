"""Token-level sampling from a coalition model π_S, with one batched forward per step and common random numbers.

At every decoding step, for each sequence being generated, the base π₀ and every adapter ℓ ∈ S are evaluated
in ONE batched forward (rows ``[base, ℓ₁, …, ℓ_m]`` per sequence, several prompts × samples per batch, see
`valuation.composition.multilora`) with a KV cache, and their next-token log-softmaxes are combined (arXiv 2512.15765):

    log π_S(v | h) = log_softmax_v( log π₀(v|h) + Σ_{ℓ∈S} w_ℓ^S (log π_ℓ(v|h) − log π₀(v|h)) )

renormalised over the vocabulary each step (an approximation of the sequence-level product). Then the
temperature τ (logits / τ, renormalised; τ = 0 is greedy) and top-p (the smallest set of most likely tokens
with mass ≥ p, renormalised) are applied, and the token is drawn by INVERSE CDF in vocabulary order with a
pre-drawn uniform u ∈ [0, 1): the first token v with cdf(v) > u.

Common random numbers (CRN): the uniforms of (prompt i, sample k) come from
``numpy.random.default_rng([seed, i, k])`` — the same stream whatever the coalition, batch composition or
number of prompts. So coalitions with similar next-token distributions draw the same tokens (their utility
differences have low variance), the same seed gives identical samples, and S = ∅ (base rows only, no LoRA
hooks) reproduces the base model's own samples exactly.

Weightings (`valuation.composition.arithmetic.coalition_weights`): ``sum`` (w = 1, the paper's), ``mean`` (w = 1/|S|) and
``size`` (w ∝ |D_ℓ|, Σw = 1). For SAMPLING use a normalised weighting — ``mean`` (Σw = 1 whenever |S| ≥ 1;
what "sum rescaled so Σw = 1" amounts to) or ``size``: with ``sum`` the log-ratio terms add up, the combined
distribution moves further from the base as |S| grows (Σw = |S|: an extrapolation, not an interpolation).
Measured on the tiny preset with the five trained synthetic-corpus adapters (16 eval prompts × 4 samples,
≤ 48 tokens, τ = 1, top-p = 1, 4 coalitions per size): the base log-prob per token of the samples is −1.09
at |S| = 0; −1.10 / −1.15 / −1.16 at |S| = 2 / 3 / 4 under ``sum`` against −1.09 / −1.12 / −1.10 under
``mean``; the repeated-trigram share 0.001 at |S| = 0, 0.005 / 0.005 / 0.006 under ``sum`` against
0.003 / 0.003 / 0.003 under ``mean``; the distinct-token ratio stays 0.91–0.92 either way. The overshoot
grows with |S| and with adapter strength (the design card's prototype saw degenerate text); ``mean`` stays
at the base's level. That is why ``[sampling] weighting`` defaults to ``mean``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from valuation.files import atomic_write_text, sha256_json

if TYPE_CHECKING:
    import torch

    from valuation.composition.multilora import MultiLoraModel

SAMPLES_FORMAT = "payoutsim-samples/1"
SAMPLER_VERSION = 1
POOL_STREAM = 1  # CRN stream family of the importance-sampling proposal pool (`sample_mixture`)
PromptLike = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings: new-token budget, temperature τ (0 = greedy), nucleus top-p and the CRN seed."""

    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be ≥ 1")
        if self.temperature < 0:
            raise ValueError("temperature must be ≥ 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass(frozen=True)
class Sample:
    """One generated response.

    Attributes:
        prompt_index, sample_index: which prompt and which of its samples (the CRN stream (i, k)).
        token_ids: the new tokens, without the stop token.
        text: ``token_ids`` decoded, special tokens skipped, stripped.
        logprob: Σ_t log π_S(token_t) of the combined, renormalised distribution (before τ and top-p).
        base_logprob: Σ_t log π₀(token_t), the base model's token log-probs along the same sequence.
        finished: True when a stop token ended it (False: cut by max_new_tokens).
        stop_token: the stop token drawn (None when cut) — part of the sequence whose density
            importance sampling needs (`valuation.decoding.importance`).
        scored_logprobs: pool samples of `sample_mixture` only: Σ_t log p_c(token_t) under the SAMPLING
            distribution (τ, top-p) of each mixture component c, accumulated while decoding.
    """

    prompt_index: int
    sample_index: int
    token_ids: tuple[int, ...]
    text: str
    logprob: float
    base_logprob: float
    finished: bool
    stop_token: int | None = None
    scored_logprobs: tuple[float, ...] | None = None


# ---------------------------------------------------------------------------------------------------
# pieces


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
                       params: SamplingParams) -> torch.Tensor:
    """log p_c(token) [R, C] under the SAMPLING distribution (τ, top-p) of each of C coalitions with weights
    ``weights`` [C, n], from next-token log-softmaxes ``logps`` [R, 1 + n, V] (base first), ``tokens`` [R, 1].

    top-p = 1: ``log_softmax(combined_c / τ)`` for all C at once (τ = 1: the combined log-softmax itself);
    else the renormalised nucleus probabilities (`nucleus_probs`, float64), one coalition at a time. τ > 0."""
    import torch

    if params.top_p < 1.0:
        out = []
        for row in weights:
            probs = nucleus_probs(combine_next_token_logprobs(logps, row), params.temperature, params.top_p)
            picked = probs.gather(-1, tokens).squeeze(-1) / probs.sum(-1)
            out.append(torch.log(picked.clamp(min=1e-300)).float())
        return torch.stack(out, dim=1)
    base = logps[:, 0]
    ratios = logps[:, 1:] - base[:, None]
    combined = base[:, None, :] + torch.einsum("rmv,cm->rcv", ratios, weights.to(logps.dtype))  # [R, C, V]
    combined = torch.log_softmax(combined, dim=-1)
    if params.temperature != 1.0:
        combined = torch.log_softmax(combined / params.temperature, dim=-1)
    return combined.gather(-1, tokens[:, None, :].expand(-1, combined.shape[1], 1)).squeeze(-1)


def left_padded(
    sequences: Sequence[Sequence[int]], pad: int, *, repeat: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, mask, positions)`` [len · repeat, width]: every sequence right-aligned (left padding with
    ``pad``), each row repeated ``repeat`` times in place (rows [base, adapters…] per sequence), the mask 1 on
    real tokens, positions counting real tokens from 0."""
    import torch

    width = max((len(seq) for seq in sequences), default=0)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    if repeat > 1:
        ids, mask = ids.repeat_interleave(repeat, dim=0), mask.repeat_interleave(repeat, dim=0)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def prompt_token_ids(tokenizer: Any, prompt: PromptLike, max_prompt_tokens: int | None = None) -> list[int]:
    """Prompt ids: the chat template with the generation prompt (a text prompt is one user message), or
    plain text ids without a chat template; only the last ``max_prompt_tokens`` are kept."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True)
        ids = list(out["input_ids"])
    else:
        text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
        ids = list(tokenizer(text=text)["input_ids"])
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        ids = ids[-max_prompt_tokens:]
    return ids


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The EOS ids of the model's generation config and of the tokenizer."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


# ---------------------------------------------------------------------------------------------------
# decoding


def sample_composed(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    adapters: Sequence[int],
    weights: Sequence[float],
    *,
    samples_per_prompt: int = 1,
    params: SamplingParams | None = None,
    multi: MultiLoraModel | None = None,
    prompt_indices: Sequence[int] | None = None,
    max_batch_rows: int = 64,
    max_prompt_tokens: int | None = None,
) -> list[Sample]:
    """Sample ``samples_per_prompt`` responses per prompt from π_S, S = ``adapters`` with ``weights``.

    Args:
        model: the base causal LM (the one ``multi`` hooks into).
        tokenizer: its tokenizer (pad token set).
        prompts: text prompts or chat message lists.
        adapters: adapter indices of ``multi`` forming S (empty = the base model).
        weights: w_ℓ^S per entry of ``adapters``.
        params: decoding settings (default `SamplingParams()`).
        multi: the `MultiLoraModel` on ``model``; required when ``adapters`` is not empty.
        prompt_indices: CRN stream ids of the prompts (default 0..P−1).
        max_batch_rows: sequences are decoded in chunks of at most this many forward rows (≥ 1 + |S|).
        max_prompt_tokens: keep only the last N prompt tokens.

    Returns:
        Samples ordered by (prompt, sample index).
    """
    params = params or SamplingParams()
    if len(adapters) != len(weights):
        raise ValueError("adapters and weights differ in length")
    if adapters and multi is None:
        raise ValueError("sampling from a non-empty coalition needs a MultiLoraModel")
    indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompts)))
    if len(indices) != len(prompts):
        raise ValueError("prompt_indices and prompts differ in length")
    job_weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(prompts), samples_per_prompt, len(adapters)))
    return _decode_all(model, tokenizer, prompts, list(adapters), job_weights, samples_per_prompt, params, multi,
                       indices, max_batch_rows, max_prompt_tokens)


def sample_mixture(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    component_weights: np.ndarray,
    *,
    multi: MultiLoraModel,
    samples_per_prompt: int = 1,
    params: SamplingParams | None = None,
    prompt_indices: Sequence[int] | None = None,
    max_batch_rows: int = 64,
    max_prompt_tokens: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Sample from the uniform MIXTURE of C coalition models — the proposal of importance sampling.

    Response k of prompt i picks a component c uniformly at random (``mixture_components``) and is decoded
    from π_{S_c} exactly as `sample_composed` would, but with the CRN streams ``[seed, prompt, k, 1]``
    (``POOL_STREAM``: independent of direct sampling's). So its density is the sequence-level mixture
    ``q(y | x) = (1/C) Σ_c π_{S_c}(y | x)``. ``component_weights[c]`` holds the weights w^{S_c} over ALL n
    adapters of ``multi`` (0 = not a member; a zero row is the base model); every sequence runs the base and
    all n adapters (1 + n forward rows), so sequences of different components share one batched decode.
    ``on_chunk(k)`` (if given) is called after each decoded chunk of k responses (progress display).
    While decoding, each response is also scored under every component (``Sample.scored_logprobs``), so the
    proposal density ``log q = logsumexp_c(scored) − log C`` and the components' own densities cost no extra
    forward pass (`valuation.decoding.importance.proposal_log_density`).
    """
    params = params or SamplingParams()
    weights = np.atleast_2d(np.asarray(component_weights, dtype=np.float64))
    if weights.shape[1] != len(multi.adapter_names):
        raise ValueError(
            f"component weights have {weights.shape[1]} columns, the model has {len(multi.adapter_names)} adapters"
        )
    indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompts)))
    if len(indices) != len(prompts):
        raise ValueError("prompt_indices and prompts differ in length")
    chosen = mixture_components(params.seed, indices, samples_per_prompt, weights.shape[0])
    return _decode_all(model, tokenizer, prompts, list(range(weights.shape[1])), weights[chosen], samples_per_prompt,
                       params, multi, indices, max_batch_rows, max_prompt_tokens, stream=POOL_STREAM,
                       score_weights=weights, on_chunk=on_chunk)


def mixture_components(seed: int, prompt_indices: Sequence[int], samples_per_prompt: int, n_components: int) -> np.ndarray:
    """The component c[i, k] ∈ 0..C−1 of response k of prompt ``prompt_indices[i]`` in `sample_mixture`:
    uniform, from ``numpy.random.default_rng([seed, prompt_index, k, POOL_STREAM, 0])``."""
    return np.array(
        [[int(np.random.default_rng([seed, int(p), k, POOL_STREAM, 0]).integers(n_components))
          for k in range(samples_per_prompt)] for p in prompt_indices],
        dtype=np.int64,
    ).reshape(len(prompt_indices), samples_per_prompt)


def _decode_all(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    adapters: list[int],
    job_weights: np.ndarray,
    samples_per_prompt: int,
    params: SamplingParams,
    multi: MultiLoraModel | None,
    indices: list[int],
    max_batch_rows: int,
    max_prompt_tokens: int | None,
    *,
    stream: int = 0,
    score_weights: np.ndarray | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Decode every (prompt i, sample k) with coalition weights ``job_weights[i, k]`` over ``adapters``, in chunks
    of at most ``max_batch_rows`` forward rows."""
    uniforms = crn_uniforms(params.seed, indices, samples_per_prompt, params.max_new_tokens, stream=stream)
    encoded = [prompt_token_ids(tokenizer, p, max_prompt_tokens) for p in prompts]
    jobs = [(i, k) for i in range(len(prompts)) for k in range(samples_per_prompt)]
    per_chunk = max(1, max_batch_rows // (1 + len(adapters)))
    out: list[Sample] = []
    for lo in range(0, len(jobs), per_chunk):
        chunk = jobs[lo : lo + per_chunk]
        out.extend(
            _decode_chunk(
                model,
                tokenizer,
                [encoded[i] for i, _ in chunk],
                np.stack([uniforms[i, k] for i, k in chunk]),
                adapters,
                np.stack([job_weights[i, k] for i, k in chunk]),
                params,
                multi,
                [(indices[i], k) for i, k in chunk],
                score_weights,
            )
        )
        if on_chunk is not None:
            on_chunk(len(chunk))
    return out


def _decode_chunk(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    uniforms: np.ndarray,
    adapters: list[int],
    weights: np.ndarray,
    params: SamplingParams,
    multi: MultiLoraModel | None,
    keys: list[tuple[int, int]],
    score_weights: np.ndarray | None = None,
) -> list[Sample]:
    """Decode one chunk; ``weights`` [s, |adapters|]: the coalition weights of each sequence. With
    ``score_weights`` [C, |adapters|] every response is also scored under each of those C coalitions'
    sampling distributions (``Sample.scored_logprobs``)."""
    import contextlib

    import torch
    from transformers import DynamicCache

    s, group = len(prompt_ids), 1 + len(adapters)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    ids, mask, positions = left_padded(prompt_ids, pad, repeat=group)
    route = torch.tensor([-1, *adapters], dtype=torch.long).repeat(s)
    w = torch.tensor(np.asarray(weights), dtype=torch.float32)  # [s, m]
    u = torch.from_numpy(uniforms)
    generated: list[list[int]] = [[] for _ in range(s)]
    logprob = torch.zeros(s, dtype=torch.float64)
    base_logprob = torch.zeros(s, dtype=torch.float64)
    done = torch.zeros(s, dtype=torch.bool)
    stop_drawn = torch.full((s,), -1, dtype=torch.long)
    stop_tensor = torch.tensor(sorted(stops), dtype=torch.long)
    scoring = None if score_weights is None else torch.tensor(np.asarray(score_weights), dtype=torch.float32)
    scored = torch.zeros((s, 0 if scoring is None else scoring.shape[0]), dtype=torch.float64)
    routing = multi.routing(route) if multi is not None else contextlib.nullcontext()
    model.eval()
    with torch.inference_mode(), routing:
        cache = DynamicCache()
        logits = model(  # logits of the last position only (the prompt's other logits are never used)
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        last = positions[:, -1]
        # the decode steps' matmuls: packed for this batch's rows when `multi.packed` is set (not the prefill)
        with multi.decode_steps(ids.shape[0]) if multi is not None else contextlib.nullcontext():
            for t in range(params.max_new_tokens):
                logps = torch.log_softmax(logits.float(), dim=-1).view(s, group, -1)
                combined = combine_next_token_logprobs(logps, w)
                token = draw_tokens(combined, u[:, t], params.temperature, params.top_p)
                picked = combined.gather(-1, token[:, None]).squeeze(-1).double()
                live = ~done
                picked_base = logps[:, 0].gather(-1, token[:, None]).squeeze(-1).double()
                logprob += torch.where(live, picked, torch.zeros_like(picked))
                base_logprob += torch.where(live, picked_base, torch.zeros_like(picked_base))
                if scoring is not None:
                    lp = sampling_log_probs(logps, scoring, token[:, None], params).double()  # [s, C]
                    scored += torch.where(live[:, None], lp, torch.zeros_like(lp))
                is_stop = torch.isin(token, stop_tensor)
                stop_drawn = torch.where(live & is_stop, token, stop_drawn)
                for row in torch.nonzero(live & ~is_stop).flatten().tolist():
                    generated[row].append(int(token[row]))
                done = done | is_stop
                if bool(done.all()) or t == params.max_new_tokens - 1:
                    break
                token = torch.where(done, torch.full_like(token, pad), token)
                mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype)], dim=1)
                last = last + 1
                logits = model(
                    input_ids=token.repeat_interleave(group)[:, None],
                    attention_mask=mask,
                    position_ids=last[:, None],
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1]
    return [
        Sample(
            prompt_index=keys[row][0],
            sample_index=keys[row][1],
            token_ids=tuple(generated[row]),
            text=tokenizer.decode(generated[row], skip_special_tokens=True).strip(),
            logprob=float(logprob[row]),
            base_logprob=float(base_logprob[row]),
            finished=bool(done[row]),
            stop_token=int(stop_drawn[row]) if int(stop_drawn[row]) >= 0 else None,
            scored_logprobs=None if scoring is None else tuple(float(x) for x in scored[row]),
        )
        for row in range(s)
    ]


# ---------------------------------------------------------------------------------------------------
# coalitions, with an on-disk cache


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter available to coalitions: its source name, peft dir and content hash."""

    source: str
    path: Path
    sha256: str


class CoalitionSampler:
    """Samples responses from π_S for coalitions S of ``adapters``, caching every coalition's samples on disk.

    The base model and ALL adapters are loaded once, lazily (only on a cache miss), into one
    `MultiLoraModel`. The cache file of a coalition is ``cache_dir/<key>.json`` with key = SHA-256 over
    (sampler version, base sha256, the (source, adapter sha256, weight) of each member of S, the sampling
    params, samples per prompt, max prompt tokens and the prompts); a re-run with the same inputs is free.
    ``packed_gemm``: decode steps through `valuation.composition.packed` where it helps (not part of the key: the same
    distribution, equal to float rounding).
    """

    def __init__(
        self,
        base: Any,
        adapters: Sequence[AdapterSpec],
        *,
        params: SamplingParams,
        samples_per_prompt: int,
        cache_dir: Path | None,
        max_batch_rows: int = 64,
        max_prompt_tokens: int | None = 256,
        packed_gemm: bool = True,
    ) -> None:
        self.base = base
        self.packed_gemm = packed_gemm
        self.adapters = list(adapters)
        self.params = params
        self.samples_per_prompt = samples_per_prompt
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.max_batch_rows = max_batch_rows
        self.max_prompt_tokens = max_prompt_tokens
        self.generated = 0
        self.cached = 0
        self._loaded: tuple[Any, Any, MultiLoraModel] | None = None

    def key(self, members: Sequence[int], weights: Sequence[float], prompts: Sequence[PromptLike]) -> str:
        """The cache key of coalition ``members`` (adapter positions) with ``weights`` on ``prompts``."""
        return self._key(prompts, self.samples_per_prompt, members=[
            [self.adapters[m].source, self.adapters[m].sha256, float(w)] for m, w in zip(members, weights, strict=True)
        ])

    def proposal_key(self, component_weights: np.ndarray, prompts: Sequence[PromptLike], samples_per_prompt: int) -> str:
        """The cache key of a proposal pool: the mixture components' weights over ALL adapters (in order)."""
        return self._key(
            prompts,
            samples_per_prompt,
            adapters=[[a.source, a.sha256] for a in self.adapters],
            proposal=np.asarray(component_weights, dtype=np.float64).round(12).tolist(),
        )

    def _key(self, prompts: Sequence[PromptLike], samples_per_prompt: int, **what: Any) -> str:
        payload = {
            "version": SAMPLER_VERSION,
            "base": self.base.sha256,
            **what,
            "params": asdict(self.params),
            "samples_per_prompt": samples_per_prompt,
            "max_prompt_tokens": self.max_prompt_tokens,
            "prompts": [p if isinstance(p, str) else [dict(m) for m in p] for p in prompts],
        }
        return sha256_json(payload)

    def _model(self) -> tuple[Any, Any, MultiLoraModel]:
        if self._loaded is None:
            from valuation.composition.multilora import MultiLoraModel
            from valuation.models import load_base_model

            model, tokenizer = load_base_model(self.base)
            multi = MultiLoraModel.from_adapter_dirs(
                model, [a.path for a in self.adapters], [a.source for a in self.adapters], packed_gemm=self.packed_gemm
            )
            self._loaded = (model, tokenizer, multi)
        return self._loaded

    def samples(
        self, members: Sequence[int], weights: Sequence[float], prompts: Sequence[PromptLike]
    ) -> list[Sample]:
        """The samples of coalition ``members`` (from the cache, or generated and cached)."""

        def generate(model: Any, tokenizer: Any, multi: MultiLoraModel) -> list[Sample]:
            return sample_composed(
                model, tokenizer, prompts, list(members), list(weights), samples_per_prompt=self.samples_per_prompt,
                params=self.params, multi=multi, max_batch_rows=self.max_batch_rows,
                max_prompt_tokens=self.max_prompt_tokens,
            )

        key = self.key(members, weights, prompts)
        return self._cached(f"{key}.json", len(prompts) * self.samples_per_prompt, generate)

    def proposal_samples(
        self, component_weights: np.ndarray, prompts: Sequence[PromptLike], samples_per_prompt: int,
        *, on_chunk: Callable[[int], None] | None = None,
    ) -> list[Sample]:
        """The proposal pool of importance sampling (`sample_mixture` over the C components whose weights over
        all adapters are ``component_weights`` [C, n]); cached on disk like coalition samples. ``on_chunk``:
        see `sample_mixture` (not called on a cache hit)."""

        def generate(model: Any, tokenizer: Any, multi: MultiLoraModel) -> list[Sample]:
            return sample_mixture(
                model, tokenizer, prompts, component_weights, multi=multi, samples_per_prompt=samples_per_prompt,
                params=self.params, max_batch_rows=self.max_batch_rows, max_prompt_tokens=self.max_prompt_tokens,
                on_chunk=on_chunk,
            )

        key = self.proposal_key(component_weights, prompts, samples_per_prompt)
        return self._cached(f"proposal-{key}.json", len(prompts) * samples_per_prompt, generate)

    def _cached(self, name: str, expected: int, generate: Any) -> list[Sample]:
        """``cache_dir/name`` if it holds ``expected`` samples; else ``generate(model, tokenizer, multi)``,
        saved there atomically. Counts hits (``cached``) and generations (``generated``)."""
        path = None if self.cache_dir is None else self.cache_dir / name
        if path is not None:
            hit = _load_samples(path, expected)
            if hit is not None:
                self.cached += 1
                return hit
        out = generate(*self._model())
        self.generated += 1
        if path is not None:
            _save_samples(path, out)
        return out

    def pool_log_densities(
        self,
        pool: Sequence[Sample],
        prompts: Sequence[PromptLike],
        target_weights: np.ndarray,
        component_weights: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(log_p [R, K], log_q [R])`` of the pool under the K target coalitions (weights over all adapters)
        and under the proposal. Targets that are mixture components come from the pool's own
        ``scored_logprobs``; the others are scored by one teacher-forced pass
        (`valuation.decoding.importance.pool_log_densities`, cached on disk as ``.npz``)."""
        from valuation.decoding.importance import pool_log_densities, proposal_log_density

        targets = np.atleast_2d(np.asarray(target_weights, dtype=np.float64))
        components = np.atleast_2d(np.asarray(component_weights, dtype=np.float64))
        scored = np.array([s.scored_logprobs for s in pool], dtype=np.float64).reshape(len(pool), -1)
        match = [np.flatnonzero(np.all(np.isclose(components, row, rtol=0, atol=1e-12), axis=1)) for row in targets]
        log_p = np.empty((len(pool), targets.shape[0]))
        missing = [k for k, found in enumerate(match) if found.size == 0]
        for k, found in enumerate(match):
            if found.size:
                log_p[:, k] = scored[:, found[0]]
        if missing:
            log_p[:, missing] = self._teacher_forced(pool, prompts, targets[missing], components, pool_log_densities)
        return log_p, proposal_log_density(scored)

    def _teacher_forced(self, pool: Sequence[Sample], prompts: Sequence[PromptLike], targets: np.ndarray,
                        components: np.ndarray, score: Any) -> np.ndarray:
        samples_per_prompt = len(pool) // max(1, len(prompts))
        key = self.proposal_key(components, prompts, samples_per_prompt)
        digest = hashlib.sha256(targets.round(12).tobytes() + str(targets.shape).encode()).hexdigest()[:24]
        path = None if self.cache_dir is None else self.cache_dir / f"densities-{key[:40]}-{digest}.npz"
        if path is not None and path.is_file():
            try:
                with np.load(path) as data:
                    if data["log_p"].shape == (len(pool), targets.shape[0]):
                        return np.asarray(data["log_p"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable: recompute
        model, tokenizer, multi = self._model()
        log_p = score(model, tokenizer, multi, prompts, pool, targets, self.params,
                      max_prompt_tokens=self.max_prompt_tokens, max_batch_rows=self.max_batch_rows)
        if path is not None:
            import io

            from valuation.files import atomic_write_bytes

            buffer = io.BytesIO()
            np.savez(buffer, log_p=log_p)
            atomic_write_bytes(path, buffer.getvalue())
        return log_p

    def close(self) -> None:
        """Free the loaded model (if any)."""
        if self._loaded is not None:
            self._loaded[2].close()
            self._loaded = None


def _load_samples(path: Path, expected: int) -> list[Sample] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SAMPLES_FORMAT or len(data["samples"]) != expected:
            return None
        return [
            Sample(
                prompt_index=int(s["prompt_index"]),
                sample_index=int(s["sample_index"]),
                token_ids=tuple(int(t) for t in s["token_ids"]),
                text=str(s["text"]),
                logprob=float(s["logprob"]),
                base_logprob=float(s["base_logprob"]),
                finished=bool(s["finished"]),
                stop_token=None if s.get("stop_token") is None else int(s["stop_token"]),
                scored_logprobs=None if s.get("scored_logprobs") is None
                else tuple(float(x) for x in s["scored_logprobs"]),
            )
            for s in data["samples"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable cache entry counts as absent


def _save_samples(path: Path, samples: Sequence[Sample]) -> None:
    """Write atomically (`valuation.files`)."""
    payload = {"format": SAMPLES_FORMAT, "samples": [asdict(s) | {"token_ids": list(s.token_ids)} for s in samples]}
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False))


def sample_statistics(samples: Sequence[Sample]) -> dict[str, float]:
    """Degeneracy diagnostics of a set of samples (used to measure the ``sum`` overshoot).

    * ``distinct_token_ratio`` — distinct tokens / tokens per sample, averaged over samples;
    * ``repeated_trigram_share`` — share of token trigrams that repeat an earlier trigram of the same sample;
    * ``base_logprob_per_token`` — Σ log π₀(token) / Σ tokens: how (un)likely the base finds the text;
    * ``mean_tokens`` and ``finished_share`` (ended with a stop token).
    """
    ratios, repeats, tokens = [], [], 0
    base_total = 0.0
    for s in samples:
        ids = s.token_ids
        tokens += len(ids)
        base_total += s.base_logprob
        if ids:
            ratios.append(len(set(ids)) / len(ids))
        grams = [tuple(ids[j : j + 3]) for j in range(len(ids) - 2)]
        if grams:
            repeats.append(1 - len(set(grams)) / len(grams))
    n = max(1, len(samples))
    return {
        "distinct_token_ratio": float(np.mean(ratios)) if ratios else 0.0,
        "repeated_trigram_share": float(np.mean(repeats)) if repeats else 0.0,
        "base_logprob_per_token": base_total / max(1, tokens),
        "mean_tokens": tokens / n,
        "finished_share": sum(s.finished for s in samples) / n,
    }


__all__ = [
    "AdapterSpec",
    "CoalitionSampler",
    "Sample",
    "SamplingParams",
    "combine_next_token_logprobs",
    "crn_uniforms",
    "draw_tokens",
    "inverse_cdf",
    "left_padded",
    "mixture_components",
    "nucleus_probs",
    "prompt_token_ids",
    "sample_composed",
    "sample_mixture",
    "sample_statistics",
    "sampling_log_probs",
    "stop_token_ids",
]
