"""Batched decoding from coalition models π_S: one forward per step for many sequences, common random numbers.

At every decoding step, for each sequence being generated, the base π₀ and every adapter ℓ ∈ S are evaluated
in ONE batched forward (rows ``[base, ℓ₁, …, ℓ_m]`` per sequence, several prompts × samples per batch, see
`valuation.composition.multilora`) with a KV cache, and their next-token log-softmaxes are combined (arXiv 2512.15765):

    log π_S(v | h) = log_softmax_v( log π₀(v|h) + Σ_{ℓ∈S} w_ℓ^S (log π_ℓ(v|h) − log π₀(v|h)) )

renormalised over the vocabulary each step (an approximation of the sequence-level product). Then the
temperature τ (logits / τ, renormalised; τ = 0 is greedy) and top-p (the smallest set of most likely tokens
with mass ≥ p, renormalised) are applied, and the token is drawn by INVERSE CDF in vocabulary order with a
pre-drawn uniform u ∈ [0, 1): the first token v with cdf(v) > u. Those per-step pieces live in
`valuation.decoding.next_token`; this module runs the loop (`sample_composed`: one coalition; `sample_mixture`:
the importance-sampling proposal, a mixture of coalitions). The per-coalition cache of responses is
`valuation.decoding.coalition_responses`.

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

torch and transformers are imported inside functions: importing them costs seconds (measured: ``import torch``
≈ 1.5 s, ``import transformers, peft`` ≈ 4.8 s), and light commands that import this module never decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from valuation.composition.multilora import MultiLoraModel
from valuation.decoding.next_token import (
    combine_next_token_logprobs,
    crn_uniforms,
    draw_tokens,
    sampling_log_probs,
)
from valuation.models.devices import model_device

if TYPE_CHECKING:
    import torch

POOL_STREAM = 1  # CRN stream family of the importance-sampling proposal pool (`sample_mixture`)
PromptLike = str | Sequence[Mapping[str, str]]  # a text prompt or a chat message list


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
# prompts, padding and stop tokens


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
    import torch
    from transformers import DynamicCache

    s, group = len(prompt_ids), 1 + len(adapters)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dev = model_device(model)  # the CPU, or the placement's GPU (valuation.models.devices); .to(cpu) is a no-op
    stop_tensor = torch.tensor(sorted(stop_token_ids(model, tokenizer)), dtype=torch.long).to(dev)
    ids, mask, positions = (t.to(dev) for t in left_padded(prompt_ids, pad, repeat=group))
    route = torch.tensor([-1, *adapters], dtype=torch.long).repeat(s)
    w = torch.tensor(np.asarray(weights), dtype=torch.float32).to(dev)  # [s, m]
    u = torch.from_numpy(uniforms).to(dev)
    scoring = None if score_weights is None else torch.tensor(np.asarray(score_weights), dtype=torch.float32).to(dev)
    record = _ChunkRecord.start(s, scoring, dev)
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
                record.add(token, combined, logps, stop_tensor, params)
                if bool(record.done.all()) or t == params.max_new_tokens - 1:
                    break
                token = torch.where(record.done, torch.full_like(token, pad), token)
                mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=dev)], dim=1)
                last = last + 1
                logits = model(
                    input_ids=token.repeat_interleave(group)[:, None],
                    attention_mask=mask,
                    position_ids=last[:, None],
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1]
    return record.samples(tokenizer, keys)


@dataclass
class _ChunkRecord:
    """What the decoding loop of one chunk accumulates per sequence (s sequences, C scoring coalitions)."""

    generated: list[list[int]]  # the tokens drawn so far, stop token excluded
    logprob: torch.Tensor  # float64 [s]: Σ log π_S(token) of the combined distribution
    base_logprob: torch.Tensor  # float64 [s]: Σ log π₀(token)
    done: torch.Tensor  # bool [s]: a stop token was drawn
    stop_drawn: torch.Tensor  # long [s]: the stop token drawn, −1 while none
    scoring: torch.Tensor | None  # float32 [C, |adapters|]: weights of the C coalitions to score under (or None)
    scored: torch.Tensor | None  # float64 [s, C]: Σ log p_c(token) under their sampling distributions

    @classmethod
    def start(cls, s: int, scoring: torch.Tensor | None, device: torch.device | None = None) -> _ChunkRecord:
        """The empty record of ``s`` sequences on ``device`` (default: the CPU), scored under the coalitions
        of ``scoring`` (None: not scored)."""
        import torch

        return cls(
            generated=[[] for _ in range(s)],
            logprob=torch.zeros(s, dtype=torch.float64, device=device),
            base_logprob=torch.zeros(s, dtype=torch.float64, device=device),
            done=torch.zeros(s, dtype=torch.bool, device=device),
            stop_drawn=torch.full((s,), -1, dtype=torch.long, device=device),
            scoring=scoring,
            scored=None if scoring is None else torch.zeros((s, scoring.shape[0]), dtype=torch.float64, device=device),
        )

    def add(self, token: torch.Tensor, combined: torch.Tensor, logps: torch.Tensor, stop_tensor: torch.Tensor,
            params: SamplingParams) -> None:
        """Record the tokens [s] drawn from ``combined`` [s, V] (the base's log-probs: ``logps[:, 0]``) for the
        sequences still running; a token in ``stop_tensor`` ends its sequence."""
        import torch

        picked = combined.gather(-1, token[:, None]).squeeze(-1).double()
        live = ~self.done
        picked_base = logps[:, 0].gather(-1, token[:, None]).squeeze(-1).double()
        self.logprob += torch.where(live, picked, torch.zeros_like(picked))
        self.base_logprob += torch.where(live, picked_base, torch.zeros_like(picked_base))
        if self.scoring is not None and self.scored is not None:
            lp = sampling_log_probs(logps, self.scoring, token[:, None], params.temperature, params.top_p).double()
            self.scored += torch.where(live[:, None], lp, torch.zeros_like(lp))  # [s, C]
        is_stop = torch.isin(token, stop_tensor)
        self.stop_drawn = torch.where(live & is_stop, token, self.stop_drawn)
        for row in torch.nonzero(live & ~is_stop).flatten().tolist():
            self.generated[row].append(int(token[row]))
        self.done = self.done | is_stop

    def samples(self, tokenizer: Any, keys: list[tuple[int, int]]) -> list[Sample]:
        """One `Sample` per sequence; ``keys[row]`` = its (prompt index, sample index)."""
        scored = self.scored
        return [
            Sample(
                prompt_index=keys[row][0],
                sample_index=keys[row][1],
                token_ids=tuple(self.generated[row]),
                text=tokenizer.decode(self.generated[row], skip_special_tokens=True).strip(),
                logprob=float(self.logprob[row]),
                base_logprob=float(self.base_logprob[row]),
                finished=bool(self.done[row]),
                stop_token=int(self.stop_drawn[row]) if int(self.stop_drawn[row]) >= 0 else None,
                scored_logprobs=None if scored is None else tuple(float(x) for x in scored[row]),
            )
            for row in range(len(self.generated))
        ]


__all__ = [
    "POOL_STREAM",
    "PromptLike",
    "Sample",
    "SamplingParams",
    "left_padded",
    "mixture_components",
    "prompt_token_ids",
    "sample_composed",
    "sample_mixture",
    "stop_token_ids",
]
