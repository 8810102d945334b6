"""Part (a)'s report: its tables, targets and notes, from the per-n results of
`benchmarks.parts.arithmetic_vs_retraining.run` (counts, times, ratios and fidelity per source count n).

Target (issue 7): at n = `TARGET_N` retraining every coalition takes ≥ `TARGET_RATIO` times the wall time of
the arithmetic; the other n are reported only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TARGET_N = 6
TARGET_RATIO = 16.0


def tables(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cost table (a row per n and way), the ratio table (a row per n) and the fidelity table (a row per
    n and objective)."""
    return [cost_table(results), ratio_table(results), fidelity_table(results)]


def cost_table(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per n and way: fine-tunings, source-trainings, optimiser steps, model passes and wall seconds."""
    rows = []
    for r in results:
        n = r["n_sources"]
        for way in ("arithmetic", "retraining"):
            w = r[way]
            rows.append(
                [
                    n,
                    way,
                    w["fine_tunings"],
                    w["source_trainings"],
                    w["optimizer_steps"],
                    w["model_passes_per_eval_set"],
                    w["train_s"],
                    w["score_s"],
                    w["total_s"],
                ]
            )
    return {
        "title": "cost of each way (wall s from the pipeline's phase records; data/base loading excluded)",
        "columns": [
            "n",
            "way",
            "fine-tunings",
            "source-trainings",
            "optimiser steps",
            "model passes / eval set",
            "train s",
            "score s",
            "total s",
        ],
        "rows": rows,
    }


def ratio_table(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per n: retraining / arithmetic for fine-tunings, source-trainings, train, score, total and CPU time."""
    rows = []
    for r in results:
        ra = r["ratios"]
        rows.append(
            [
                r["n_sources"],
                f"{r['arithmetic']['fine_tunings']} vs {r['retraining']['fine_tunings']}",
                ra["fine_tunings"],
                ra["source_trainings"],
                ra["train_time"],
                ra["score_time"],
                ra["time"],
                ra["cpu_time"],
            ]
        )
    return {
        "title": "retraining / arithmetic",
        "columns": [
            "n",
            "fine-tunings",
            "fine-tunings ×",
            "source-trainings ×",
            "train time ×",
            "score time ×",
            "total time ×",
            "CPU time ×",
        ],
        "rows": rows,
    }


def fidelity_table(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per n and objective: Spearman ρ, max |Δφ|, sign agreement, max |φ arith| and utility Pearson r."""
    rows = []
    for r in results:
        for objective, f in r["fidelity"].items():
            rows.append(
                [
                    r["n_sources"],
                    objective,
                    f["shapley_spearman"],
                    f["shapley_max_abs_diff"],
                    f["shapley_sign_agreement"],
                    f["max_abs_value_arithmetic"],
                    f["utility_pearson"],
                ]
            )
    return {
        "title": "Shapley fidelity of the arithmetic values vs the retrained (union) ones",
        "columns": [
            "n",
            "objective",
            "Spearman ρ",
            "max |Δφ|",
            "sign agreement",
            "max |φ arith|",
            "utility Pearson r",
        ],
        "rows": rows,
    }


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The wall-time ratio per n: report only, except at n = `TARGET_N`, where it must reach `TARGET_RATIO`
    (``met`` None when n = `TARGET_N` was not run)."""
    by_n = {r["n_sources"]: r for r in results}
    targets = []
    for n in sorted(by_n):
        if n == TARGET_N:
            continue
        ratio = by_n[n]["ratios"]["time"]
        targets.append(
            {
                "name": f"n={n}: retraining / arithmetic wall time",
                "target": "report only",
                "measured": "n/a" if ratio is None else f"{ratio:.1f}×",
                "met": None,
            }
        )
    if TARGET_N in by_n:
        ratio = by_n[TARGET_N]["ratios"]["time"]
        measured = "n/a" if ratio is None else f"{ratio:.1f}×"
        met: bool | None = ratio is not None and ratio >= TARGET_RATIO
    else:
        run = ", ".join(str(n) for n in sorted(by_n))
        measured, met = f"not run (this run measured n = {run}; --quick skips n = {TARGET_N})", None
    targets.append(
        {
            "name": f"n={TARGET_N}: retraining / arithmetic wall time",
            "target": f"≥ {TARGET_RATIO:g}×",
            "measured": measured,
            "met": met,
        }
    )
    return targets


def notes(
    results: list[dict[str, Any]], pairs: int, evals: int, training: Mapping[str, Any], *, threads: int
) -> list[str]:
    """The settings, what each way and figure means, and per n the times and the load before each way."""
    notes = [
        f"{pairs} pairs per source, {evals} eval pairs per objective, {training['epochs']} epoch(s), batch "
        f"{training['batch_size']}, max length {training['max_length']}, LoRA r={training['lora_r']} "
        f"α={training['lora_alpha']}, β={training['beta']}; torch threads {threads}; each way run once",
        "retraining = the union variant: one fresh adapter per coalition on its sources' shuffled pairs; the "
        "n singletons are the per-source adapters (trained once, counted in both ways)",
        "source-trainings = Σ_S |S| = n·2^(n−1) for retraining vs n: training steps grow with it, fixed "
        "per-fine-tuning costs (loading, trainer set-up, saving) with the fine-tunings",
        "the ways run one after the other, so a change in machine load between them moves the wall-time "
        "ratio; the CPU-time ratio (this process's CPU seconds of each pipeline call, data and base loading "
        "included in both; torch on one thread) is the load-robust cross-check",
        "fidelity: exact Shapley of the arithmetic game vs of the retrained game; with these few pairs and "
        "one epoch the adapters move little (see max |φ arith|), so ranks of near-zero values are noisy",
    ]
    for r in results:
        a, b = r["arithmetic"], r["retraining"]
        notes.append(
            f"n={r['n_sources']}: arithmetic {a['total_s']:.1f} s (train {a['train_s']:.1f}, score "
            f"{a['score_s']:.1f}, coalitions + Shapley {a['coalitions_and_shapley_s']:.2f}); retraining "
            f"{b['total_s']:.1f} s (train {b['train_s']:.1f}, score {b['score_s']:.1f}); 1-min load average "
            f"{_load1(r['load_average']['arithmetic_start'])} before the arithmetic, "
            f"{_load1(r['load_average']['retraining_start'])} before the retraining, "
            f"{_load1(r['load_average']['end'])} at the end"
        )
    return notes


def _load1(load: list[float] | None) -> str:
    return "n/a" if not load else f"{load[0]:.2f}"
