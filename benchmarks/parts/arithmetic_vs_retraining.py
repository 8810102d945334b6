"""(a) Language-model arithmetic vs retraining every coalition, on the ``tiny`` preset, in one run.

What is compared (issue 7, 1a), for n ∈ ``n_sources`` (4 and 6; 4 only with ``quick``):

* **arithmetic** (`payoutsim value`, `valuation.pipeline.run.run_value`): n LoRA-DPO fine-tunings (one adapter
  per source), n + 1 scoring passes over the eval sets (the base and each adapter), then all 2^n coalitions'
  ``preference`` utilities from the log-prob cache and exact Shapley values;
* **retraining** (`payoutsim value --mode retrain`, `valuation.retraining.run.run_retrain`, the ``union`` variant
  only): one fine-tuning per non-empty coalition S on the shuffled union of its sources' pairs — 2^n − 1 in
  all, of which the n singletons ARE the per-source adapters (trained once, counted in both ways) — then one
  scoring pass per retrained model and exact Shapley values of the retrained game.

Counted and measured per n:

* fine-tunings: n vs 2^n − 1; *source-trainings* (fine-tunings weighted by how many sources' data each one
  trains on): n vs Σ_S |S| = n·2^(n−1); optimiser steps and pairs trained, read from the adapters' manifests;
* wall time of each way, from the pipeline's own phase records (``ValuationRun.timings`` and the retraining
  run's ``fidelity.json`` ``timings``/``cost``; perf_counter inside the pipeline):

  - arithmetic = ``train_s`` (n fine-tunings) + ``score_s`` (n + 1 scoring passes) + ``value_s`` (every
    coalition from the cache + Shapley);
  - retraining = ``train_s`` (the n singletons) + ``retrain_train_s`` (the 2^n − 1 − n union fine-tunings)
    + ``score_s`` (base + singletons) + the union variant's ``score_wall_time_s`` (scoring the retrained
    models, tabulating the game);

  loading the data and the base model (``prepare_s``) is common to both ways and left out of both, and the
  training libraries are imported before the first way starts (a one-off ~4 s);
* their ratio retraining / arithmetic (the target: ≥ 16× at n = 6); as a load-robust cross-check also the
  ratio of this process's CPU seconds spent in each way's pipeline calls (``cpu_s``: torch runs on one
  thread, so other jobs on the machine barely change it, while they do stretch wall time);
* Shapley fidelity of the arithmetic values against the retrained ones, per objective
  (`valuation.retraining.fidelity.shapley_fidelity`: Spearman ρ, max |φ_arith − φ_retrain|, sign agreement; plus the
  utility Pearson r over the coalitions).

Setup (deterministic in ``seed``): a synthetic corpus (`valuation.synth.write_corpus`) with the 4 paper
sources and the ``noisy`` and ``harmful`` adversarial sources, ``pairs_per_source`` pairs each and
``eval_pairs`` held-out pairs per objective; n = 4 values the paper sources, n = 6 adds the two adversarial
ones. The base model is the default ``tiny`` preset from the model cache (``$PAYOUTSIM_CACHE``; built once
if missing, not timed). Each n gets its own run directory (nothing is reused between n), all inside a
``tempfile.TemporaryDirectory``. Torch runs on ``THREADS`` thread(s) for both ways (see `coalition_eval`).

The report's tables, targets and notes are built in `benchmarks.parts.arithmetic_vs_retraining_report`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.parts import arithmetic_vs_retraining_report as report
from benchmarks.timing import load_average, torch_threads
from valuation.pipeline.config import ValuationConfig, load_valuation_config
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.run import run_value
from valuation.retraining.run import RetrainRun, run_retrain
from valuation.synth import SynthConfig, write_corpus

N_SOURCES = (4, 6)
QUICK_N_SOURCES = (4,)
#: Sources in the order they join: the 4 paper sources, then two adversarial ones.
SOURCES = ("flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat", "noisy", "harmful")
OBJECTIVES = ("helpfulness", "harmlessness")
#: Sizes (measured on the 2-core machine, one torch thread, load ~1-2): a fine-tuning costs ~0.65 s fixed
#: (load, trainer set-up, save) + ~0.2 s per optimiser step of 8 pairs; at 64 pairs per source (8 steps)
#: training dominates, so the time ratio approaches the source-trainings ratio n·2^(n−1) / n. A full run
#: took 13 min at load 2.4-3.9 (n = 6 ratio 33×; ~8 min expected on a quiet machine), ``quick`` ~45 s.
PAIRS_PER_SOURCE = 64
QUICK_PAIRS_PER_SOURCE = 32
EVAL_PAIRS = 64
QUICK_EVAL_PAIRS = 32
#: ``[training]`` of both ways: the paper's LoRA/DPO settings, the tiny preset's lr, one epoch, short rows.
TRAINING: dict[str, Any] = {
    "learning_rate": 1e-3,
    "epochs": 1,
    "batch_size": 8,
    "max_length": 128,
    "beta": 0.1,
    "lora_r": 8,
    "lora_alpha": 16,
    "seed": 0,
}
EVAL_BATCH_SIZE = 16
THREADS = 1
#: What the part keeps of `valuation.retraining.fidelity.fidelity_metrics` per objective.
FIDELITY_KEYS = (
    "shapley_spearman",
    "shapley_max_abs_diff",
    "shapley_sign_agreement",
    "utility_pearson",
    "utility_pearson_multi",
    "utility_max_abs_diff",
)




def run(
    quick: bool,
    seed: int,
    *,
    repeats: int | None = None,
    n_sources: Sequence[int] | None = None,
    pairs_per_source: int | None = None,
    eval_pairs: int | None = None,
    training: Mapping[str, Any] | None = None,
    tiny: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run part (a); see the module docstring. Tests pass small sizes through the keyword arguments.

    Args:
        quick: n = 4 only, ``QUICK_PAIRS_PER_SOURCE`` pairs per source, ``QUICK_EVAL_PAIRS`` eval pairs.
        seed: seeds the corpus, the fine-tunings and the union shuffles.
        repeats: accepted for the runner's contract and recorded; each way runs ONCE (retraining
            is the expensive side; a rerun in the same run dir would only find cached adapters).
        n_sources: source counts to compare (each ≤ 6); default 4 and 6 (4 with ``quick``).
        pairs_per_source / eval_pairs: corpus sizes (default per ``quick``).
        training: ``[training]`` overrides (default `TRAINING`).
        tiny: a ``[model.tiny]`` table (`valuation.models.TinyConfig` fields); default: the preset's own.
        cache_dir: model cache root; default ``$PAYOUTSIM_CACHE`` (else ``~/.cache/payoutsim``).
        progress: the pipeline's rich progress bars on stderr; default: when stderr is a terminal.
    """
    sizes = tuple(n_sources) if n_sources is not None else (QUICK_N_SOURCES if quick else N_SOURCES)
    if not sizes or any(not 1 <= n <= len(SOURCES) for n in sizes):
        raise ValueError(f"n_sources must be between 1 and {len(SOURCES)}, got {list(sizes)}")
    pairs = pairs_per_source or (QUICK_PAIRS_PER_SOURCE if quick else PAIRS_PER_SOURCE)
    evals = eval_pairs or (QUICK_EVAL_PAIRS if quick else EVAL_PAIRS)
    train_cfg = {**TRAINING, "seed": seed, **dict(training or {})}
    show = sys.stderr.isatty() if progress is None else progress
    load_start = load_average()
    results = _compare_sizes(
        sizes, seed=seed, pairs=pairs, evals=evals, training=train_cfg, tiny=tiny, cache_dir=cache_dir, progress=show
    )
    return {
        "title": "language-model arithmetic (n fine-tunings) vs retraining every coalition (2^n − 1), tiny preset",
        "params": {
            "quick": quick,
            "seed": seed,
            "repeats": 1,
            "repeats_requested": repeats,
            "n_sources": list(sizes),
            "sources": list(SOURCES[: max(sizes)]),
            "pairs_per_source": pairs,
            "eval_pairs_per_objective": evals,
            "objectives": list(OBJECTIVES),
            "training": train_cfg,
            "eval_batch_size": EVAL_BATCH_SIZE,
            "tiny": dict(tiny) if tiny else "preset default",
            "retrain_variant": "union",
            "utility": "preference (bt)",
            "weighting": "sum",
            "torch_threads": THREADS,
        },
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "results": results,
        "tables": report.tables(results),
        "targets": report.targets(results),
        "notes": report.notes(results, pairs, evals, train_cfg, threads=THREADS),
    }


def _compare_sizes(
    sizes: Sequence[int],
    *,
    seed: int,
    pairs: int,
    evals: int,
    training: Mapping[str, Any],
    tiny: Mapping[str, Any] | None,
    cache_dir: Path | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """One corpus for every n, then per n its own config and run dir and both ways side by side (`_compare`),
    all inside one temporary directory, torch on `THREADS` thread(s)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="payoutsim-bench-a-") as tmp:
        work = Path(tmp)
        corpus = _write_corpus(work / "corpus", seed=seed, pairs=pairs, evals=evals)
        _import_training_libraries()  # one-off import cost, not charged to whichever way runs first
        with torch_threads(THREADS):
            for n in sizes:
                path = _write_config(
                    work / f"n{n}",
                    corpus,
                    SOURCES[:n],
                    seed=seed,
                    training=training,
                    tiny=tiny,
                    cache_dir=cache_dir,
                )
                results.append(_compare(path, n, progress=progress))
    return results


# ---------------------------------------------------------------------------------------------------
# setup


def _write_corpus(folder: Path, *, seed: int, pairs: int, evals: int) -> Path:
    adversarial = tuple(s for s in SOURCES if s in ("noisy", "duplicate", "harmful"))
    paper = tuple(s for s in SOURCES if s not in adversarial)
    write_corpus(
        folder,
        SynthConfig(
            seed=seed,
            pairs_per_source=pairs,
            eval_pairs_per_objective=evals,
            sources=paper,
            adversarial=adversarial,
        ),
    )
    return folder


def _write_config(
    folder: Path,
    corpus: Path,
    sources: Sequence[str],
    *,
    seed: int,
    training: Mapping[str, Any],
    tiny: Mapping[str, Any] | None,
    cache_dir: Path | None,
) -> Path:
    """A valuation config for ``--mode both`` (union retraining only) with its own run dir ``folder/run``.

    The data is read as a plain preference folder (``[data] path``) with explicit eval sets, so the base
    model is the default ``tiny`` preset (pre-trained on the default synthetic corpus), not one built for
    this corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    model: dict[str, Any] = {"base": "tiny", "seed": 0}
    if cache_dir is not None:
        model["cache_dir"] = str(Path(cache_dir).resolve())
    lines = [
        'name = "bench-a"',
        "[data]",
        f"path = {json.dumps(str(corpus))}",
        f"sources = {json.dumps(list(sources))}",
        "[model]",
        *(f"{k} = {json.dumps(v)}" for k, v in model.items()),
    ]
    if tiny:
        lines += ["[model.tiny]", *(f"{k} = {json.dumps(v)}" for k, v in tiny.items())]
    lines += [
        "[training]",
        *(f"{k} = {json.dumps(v)}" for k, v in training.items()),
        "[arithmetic]",
        'weighting = "sum"',
        "[utility]",
        'kind = "preference"',
        'metric = "bt"',
        f"objectives = {json.dumps(list(OBJECTIVES))}",
        "[eval]",
        f"batch_size = {EVAL_BATCH_SIZE}",
        *(f"{o} = {json.dumps(str(corpus / 'eval' / f'{o}.jsonl'))}" for o in OBJECTIVES),
        "[shapley]",
        'method = "exact"',
        "[retrain]",
        "orders = 1",
        f"seed = {seed}",
        "sequential = false",
        "union = true",
        'merge = "none"',
        f"max_sources = {max(len(sources), 1)}",
        "[output]",
        'dir = "run"',
    ]
    path = folder / "valuation.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# one n: both ways, side by side


@dataclass(frozen=True)
class BothWays:
    """Both ways run on one config: the pipeline's outcomes, each call's wall and CPU seconds, and the
    1/5/15-minute load averages before each way."""

    arith: ValuationRun
    retrained: RetrainRun
    arith_call_s: float
    arith_cpu_s: float
    retrain_call_s: float
    retrain_cpu_s: float
    load_before: list[float] | None
    load_between: list[float] | None


def _run_both_ways(config: ValuationConfig, *, progress: bool) -> BothWays:
    """`run_value` (the arithmetic), then `run_retrain` on its adapters (union retraining), each timed."""

    def quiet(_message: str) -> None:
        return None

    load_before = load_average()
    started, started_cpu = time.perf_counter(), time.process_time()
    arith = run_value(config, progress=progress, log=quiet)
    arith_call_s, arith_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    load_between = load_average()
    started, started_cpu = time.perf_counter(), time.process_time()
    retrained = run_retrain(config, arithmetic=arith, progress=progress, log=quiet)
    retrain_call_s, retrain_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    return BothWays(
        arith, retrained, arith_call_s, arith_cpu_s, retrain_call_s, retrain_cpu_s, load_before, load_between
    )


def _compare(config_path: Path, n: int, *, progress: bool) -> dict[str, Any]:
    """Run ``--mode both`` (union) for one config; return counts, times, ratio and fidelity."""
    config = load_valuation_config(config_path)
    both = _run_both_ways(config, progress=progress)
    arith, retrained = both.arith, both.retrained
    union_manifests = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((arith.run_dir / "retrain" / "union").glob("*/manifest.json"))
    ]
    source_manifests = [rec.manifest for rec in arith.adapters.values()]
    arithmetic = _arithmetic_cost(n, both, source_manifests)
    retraining = _retraining_cost(n, both, source_manifests, union_manifests)
    players = list(retrained.players)
    return {
        "n_sources": n,
        "sources": players,
        "arithmetic": arithmetic,
        "retraining": retraining,
        "ratios": {
            "fine_tunings": round(retraining["fine_tunings"] / n, 3),
            "source_trainings": round(retraining["source_trainings"] / n, 3),
            "time": _ratio(retraining["total_s"], arithmetic["total_s"]),
            "cpu_time": _ratio(retraining["cpu_s"], arithmetic["cpu_s"]),
            "train_time": _ratio(retraining["train_s"], arithmetic["train_s"]),
            "score_time": _ratio(retraining["score_s"], arithmetic["score_s"]),
        },
        "fidelity": _fidelity(retrained),
        "values": _values(retrained, players),
        "load_average": {
            "arithmetic_start": both.load_before,
            "retraining_start": both.load_between,
            "end": load_average(),
        },
    }


def _arithmetic_cost(n: int, both: BothWays, source_manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The arithmetic's counts (n fine-tunings, n + 1 passes) and times from the pipeline's phase records:
    total = train + score + value (every coalition + Shapley)."""
    t = both.arith.timings
    cost = both.retrained.fidelity["cost"]
    return {
        "fine_tunings": n,
        "source_trainings": n,
        "pairs_trained": sum(int(m.get("n_pairs", 0)) for m in source_manifests),
        "optimizer_steps": sum(int(m.get("metrics", {}).get("steps", 0)) for m in source_manifests),
        "model_passes_per_eval_set": n + 1,
        "train_s": t["train_s"],
        "score_s": t["score_s"],
        "coalitions_and_shapley_s": t["value_s"],
        "total_s": round(t["train_s"] + t["score_s"] + t["value_s"], 3),
        "fine_tuning_wall_s": cost["arithmetic"]["train_wall_time_s"],
        "pipeline_call_s": round(both.arith_call_s, 3),
        "cpu_s": round(both.arith_cpu_s, 3),
        "prepare_s_not_counted": t["prepare_s"],
    }


def _retraining_cost(
    n: int, both: BothWays, source_manifests: list[dict[str, Any]], union_manifests: list[dict[str, Any]]
) -> dict[str, Any]:
    """Retraining's counts (2^n − 1 fine-tunings, n·2^(n−1) source-trainings; the singletons are the
    arithmetic's adapters) and times: total = the arithmetic's train + score + the union variant's."""
    t = both.arith.timings
    fidelity = both.retrained.fidelity
    cost = fidelity["cost"]
    arith_pairs = sum(int(m.get("n_pairs", 0)) for m in source_manifests)
    arith_steps = sum(int(m.get("metrics", {}).get("steps", 0)) for m in source_manifests)
    union_pairs = sum(int(m.get("n_pairs", 0)) for m in union_manifests)
    union_score_s = float(cost["union"]["score_wall_time_s"])
    union_train_s = float(fidelity["timings"]["retrain_train_s"])
    return {
        "fine_tunings": int(cost["union"]["fine_tunings"]),
        "fine_tunings_trained_for_retraining": len(union_manifests),
        "source_trainings": n * 2 ** (n - 1),
        "pairs_trained": arith_pairs + union_pairs,
        "optimizer_steps": arith_steps + int(cost["union"]["optimizer_steps"]),
        "model_passes_per_eval_set": int(cost["union"]["forward_passes_per_eval_set"]),
        "train_s": round(t["train_s"] + union_train_s, 3),
        "score_s": round(t["score_s"] + union_score_s, 3),
        "total_s": round(t["train_s"] + union_train_s + t["score_s"] + union_score_s, 3),
        "fine_tuning_wall_s": cost["union"]["train_wall_time_s"],
        "retrain_call_s": round(both.retrain_call_s, 3),
        "cpu_s": round(both.arith_cpu_s + both.retrain_cpu_s, 3),
    }


def _fidelity(retrained: RetrainRun) -> dict[str, dict[str, Any]]:
    """Per objective: the union variant's `FIDELITY_KEYS` and the largest |φ| of the arithmetic values."""
    objectives = retrained.fidelity["variants"]["union"]["objectives"]
    return {
        o: {k: objectives[o][k] for k in FIDELITY_KEYS}
        | {"max_abs_value_arithmetic": float(np.abs(retrained.arithmetic_result.values[:, j]).max())}
        for j, o in enumerate(retrained.objectives)
    }


def _values(retrained: RetrainRun, players: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Shapley values per way (arithmetic, retraining), objective and player."""
    return {
        way: {
            o: dict(zip(players, (float(v) for v in result.values[:, j]), strict=True))
            for j, o in enumerate(retrained.objectives)
        }
        for way, result in (
            ("arithmetic", retrained.arithmetic_result),
            ("retraining", retrained.results["union"]),
        )
    }


def _import_training_libraries() -> None:
    """Import what the pipeline imports lazily on its first fine-tuning (trl, peft, datasets)."""
    from datasets import Dataset  # noqa: F401
    from peft import LoraConfig, PeftModel  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None
