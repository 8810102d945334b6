"""(b) Coalition evaluation from the log-prob cache vs the forward passes that fill it.

What `payoutsim value` does for the ``preference`` utility: n + 1 forward passes over the eval pairs (the
base and each adapter; `valuation.composition.logprobs`) fill a cache of per-model summed response log-probs; then
every coalition's utility is matrix arithmetic on Δ[n, pairs] (`valuation.pipeline.tables.coalition_table` →
`valuation.composition.arithmetic` + `valuation.coalition_utility.preference.preference_utility`). The floor of the whole valuation is the
forward passes; this part measures how far above it the 2^n coalitions are.

Setup (synthetic, deterministic in ``seed``): ``eval_pairs`` helpfulness eval pairs of the synthetic
corpus (`valuation.synth`); a randomly initialised ``tiny``-preset Llama (`TinyConfig()` sizes, a BPE
tokenizer trained on the eval texts, no pre-training: forward cost does not depend on the weights' values);
``measured_n`` LoRA adapters made by peft (r = 8, α = 16, all linear layers, the training defaults) with
random A and B, so each differs from the base.

Measured (medians over repeats):

* ``forward_passes_s`` at n = ``measured_n``: `valuation.composition.logprobs.score_pairs` for the base and each
  adapter on the chosen + rejected responses of every pair (tokenisation included, as in production), and
  the production cache fill `compute_eval_logprobs` end to end (model loading and cache writes included);
* for n ∈ ``n_sources``: `coalition_table` over `all_coalitions(n)` for the ``accuracy`` and ``bt``
  metrics (``sum`` weighting). At n > ``measured_n`` the forward time is the measured per-model time
  × (n + 1) (flagged ``"extrapolated"``), and the extra sources' log-probs are synthetic (base log-probs +
  Gaussian noise of the measured adapters' spread; the arithmetic's cost does not depend on the values);
* a breakdown of the largest n's time into the production steps (weights, margins matmul, per-pair scores,
  mean + standard error), and a measured candidate for a faster path (one matmul for both metrics, means and
  standard errors from running sums) with its largest difference from production — a proposal, not used
  by `payoutsim value`.

Targets (issue 7): all 65,536 coalitions at n = 16 in ≤ 3 s; ≤ 10 % of the forward-pass time at n = 8.

torch and peft are imported inside `_build_market`: importing them takes ~5 s, which
`python -m benchmarks --help` and the parts that never touch them should not pay.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from benchmarks.timing import Timing, load_average, measure, torch_threads
from valuation.coalition_utility.preference import pair_scores
from valuation.composition.arithmetic import coalition_margins, coalition_weights
from valuation.composition.logprobs import (
    EvalLogProbs,
    EvalSet,
    ResponseLogProbs,
    compute_eval_logprobs,
    score_pairs,
    to_trl_example,
    tokenize_example,
)
from valuation.files import sha256_file
from valuation.games.coalitions import all_coalitions
from valuation.models import TinyConfig
from valuation.models.cache import BaseModelInfo, checksum_weights
from valuation.models.quiet import quiet_libraries
from valuation.models.tiny import build_model, train_tokenizer
from valuation.pipeline.tables import coalition_table
from valuation.synth.generate import SynthConfig, generate_corpus

N_SOURCES = (8, 12, 16)
MEASURED_N = 8
QUICK_MEASURED_N = 2
#: torch threads for the forward passes. On the shared 2-core machine two threads ran 10-35x slower than
#: one whenever other jobs were running (load average 5-6); one thread is the stable floor.
FORWARD_THREADS = 1
EVAL_PAIRS = 1000
MAX_LENGTH = 256  # the training default (`[training] max_length`)
BATCH_SIZE = 8  # the scoring default (`[eval] batch_size`)
METRICS = ("accuracy", "bt")
BETA = 0.1
WEIGHTING = "sum"
TARGET_N16_S = 3.0
TARGET_FRACTION_N8 = 0.10
_BLOCK_ROWS = 4096  # coalitions per block, as in `valuation.coalition_utility.preference.preference_utility`


@dataclass(frozen=True)
class _Adapter:
    """An adapter dir on disk and its weights checksum (fits `valuation.composition.logprobs.AdapterRef`)."""

    path: Path
    sha256: str


def run(
    quick: bool,
    seed: int,
    *,
    repeats: int | None = None,
    n_sources: Sequence[int] = N_SOURCES,
    measured_n: int | None = None,
    eval_pairs: int = EVAL_PAIRS,
    tiny_config: TinyConfig | None = None,
) -> dict[str, Any]:
    """Run part (b); see the module docstring. Tests pass small sizes through the keyword arguments.

    ``quick`` measures the forward passes of the base + ``QUICK_MEASURED_N`` adapters only (every n is then
    extrapolated from the per-model time) and skips the end-to-end cache fill. ``repeats`` (default 1 quick
    / 3 full for forward passes, 3 / 5 for coalition tables) sets both.
    """
    if measured_n is None:
        measured_n = QUICK_MEASURED_N if quick else MEASURED_N
    fwd_repeats = repeats or (1 if quick else 3)
    table_repeats = repeats or (3 if quick else 5)
    config = tiny_config or TinyConfig()
    started_load = load_average()
    with tempfile.TemporaryDirectory(prefix="payoutsim-bench-b-") as tmp:
        market = _build_market(Path(tmp), measured_n, eval_pairs=eval_pairs, seed=seed, config=config)
        with torch_threads(FORWARD_THREADS):
            forward = _measure_forward(market, fwd_repeats, fill=not quick)
    per_model_s = forward["forward_passes"]["median_s"] / (measured_n + 1)
    results, rows, tables_by_n = _time_tables(
        forward, market.sources, n_sources, measured_n, eval_pairs, seed, table_repeats, per_model_s
    )
    largest = max(n_sources)
    breakdown = _breakdown(*tables_by_n[largest], table_repeats)
    targets = _targets(results, largest)
    load_end = load_average()
    return {
        "title": "coalition evaluation from the log-prob cache (production path: pipeline.coalition_table)",
        "params": {
            "quick": quick, "seed": seed, "eval_pairs": eval_pairs, "measured_n": measured_n,
            "n_sources": list(n_sources), "metrics": list(METRICS), "weighting": WEIGHTING, "beta": BETA,
            "max_length": MAX_LENGTH, "batch_size": BATCH_SIZE, "tiny_config": _asdict(config),
            "forward_repeats": fwd_repeats, "table_repeats": table_repeats,
        },
        "load_average_start": started_load,
        "load_average_end": load_end,
        "forward": {k: v for k, v in forward.items() if k != "table"},
        "per_model_pass_s": round(per_model_s, 6),
        "results": results,
        "breakdown_largest_n": breakdown,
        "tables": [
            {
                "title": f"all 2^n coalitions' preference utilities on {eval_pairs} eval pairs (median s)",
                "columns": ["n", "coalitions", "accuracy s", "bt s", "both s", "n+1 forward passes s",
                            "forward", "both / forward"],
                "rows": rows,
            },
            {
                "title": f"where the time goes at n = {largest} (median s per full table)",
                "columns": ["step", "accuracy s", "bt s"],
                "rows": [[step, breakdown["accuracy"][step], breakdown["bt"][step]] for step in breakdown["steps"]],
            },
        ],
        "targets": targets,
        "notes": _notes(config, fwd_repeats, per_model_s, eval_pairs, forward, largest, breakdown),
    }


def _time_tables(
    forward: dict[str, Any],
    sources: list[str],
    n_sources: Sequence[int],
    measured_n: int,
    eval_pairs: int,
    seed: int,
    repeats: int,
    per_model_s: float,
) -> tuple[list[dict[str, Any]], list[list[Any]], dict[int, tuple[dict[str, EvalLogProbs], list[str]]]]:
    """Per n: the log-prob tables (`_tables_for`), the median time of every coalition's utility per metric
    and its fraction of the n + 1 forward passes (measured at ``measured_n``, else per-model time × (n + 1)).

    Returns (the report's per-n results, the summary table's rows, each n's tables and source names)."""
    rng = np.random.default_rng(seed)
    tables_by_n = {}
    rows = []
    results = []
    for n in n_sources:
        tables, names = _tables_for(forward["table"], sources, n, rng)
        tables_by_n[n] = (tables, names)
        times = {m: _time_coalition_table(tables, names, n, m, repeats) for m in METRICS}
        measured = n <= measured_n
        forward_s = forward["forward_passes"]["median_s"] if n == measured_n else per_model_s * (n + 1)
        both = sum(t.median_s for t in times.values())
        entry = {
            "n_sources": n,
            "n_coalitions": 2**n,
            "eval_pairs": eval_pairs,
            "coalitions_s": {m: t.as_dict() for m, t in times.items()},
            "coalitions_both_metrics_s": round(both, 6),
            "forward_passes_s": round(forward_s, 6),
            "forward_passes": "measured" if n == measured_n else "extrapolated: per-model time × (n + 1)",
            "log_probs": "measured" if measured else f"{measured_n} measured + {n - measured_n} synthetic sources",
            "fraction_of_forward": {m: round(t.median_s / forward_s, 6) for m, t in times.items()},
        }
        results.append(entry)
        rows.append([
            n, 2**n, times["accuracy"].median_s, times["bt"].median_s, both, forward_s,
            entry["forward_passes"].split(":")[0], both / forward_s,
        ])
    return results, rows, tables_by_n


def _notes(
    config: TinyConfig,
    fwd_repeats: int,
    per_model_s: float,
    eval_pairs: int,
    forward: dict[str, Any],
    largest: int,
    breakdown: dict[str, Any],
) -> list[str]:
    """The forward passes' setting and times, and the candidate fast path against production."""
    return [
        f"forward passes: tiny Llama (hidden {config.hidden_size}, {config.num_layers} layers, vocab "
        f"{config.vocab_size}) + LoRA r=8; {fwd_repeats} repeat(s); per model {per_model_s:.3f} s for "
        f"{2 * eval_pairs} responses, torch threads {FORWARD_THREADS}; production cache fill incl. loading: "
        + (f"{forward['fill_cache']['median_s']:.3f} s" if forward["fill_cache"] else "skipped (quick)")
        + f"; tokenisation alone {forward['tokenize_s']:.3f} s per model (score_pairs re-tokenises for "
        "every model)",
        f"candidate fast path at n = {largest} (both metrics, one matmul, sums instead of std): "
        f"{breakdown['candidate_both_s']:.3f} s vs production {breakdown['production_both_s']:.3f} s, "
        f"max |Δ| vs production {breakdown['candidate_max_abs_diff']:.2e}",
    ]


# ---------------------------------------------------------------------------------------------------
# the synthetic market: eval pairs, a random tiny Llama, random LoRA adapters


@dataclass
class _Market:
    base: BaseModelInfo
    adapters: dict[str, _Adapter]
    eval_set: EvalSet
    model: Any  # the in-memory PeftModel holding every adapter
    tokenizer: Any

    @property
    def sources(self) -> list[str]:
        return list(self.adapters)


def _build_market(work: Path, n: int, *, eval_pairs: int, seed: int, config: TinyConfig) -> _Market:
    """Eval pairs, a random tiny base saved to ``work/base`` and ``n`` random adapters saved to
    ``work/adapters/<source>``; also returns the in-memory peft model with every adapter loaded."""
    import torch
    from peft import LoraConfig, get_peft_model

    corpus = generate_corpus(
        SynthConfig(seed=seed, pairs_per_source=1, eval_pairs_per_objective=eval_pairs, adversarial=())
    )
    pairs = list(corpus.eval["helpfulness"])
    texts = [t for p in pairs for t in (p.prompt, p.chosen, p.rejected)]
    data_hash = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()
    eval_set = EvalSet("helpfulness", pairs, data_hash)

    with quiet_libraries():
        tokenizer = train_tokenizer(texts, config.vocab_size)
        model = build_model(tokenizer, config, seed)
        base_dir = work / "base"
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        base = BaseModelInfo("bench-tiny", base_dir, checksum_weights(base_dir)[0], None)

        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        sources = [f"s{i:02d}" for i in range(n)]
        peft_model = get_peft_model(model, lora, adapter_name=sources[0])
        for source in sources[1:]:
            peft_model.add_adapter(source, lora)
        adapters: dict[str, _Adapter] = {}
        for i, source in enumerate(sources):
            gen = torch.Generator().manual_seed(seed * 1_000 + i)
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if f".{source}." in name and ("lora_A" in name or "lora_B" in name):
                        param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            peft_model.save_pretrained(work / "adapters", selected_adapters=[source])
            path = _adapter_dir(work / "adapters", source)
            adapters[source] = _Adapter(path, sha256_file(path / "adapter_model.safetensors"))
    peft_model.eval()
    return _Market(base, adapters, eval_set, peft_model, tokenizer)


def _adapter_dir(root: Path, source: str) -> Path:
    """Where peft saved a named adapter (``root/<name>``; ``root`` itself for peft's ``default``)."""
    nested = root / source
    return nested if (nested / "adapter_model.safetensors").is_file() else root


def _measure_forward(market: _Market, repeats: int, *, fill: bool) -> dict[str, Any]:
    """Median time of the n + 1 scoring passes (in memory) and, with ``fill``, the time of one production
    cache fill from disk (`compute_eval_logprobs`: loading, scoring, writing) and of re-reading it."""
    model, tokenizer, pairs = market.model, market.tokenizer, market.eval_set.pairs
    scored: dict[str | None, Any] = {}

    def passes() -> None:
        with model.disable_adapter():
            scored[None] = score_pairs(model, tokenizer, pairs, max_length=MAX_LENGTH, batch_size=BATCH_SIZE)
        for source in market.sources:
            model.set_adapter(source)
            scored[source] = score_pairs(model, tokenizer, pairs, max_length=MAX_LENGTH, batch_size=BATCH_SIZE)

    with quiet_libraries():
        forward = measure(passes, repeats)
        start = time.perf_counter()
        for pair in pairs:
            tokenize_example(tokenizer, to_trl_example(pair, chat=True), MAX_LENGTH)
        tokenize_s = time.perf_counter() - start

    table = EvalLogProbs("helpfulness", scored[None], {s: scored[s] for s in market.sources})
    out: dict[str, Any] = {"fill_cache": None, "reread_cache_s": None, "in_memory_vs_cache_max_abs_diff": None}
    if fill:
        with tempfile.TemporaryDirectory(prefix="payoutsim-bench-cache-") as cache:

            def fill_cache() -> Any:
                return compute_eval_logprobs(
                    market.base, market.adapters, [market.eval_set], cache_dir=Path(cache),
                    max_length=MAX_LENGTH, batch_size=BATCH_SIZE, progress=False,
                )

            out["fill_cache"] = measure(fill_cache, 1).as_dict()
            out["reread_cache_s"] = round(measure(fill_cache, 1).median_s, 6)  # now all from the cache
            check = fill_cache().tables["helpfulness"].deltas(market.sources)
        out["in_memory_vs_cache_max_abs_diff"] = float(np.max(np.abs(check - table.deltas(market.sources))))
    tokens = scored[None].chosen_tokens.sum() + scored[None].rejected_tokens.sum()
    return {
        "forward_passes": forward.as_dict(),
        "threads": FORWARD_THREADS,
        **out,
        "tokenize_s": round(tokenize_s, 6),
        "response_tokens_per_model": int(tokens),
        "table": table,
    }


# ---------------------------------------------------------------------------------------------------
# coalition tables


def _tables_for(
    measured: EvalLogProbs, sources: list[str], n: int, rng: np.random.Generator
) -> tuple[dict[str, EvalLogProbs], list[str]]:
    """Eval log-prob tables with n sources: the measured ones first, then synthetic ones (see module doc)."""
    models = {s: measured.models[s] for s in sources[:n]}
    base = measured.base
    if n > len(sources):
        ratios = np.stack([measured.models[s].chosen - base.chosen for s in sources])
        spread = float(ratios.std()) or 1.0
        p = len(base)
        for j in range(len(sources), n):
            models[f"s{j:02d}"] = ResponseLogProbs(
                chosen=base.chosen + rng.normal(0.0, spread, p),
                rejected=base.rejected + rng.normal(0.0, spread, p),
                chosen_tokens=base.chosen_tokens,
                rejected_tokens=base.rejected_tokens,
            )
    names = list(models)
    return {"helpfulness": EvalLogProbs("helpfulness", base, models)}, names


def _coalition_table(tables: dict[str, Any], sources: list[str], metric: str) -> Any:
    return coalition_table(
        tables, sources, all_coalitions(len(sources)), weighting=WEIGHTING, sizes=[1] * len(sources),
        metric=metric, beta=BETA,
    )


def _time_coalition_table(tables: dict[str, Any], sources: list[str], n: int, metric: str, repeats: int) -> Timing:
    return measure(lambda: _coalition_table(tables, sources, metric), repeats)


def _breakdown(tables: dict[str, Any], sources: list[str], repeats: int) -> dict[str, Any]:
    """Time of each production step for the full table, per metric, and the candidate fast path."""
    n = len(sources)
    deltas = tables["helpfulness"].deltas(sources)
    steps = ["all_coalitions + weights", "margins (matmul)", "per-pair scores", "mean + std err", "total (sum)"]
    out: dict[str, Any] = {"n_sources": n, "steps": steps}
    weights = coalition_weights(all_coalitions(n), WEIGHTING)
    t_weights = measure(lambda: coalition_weights(all_coalitions(n), WEIGHTING), repeats).median_s
    blocks = [weights[s : s + _BLOCK_ROWS] for s in range(0, weights.shape[0], _BLOCK_ROWS)]
    t_margins = measure(lambda: [coalition_margins(b, deltas) for b in blocks], repeats).median_s
    margins = [coalition_margins(b, deltas) for b in blocks]
    for metric in METRICS:
        t_scores = measure(lambda metric=metric: [pair_scores(m, metric, BETA) for m in margins], repeats).median_s
        scores = [pair_scores(m, metric, BETA) for m in margins]
        t_reduce = measure(lambda scores=scores: [(s.mean(axis=1), s.std(axis=1, ddof=1)) for s in scores],
                           repeats).median_s
        total = t_weights + t_margins + t_scores + t_reduce
        out[metric] = dict(zip(steps, [t_weights, t_margins, t_scores, t_reduce, total], strict=True))
    production = {m: _coalition_table(tables, sources, m) for m in METRICS}
    out["production_both_s"] = sum(
        measure(lambda m=m: _coalition_table(tables, sources, m), repeats).median_s for m in METRICS
    )
    out["candidate_both_s"] = measure(lambda: _candidate_both_metrics(weights, deltas), repeats).median_s
    candidate = _candidate_both_metrics(weights, deltas)
    out["candidate_max_abs_diff"] = float(max(
        np.max(np.abs(candidate[m][0] - production[m].values[:, 0])) for m in METRICS
    ) if n else 0.0)
    out["candidate_max_abs_diff_std_err"] = float(max(
        np.max(np.abs(candidate[m][1] - production[m].std_errs[:, 0])) for m in METRICS
    ) if n else 0.0)
    return out


def _candidate_both_metrics(
    weights: NDArray[np.float64], deltas: NDArray[np.float64]
) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Proposal (not production): ``accuracy`` and ``bt`` utilities with standard errors from ONE matmul per
    block. accuracy: counts of m > 0 and m = 0 give Σx and Σx² (x ∈ {0, ½, 1}); bt: Σσ(βm) and Σσ(βm)²;
    then mean = Σx/p and sd² = (Σx² − p·mean²)/(p − 1) (values lie in [0, 1], so no cancellation issue)."""
    k, p = weights.shape[0], deltas.shape[1]
    sums = {m: (np.zeros(k), np.zeros(k)) for m in METRICS}
    for start in range(0, k, _BLOCK_ROWS):
        margins = weights[start : start + _BLOCK_ROWS] @ deltas
        stop = start + margins.shape[0]
        wins = np.count_nonzero(margins > 0, axis=1)
        ties = np.count_nonzero(margins == 0, axis=1)
        sums["accuracy"][0][start:stop] = wins + 0.5 * ties
        sums["accuracy"][1][start:stop] = wins + 0.25 * ties
        margins *= BETA
        scores = expit(margins, out=margins)
        sums["bt"][0][start:stop] = scores.sum(axis=1)
        sums["bt"][1][start:stop] = np.einsum("ij,ij->i", scores, scores)
    out = {}
    for metric, (s1, s2) in sums.items():
        mean = s1 / p
        var = np.maximum(s2 - p * mean * mean, 0.0) / max(p - 1, 1)
        out[metric] = (mean, np.sqrt(var / p) if p > 1 else np.zeros(k))
    return out


def _targets(results: list[dict[str, Any]], largest: int) -> list[dict[str, Any]]:
    by_n = {r["n_sources"]: r for r in results}
    targets = []
    if 16 in by_n:
        r = by_n[16]
        per_metric = {m: r["coalitions_s"][m]["median_s"] for m in METRICS}
        worst = max(per_metric.values())
        targets.append({
            "name": "n=16: all 65,536 coalitions",
            "target": f"≤ {TARGET_N16_S:g} s",
            "measured": ", ".join(f"{m} {v:.3f} s" for m, v in per_metric.items())
            + f" (both {r['coalitions_both_metrics_s']:.3f} s)",
            "met": bool(worst <= TARGET_N16_S),
        })
    if MEASURED_N in by_n:
        r = by_n[MEASURED_N]
        worst = max(r["fraction_of_forward"].values())
        targets.append({
            "name": f"n={MEASURED_N}: coalitions vs the {MEASURED_N + 1} forward passes",
            "target": f"≤ {TARGET_FRACTION_N8:.0%}",
            "measured": ", ".join(f"{m} {v:.2%}" for m, v in r["fraction_of_forward"].items()),
            "met": bool(worst <= TARGET_FRACTION_N8),
        })
    return targets


def _asdict(config: TinyConfig) -> dict[str, Any]:
    return asdict(config) if is_dataclass(config) else {}
