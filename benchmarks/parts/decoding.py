"""(c) Batched multi-adapter forward and composed decoding speed.

Setup (deterministic in ``seed``), per preset:

* ``tiny`` — a randomly initialised ``tiny``-preset Llama (`TinyConfig()` sizes) with a BPE tokenizer
  trained on the synthetic corpus's eval texts (no pre-training: the cost of a forward does not depend on
  the weights' values);
* ``smollm2`` — SmolLM2-135M-Instruct from the model cache (``prepare_base_model("smollm2")``, offline),
  skipped with a note when it is not prepared; full runs only (``quick`` measures ``tiny`` alone);
* 4 random LoRA adapters (r = 8, α = 16, every q/k/v/o/gate/up/down projection: the training defaults)
  built in memory: A ~ N(0, 1/in), B ~ N(0, 0.02²), so every adapter changes the output. No training.

Measured (medians over ``repeats``; torch limited to ``THREADS`` thread(s), see below):

1. **forward** — one input batch (``forward_batch`` sequences × ``forward_tokens`` random tokens), |S| = 1..4:
   ONE batched `valuation.composition.multilora.MultiLoraModel` forward with rows ``[base, ℓ₁..ℓ_|S|]`` per sequence vs
   |S| + 1 SEPARATE forwards of the same sequences (the base alone with no LoRA rows, then each adapter alone
   through the same `MultiLoraModel` routed to that one adapter; same kernels, so the difference is the
   batching). Also the largest |log-prob| difference between the two (they must agree to ≤ 1e-4).
2. **sampling** — tokens/s of `valuation.decoding.decoder.sample_composed` from π_S (``mean`` weights, τ = 1,
   top-p = 1) for |S| = 0..4 (0 = the base alone), same prompts (synthetic eval prompts), max_new_tokens and
   seed; tokens/s = generated tokens of π_S / wall seconds of the whole call (prompt encoding, prefill,
   decode steps, combination and drawing). Stop tokens are ignored (the tokenizer's and the generation
   config's EOS hidden for the run, as serving benchmarks do) so every run generates exactly
   max_new_tokens per sequence and the figures compare equal work. Two regimes:
   ``single`` — one prompt per call (latency-bound: 1 + |S| rows per decode step); ``batch`` — all
   ``batch_sequences`` sequences in one call with the production ``max_batch_rows`` = 64.
3. **decode step** — where a single-stream step's time goes: one decode forward (KV cache of
   ``step_context`` tokens, last-position logits only) with 1 row (the base's own step), 1 + |S| rows with
   no LoRA (the FLOOR of exact token-level arithmetic: it needs the base's and each adapter's full
   next-token distribution, i.e. 1 + |S| rows), and 1 + |S| rows with the LoRA deltas; plus the 1 + |S|-row
   prefill with all logits (what `sample_composed` computes now) vs the last position's only.

Target (issue 7): batched forward faster than the separate passes at every |S| ≥ 2; at |S| = 4, sampling
≥ 60 % of the base's tokens/s on SmolLM2 — judged on the single-stream figure (the latency-bound regime in
which batching the 1 + |S| rows can hide their cost; in the production batch the base alone also fills
its 64 rows, so the ratio there tends to 1/(1 + |S|) as the step becomes compute-bound).

Findings (SmolLM2, one thread, see the report for figures): the 1 + |S| rows of a single-stream step cost
more than one row mostly in the BASE matmuls, not in the LoRA deltas: ``F.linear`` with 1-3 rows runs near
the weight-bandwidth time of one row, from 4 rows on it is much slower (all linear layers of a step: 40.7 /
43.8 / 47.4 / 71.3 / 75.2 / 101.3 ms for 1 / 2 / 3 / 4 / 5 / 8 rows), and with it the no-LoRA 5-row step is
≈ 57 % of the base's speed. The production decoder therefore runs the decode steps' matmuls packed
(`valuation.composition.packed`; 61.2 ms for 8 rows, 5 rows padded to 8), which lifts that floor to ≈ 67 %; the LoRA
hooks add ≈ 9-13 ms per step and the 5-row prefill ≈ 13 ms per generated token at 32 new tokens, which
leaves single-stream sampling at 55-57 %. ``benchmarks/bench_fused_decoding.py`` also fuses the LoRA A
factors into the packed matmul (an experiment): 58 %.

Threads: ``THREADS`` = 1 by default, as part (b): on the shared 2-core machines torch with two threads
ran 10-35x slower whenever other jobs were running; the load average is recorded at the start and end.

The models are set up in `benchmarks.parts.decoding_setup`, the report's tables, targets and notes are built
in `benchmarks.parts.decoding_report`. torch and transformers are imported inside the functions: importing
them takes ~5 s, which `python -m benchmarks --help` and the parts that never touch them should not pay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.parts import decoding_report as report
from benchmarks.parts.decoding_setup import (
    B_STD,
    LORA_ALPHA,
    LORA_RANK,
    LORA_TARGETS,
    N_ADAPTERS,
    PRESETS,
    Setup,
    load_setup,
)
from benchmarks.timing import Timing, interleaved, load_average, torch_threads
from valuation.decoding.decoder import SamplingParams, sample_composed

QUICK_PRESETS = ("tiny",)
SIZES = (1, 2, 3, 4)
THREADS = 1
FORWARD_BATCH = 2
FORWARD_TOKENS = 32
MAX_NEW_TOKENS = 32
QUICK_MAX_NEW_TOKENS = 16
SINGLE_PROMPTS = 2
QUICK_SINGLE_PROMPTS = 1
BATCH_PROMPTS = 6
SAMPLES_PER_PROMPT = 2
MAX_BATCH_ROWS = 64  # the production `[sampling] max_batch_rows`
STEP_CONTEXT = 48
LOGPROB_TOLERANCE = 1e-4
STEPS_PER_CALL = 8


def run(
    quick: bool,
    seed: int,
    *,
    repeats: int | None = None,
    presets: Sequence[str] | None = None,
    sizes: Sequence[int] = SIZES,
    tiny_config: Any = None,
    forward_batch: int = FORWARD_BATCH,
    forward_tokens: int = FORWARD_TOKENS,
    max_new_tokens: int | None = None,
    single_prompts: int | None = None,
    batch_prompts: int = BATCH_PROMPTS,
    samples_per_prompt: int = SAMPLES_PER_PROMPT,
    step_context: int = STEP_CONTEXT,
    threads: int = THREADS,
) -> dict[str, Any]:
    """Run part (c); see the module docstring. Tests pass small sizes through the keyword arguments.

    ``quick``: the ``tiny`` preset only, fewer new tokens and one single-stream prompt; ``repeats`` default
    1 quick / 3 full.
    """
    repeats = repeats or (1 if quick else 3)
    presets = list(presets) if presets is not None else list(QUICK_PRESETS if quick else PRESETS)
    max_new_tokens = max_new_tokens or (QUICK_MAX_NEW_TOKENS if quick else MAX_NEW_TOKENS)
    single_prompts = single_prompts or (QUICK_SINGLE_PROMPTS if quick else SINGLE_PROMPTS)
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > N_ADAPTERS:
        raise ValueError(f"sizes must lie in 1..{N_ADAPTERS}")
    plan = DecodingPlan(
        quick, seed, repeats, presets, sizes, threads, forward_batch, forward_tokens, max_new_tokens,
        single_prompts, batch_prompts, samples_per_prompt, step_context,
    )
    load_start = load_average()
    per_preset, skipped = _measure_presets(plan, tiny_config)
    params = plan.params()
    load_end = load_average()
    return {
        "title": "batched multi-adapter forward (valuation.composition.multilora) and composed decoding (sample_composed)",
        "params": params,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "presets": per_preset,
        "skipped": skipped,
        "tables": report.tables(per_preset),
        "targets": report.targets(per_preset, sizes),
        "notes": report.notes(per_preset, skipped, params, load_start, load_end),
    }


@dataclass(frozen=True)
class DecodingPlan:
    """One run's settings with the defaults resolved; `params` is what the report records of them."""

    quick: bool
    seed: int
    repeats: int
    presets: list[str]
    sizes: list[int]
    threads: int
    forward_batch: int
    forward_tokens: int
    max_new_tokens: int
    single_prompts: int
    batch_prompts: int
    samples_per_prompt: int
    step_context: int

    def params(self) -> dict[str, Any]:
        """The report's ``params``: these settings plus the fixed LoRA, batching and sampling settings."""
        return {
            "quick": self.quick,
            "seed": self.seed,
            "repeats": self.repeats,
            "presets": self.presets,
            "sizes": self.sizes,
            "threads": self.threads,
            "lora": {
                "r": LORA_RANK,
                "alpha": LORA_ALPHA,
                "targets": list(LORA_TARGETS),
                "a_std": "1/sqrt(in)",
                "b_std": B_STD,
                "adapters": N_ADAPTERS,
            },
            "forward_batch": self.forward_batch,
            "forward_tokens": self.forward_tokens,
            "max_new_tokens": self.max_new_tokens,
            "single_prompts": self.single_prompts,
            "batch_prompts": self.batch_prompts,
            "samples_per_prompt": self.samples_per_prompt,
            "max_batch_rows": MAX_BATCH_ROWS,
            "step_context": self.step_context,
            "weighting": "mean",
            "temperature": 1.0,
            "top_p": 1.0,
            "stop_tokens": "ignored (every sequence generates max_new_tokens)",
        }


def _measure_presets(plan: DecodingPlan, tiny_config: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The three measurements per preset (torch on ``plan.threads`` threads), and the presets skipped with
    the reason (SmolLM2 not prepared)."""
    per_preset: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    with torch_threads(plan.threads):
        for name in plan.presets:
            setup = load_setup(name, plan.seed, tiny_config, prompts=max(plan.single_prompts, plan.batch_prompts))
            if isinstance(setup, str):
                skipped[name] = setup
                continue
            try:
                per_preset[name] = {
                    "model": setup.describe,
                    "forward": _measure_forward(
                        setup, plan.sizes, plan.forward_batch, plan.forward_tokens, plan.repeats, plan.seed
                    ),
                    "sampling": measure_sampling(
                        setup,
                        plan.sizes,
                        plan.max_new_tokens,
                        plan.single_prompts,
                        plan.batch_prompts,
                        plan.samples_per_prompt,
                        plan.repeats,
                        plan.seed,
                    ),
                    "decode_step": measure_steps(setup, plan.sizes, plan.step_context, plan.repeats, plan.seed),
                }
            finally:
                setup.multi.close()
    return per_preset, skipped


# ---------------------------------------------------------------------------------------------------
# 1. one batched forward vs |S| + 1 separate passes


def _measure_forward(
    setup: Setup, sizes: Sequence[int], batch: int, tokens: int, repeats: int, seed: int
) -> list[dict[str, Any]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, setup.model.config.vocab_size, (batch, tokens), generator=gen)
    model, multi = setup.model, setup.multi
    fns: dict[tuple[str, int], Callable[[], object]] = {}
    checks: dict[int, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    for k in sizes:
        route = [-1, *range(k)]
        batched_ids = ids.repeat_interleave(len(route), dim=0)

        def batched(route: list[int] = route, batched_ids: torch.Tensor = batched_ids) -> torch.Tensor:
            with torch.inference_mode(), multi.routing(route * batch):
                return model(input_ids=batched_ids).logits

        def separate(route: list[int] = route) -> list[torch.Tensor]:
            out = []
            with torch.inference_mode():
                for a in route:
                    with multi.routing([a] * batch):
                        out.append(model(input_ids=ids).logits)
            return out

        fns["batched", k], fns["separate", k] = batched, separate
        checks[k] = (batched, separate)
    timings = interleaved(fns, repeats)
    results = []
    for k in sizes:
        batched, separate = checks[k]
        t_batched, t_separate = timings["batched", k], timings["separate", k]
        together = torch.log_softmax(batched().float(), -1).view(batch, k + 1, tokens, -1)
        apart = torch.stack([torch.log_softmax(x.float(), -1) for x in separate()], dim=1)
        diff = float((together - apart).abs().max())
        effect = float((apart[:, 1:] - apart[:, :1]).abs().max())  # the adapters really change the output
        results.append(
            {
                "size": k,
                "rows": batch * (k + 1),
                "tokens_per_row": tokens,
                "batched_s": t_batched.as_dict(),
                "separate_s": t_separate.as_dict(),
                "speedup": round(t_separate.median_s / t_batched.median_s, 4),
                "max_abs_logprob_diff": diff,
                "max_adapter_effect": effect,
            }
        )
    return results


# ---------------------------------------------------------------------------------------------------
# 2. tokens/s of sample_composed


class IgnoreStops:
    """A tokenizer view with no EOS token (everything else delegated), so decoding runs to max_new_tokens."""

    eos_token_id = None
    eos_token = None

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)


@contextlib.contextmanager
def no_generation_eos(model: Any) -> Iterator[None]:
    config = model.generation_config
    before = config.eos_token_id
    config.eos_token_id = None
    try:
        yield
    finally:
        config.eos_token_id = before


def measure_sampling(
    setup: Setup,
    sizes: Sequence[int],
    max_new_tokens: int,
    single_prompts: int,
    batch_prompts: int,
    samples_per_prompt: int,
    repeats: int,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """Tokens/s of `sample_composed` through ``setup.multi`` for |S| = 0 and ``sizes``, in the ``single`` and
    ``batch`` regimes (module docstring, measurement 2); ratios to |S| = 0 of the same regime."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, seed=seed)
    tokenizer = IgnoreStops(setup.tokenizer)

    def call(prompts: list[str], indices: list[int], members: list[int], spp: int) -> int:
        weights = [1.0 / len(members)] * len(members) if members else []  # `mean`, the sampling default
        samples = sample_composed(
            setup.model,
            tokenizer,
            prompts,
            members,
            weights,
            samples_per_prompt=spp,
            params=params,
            multi=setup.multi,
            prompt_indices=indices,
            max_batch_rows=MAX_BATCH_ROWS,
        )
        return sum(len(s.token_ids) for s in samples)

    single = setup.prompts[:single_prompts]
    batch = setup.prompts[:batch_prompts]
    regimes = {"single": len(single), "batch": len(batch) * samples_per_prompt}
    counted: dict[tuple[str, int], int] = {}
    fns: dict[tuple[str, int], Callable[[], object]] = {}
    for k in [0, *sizes]:
        members = list(range(k))

        def one_at_a_time(members: list[int] = members, k: int = k) -> None:
            counted["single", k] = sum(call([p], [i], members, 1) for i, p in enumerate(single))

        def all_at_once(members: list[int] = members, k: int = k) -> None:
            counted["batch", k] = call(batch, list(range(len(batch))), members, samples_per_prompt)

        fns["single", k], fns["batch", k] = one_at_a_time, all_at_once
    with no_generation_eos(setup.model):
        call(single[:1], [0], list(range(max(sizes))), 1)  # one warm-up: first-call costs, allocator
        timings = interleaved(fns, repeats, warmup=False)  # a whole call per run: no per-function warm-up
    out: dict[str, list[dict[str, Any]]] = {"single": [], "batch": []}
    for (regime, k), timing in timings.items():
        out[regime].append(
            {
                "size": k,
                "sequences": regimes[regime],
                "rows_per_step": _rows(regime, regimes[regime], k),
                "generated_tokens": counted[regime, k],
                "seconds": timing.as_dict(),
                "tokens_per_s": round(counted[regime, k] / timing.median_s, 3),
            }
        )
    for rows in out.values():
        base = rows[0]["tokens_per_s"]
        for row in rows:
            row["ratio_to_base"] = round(row["tokens_per_s"] / base, 4) if base else None
    return out


def _rows(regime: str, sequences: int, k: int) -> int:
    """Forward rows of the first decode chunk: 1 + |S| per sequence, at most `MAX_BATCH_ROWS` per chunk."""
    if regime == "single":
        return 1 + k
    per_chunk = max(1, MAX_BATCH_ROWS // (1 + k))
    return min(sequences, per_chunk) * (1 + k)


# ---------------------------------------------------------------------------------------------------
# 3. one decode step: rows without LoRA (the floor) vs with LoRA; prefill logits


def measure_steps(
    setup: Setup, sizes: Sequence[int], context: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Single-stream decode-step times through ``setup.multi`` (module docstring, measurement 3): 1 row,
    1 + |S| rows without and with LoRA for |S| in ``sizes``, and the 1 + max(sizes)-row prefill."""
    import torch
    from transformers import DynamicCache

    model, multi = setup.model, setup.multi
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed + 1)

    def stepper(route: list[int]) -> Callable[[], object]:
        """STEPS_PER_CALL decode steps inside one routing (as in a decode loop), each from the same cache."""
        rows = len(route)
        ids = torch.randint(4, vocab, (rows, context), generator=gen)
        token = torch.randint(4, vocab, (rows, 1), generator=gen)
        cache = DynamicCache()
        with torch.inference_mode(), multi.routing(route):
            model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)

        def steps() -> None:  # decode steps as the decoder runs them (packed matmuls where production packs)
            with torch.inference_mode(), multi.routing(route), multi.decode_steps(rows):
                for _ in range(STEPS_PER_CALL):
                    model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
                    cache.crop(-1)  # back to `context` tokens: every step is the same step

        return steps

    def prefiller(route: list[int], keep: int) -> Callable[[], object]:
        ids = torch.randint(4, vocab, (len(route), context), generator=gen)

        def prefill() -> None:
            with torch.inference_mode(), multi.routing(route):
                model(input_ids=ids, cache=DynamicCache(), use_cache=True, logits_to_keep=keep)

        return prefill

    largest = [-1, *range(max(sizes))]
    fns: dict[tuple[str, int], Callable[[], object]] = {("one_row", 0): stepper([-1])}
    for k in sizes:
        fns["no_lora", k] = stepper([-1] * (1 + k))
        fns["lora", k] = stepper([-1, *range(k)])
    fns["prefill_all", 0] = prefiller(largest, 0)
    fns["prefill_last", 0] = prefiller(largest, 1)
    timings = interleaved(fns, max(3, repeats))  # steps are short: at least 3 interleaved repeats
    per_step = {
        key: Timing(tuple(t / STEPS_PER_CALL for t in timing.runs_s))
        for key, timing in timings.items()
        if not key[0].startswith("prefill")
    }
    one_row = per_step["one_row", 0]
    steps = []
    for k in sizes:
        plain, lora = per_step["no_lora", k], per_step["lora", k]
        steps.append(
            {
                "size": k,
                "rows": 1 + k,
                "no_lora_s": plain.as_dict(),
                "lora_s": lora.as_dict(),
                "lora_overhead_s": round(lora.median_s - plain.median_s, 6),
                "floor_ratio": round(one_row.median_s / plain.median_s, 4),
                "lora_step_ratio": round(one_row.median_s / lora.median_s, 4),
            }
        )
    return {
        "context_tokens": context,
        "one_row_s": one_row.as_dict(),
        "steps": steps,
        "prefill": {
            "rows": len(largest),
            "all_logits_s": timings["prefill_all", 0].as_dict(),
            "last_logits_s": timings["prefill_last", 0].as_dict(),
        },
    }
