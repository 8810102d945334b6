"""Fidelity against training budget: does language-model arithmetic approach retraining as DPO converges?

``python -m benchmarks.fidelity_sweep [--out DIR] [--work DIR] [--jobs 4] [--seeds 3]`` (about 55 min on 2 busy
cores with 3 seeds; ``--quick`` is a small two-point smoke run).

Setup (deterministic): the synthetic corpus (`valuation.synth.write_corpus`, seed 1) with ``--pairs`` pairs per
source (24) and ``--eval-pairs`` held-out pairs per objective (200), the four paper sources, the ``tiny`` preset
(pre-trained on that corpus, once, before the workers start). Each budget point (learning rate × epochs) is
trained ``--seeds`` times: replicate s is a run of its own, ``work/<point>/seed<s>/run``, with
``[training] seed = s`` and ``[retrain] seed = s`` (one source order, union retraining — ``--sequential`` adds
the sequential kind — no merge) and otherwise the settings of ``data/configs/synthetic-tiny-paper4.toml`` but
``--batch-size`` (4: more optimiser steps per epoch, so the converged end is reachable in the time):

* `valuation.pipeline.run.run_value` — the arithmetic: 4 per-source adapters trained with that budget;
* `valuation.retraining.run.run_retrain` — every coalition retrained with that budget.

That is exactly replicate s of ``[retrain] seeds`` (replicate i: training seed + i, retrain seed + i, its own
per-source adapters), run as separate jobs so that ``--jobs`` worker processes (spawned, torch on one thread)
can train the replicates side by side. `combine` then puts the replicates' per-pair scores through
`valuation.retraining.fidelity.noise_floor`: retrain vs retrain (the noise floor) beside arithmetic vs retrain of
another seed, 95% bootstrap intervals over eval pairs (``--bootstrap``).

Training convergence is read from the adapters' manifests (``metrics.loss_curve``): per point the mean loss of
each adapter's last epoch and its change from the epoch before (`benchmarks.fidelity_sweep_report`).
Budget = (lr × epochs) / (1e-3 × 2), today's learning rate and epochs = 1.

Writes ``--out/fidelity_sweep.json`` (per point: settings, loss summary, noise-floor figures, wall times, load
averages; the target check at the largest budget) and ``--out/fidelity_sweep.png``
(`benchmarks.fidelity_sweep_report.plot`). Finished run directories are reused (adapters and log-probs are
cached by the pipeline), so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks import fidelity_sweep_report as report
from benchmarks.timing import load_average
from valuation.games.estimators import exact_shapley
from valuation.retraining.fidelity import noise_floor

SOURCES = ("flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat")
TODAY = (1e-3, 2.0)  # data/configs/synthetic-tiny-paper4.toml: learning_rate, epochs
DEFAULT_POINTS = ((1e-3, 1.0), (1e-3, 2.0), (3e-3, 6.0), (1e-2, 2.0), (1e-2, 6.0))  # (learning rate, epochs)
QUICK_POINTS = ((1e-3, 1.0), (1e-2, 4.0))


@dataclass(frozen=True)
class Point:
    """One training budget: DPO learning rate and epochs (every adapter of the point uses them)."""

    learning_rate: float
    epochs: float

    @property
    def budget(self) -> float:
        """(lr × epochs) relative to today's setting (1e-3 × 2 epochs)."""
        return self.learning_rate * self.epochs / (TODAY[0] * TODAY[1])

    @property
    def name(self) -> str:
        return f"lr{self.learning_rate:g}_ep{self.epochs:g}"


def point_config(
    point: Point, corpus: Path, run_dir: Path, *, seed: int, batch_size: int, sequential: bool
) -> str:
    """The valuation config (TOML) of replicate ``seed`` of one point: synthetic-tiny-paper4's settings with
    ``point``'s budget, ``batch_size``, ``[training] seed`` and ``[retrain] seed`` = ``seed``, one order, no
    merge (replicate ``seed`` of ``[retrain] seeds``, see the module docstring)."""
    return f"""name = "fidelity-sweep-{point.name}-seed{seed}"
[data]
corpus = "{corpus}"
sources = {json.dumps(list(SOURCES))}
[model]
base = "tiny"
seed = 0
[training]
learning_rate = {point.learning_rate!r}
epochs = {point.epochs!r}
batch_size = {batch_size}
max_length = 256
beta = 0.1
lora_r = 8
lora_alpha = 16
seed = {seed}
[arithmetic]
weighting = "sum"
[utility]
kind = "preference"
metric = "bt"
objectives = ["helpfulness", "harmlessness"]
[eval]
batch_size = 16
[shapley]
method = "exact"
[retrain]
orders = 1
seed = {seed}
sequential = {str(sequential).lower()}
union = true
merge = "none"
seeds = 1
bootstrap = 0
[output]
dir = "{run_dir}"
"""


def run_replicate(
    point: Point, seed: int, corpus: Path, work: Path, batch_size: int, sequential: bool
) -> dict[str, Any]:
    """Train and score replicate ``seed`` of one point (in a worker process): `run_value` then `run_retrain`
    in ``work/<point>/seed<seed>/run``. Returns the per-pair scores of the arithmetic and of each retrained
    kind (what `noise_floor` resamples), the objectives, the run directory and the wall time."""
    import torch

    from valuation.pipeline.config import load_valuation_config
    from valuation.pipeline.run import run_value
    from valuation.retraining.run import run_retrain

    torch.set_num_threads(1)
    folder = work / point.name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    text = point_config(
        point, corpus, folder / "run", seed=seed, batch_size=batch_size, sequential=sequential
    )
    path.write_text(text, encoding="utf-8")
    config = load_valuation_config(path)
    started = time.perf_counter()
    arithmetic = run_value(config, progress=False, log=lambda _m: None)
    retrained = run_retrain(config, arithmetic=arithmetic, progress=False, log=lambda _m: None)
    return {
        "run_dir": str(folder / "run"),
        "objectives": list(retrained.objectives),
        "scores": {"arithmetic": retrained.arithmetic.pair_scores}
        | {k: retrained.variants[k].pair_scores for k in retrained.variants},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "load_average_after": load_average(),
    }


def combine(point: Point, replicates: list[dict[str, Any]], bootstrap: int) -> dict[str, Any]:
    """One point's row of the sweep's JSON: `valuation.retraining.fidelity.noise_floor` over its replicates
    (seed order) per retrained kind, and the loss summary of every adapter the replicates trained."""
    objectives = replicates[0]["objectives"]
    kinds = [k for k in replicates[0]["scores"] if k != "arithmetic"]
    noise = {
        kind: noise_floor(
            [r["scores"]["arithmetic"] for r in replicates],
            [r["scores"][kind] for r in replicates],
            objectives,
            n_boot=bootstrap,
            seed=0,
        )
        for kind in kinds
    }
    values = {  # exact Shapley values per way, objective and replicate: how far apart the seeds put them
        way: {
            objective: [
                [round(float(v), 6) for v in exact_shapley(r["scores"][way][j].mean(axis=1))]
                for r in replicates
            ]
            for j, objective in enumerate(objectives)
        }
        for way in replicates[0]["scores"]
    }
    return {
        **asdict(point),
        "name": point.name,
        "budget": point.budget,
        "players": list(SOURCES),
        "values": values,
        "wall_time_s": [r["wall_time_s"] for r in replicates],
        "load_average_after": [r["load_average_after"] for r in replicates],
        "loss": report.loss_summary([Path(r["run_dir"]) for r in replicates]),
        "fidelity": report.point_fidelity(noise),
    }


def prepare_base(point: Point, corpus: Path, work: Path, batch_size: int) -> None:
    """Build the base model (the tiny preset pre-trains on the corpus) once, before the workers start: each
    would otherwise pre-train the same model at the same time."""
    from valuation.pipeline.config import load_valuation_config
    from valuation.pipeline.inputs import prepare_inputs

    folder = work / point.name / "seed0"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(
        point_config(point, corpus, folder / "run", seed=0, batch_size=batch_size, sequential=False),
        encoding="utf-8",
    )
    prepare_inputs(load_valuation_config(path), progress=False)


def parse_points(text: str) -> tuple[Point, ...]:
    """``"1e-3:1,1e-2:8"`` → points (learning rate : epochs)."""
    points = []
    for item in text.split(","):
        lr, _, epochs = item.strip().partition(":")
        points.append(Point(float(lr), float(epochs)))
    return tuple(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity_sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/examples/fidelity"), help="where the JSON + PNG go"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("runs/fidelity-sweep"), help="run directories (reused)"
    )
    parser.add_argument("--points", type=parse_points, default=None, help="lr:epochs,... (default: 5 points)")
    parser.add_argument("--pairs", type=int, default=24, help="training pairs per source")
    parser.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs per objective")
    parser.add_argument("--batch-size", type=int, default=4, help="[training] batch_size of every adapter")
    parser.add_argument(
        "--seeds", type=int, default=2, help="replicates per point (>= 2 for the noise floor)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates over eval pairs")
    parser.add_argument("--jobs", type=int, default=1, help="replicates trained in parallel (one core each)")
    parser.add_argument("--sequential", action="store_true", help="also sequential retraining (1 order)")
    parser.add_argument("--quick", action="store_true", help="two points, 12 pairs per source, 60 eval pairs")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: the noise floor compares retraining with itself")
    from valuation.synth import SynthConfig, write_corpus

    points = args.points or tuple(
        Point(lr, ep) for lr, ep in (QUICK_POINTS if args.quick else DEFAULT_POINTS)
    )
    pairs, eval_pairs = (12, 60) if args.quick else (args.pairs, args.eval_pairs)
    work = args.work.resolve()
    corpus = work / f"corpus-{pairs}-{eval_pairs}"
    if not (corpus / "train").is_dir():
        write_corpus(corpus, SynthConfig(seed=1, pairs_per_source=pairs, eval_pairs_per_objective=eval_pairs))
    started = time.perf_counter()
    load_before = load_average()
    prepare_base(points[0], corpus, work, args.batch_size)
    jobs = sorted(
        ((p, s) for p in points for s in range(args.seeds)), key=lambda job: (-job[0].epochs, job[1])
    )
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            (p, s): pool.submit(run_replicate, p, s, corpus, work, args.batch_size, args.sequential)
            for p, s in jobs
        }
        done = {job: f.result() for job, f in futures.items()}
    rows = [
        combine(p, [done[(p, s)] for s in range(args.seeds)], args.bootstrap)
        for p in sorted(points, key=lambda p: (p.budget, p.epochs))
    ]
    sweep = {
        "format": "payoutsim-fidelity-sweep/1",
        "command": "python -m benchmarks.fidelity_sweep "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "setup": {
            "base": "tiny",
            "sources": list(SOURCES),
            "pairs_per_source": pairs,
            "eval_pairs_per_objective": eval_pairs,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "bootstrap": args.bootstrap,
            "orders": 1,
            "retrained": ["sequential", "union"] if args.sequential else ["union"],
            "today": {"learning_rate": TODAY[0], "epochs": TODAY[1]},
            "jobs": args.jobs,
            "cpu_count": os.cpu_count(),
        },
        "wall_time_s": round(time.perf_counter() - started, 1),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "points": rows,
    }
    sweep["target"] = report.target_check(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity_sweep.json").write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    report.plot(sweep, args.out / "fidelity_sweep.png")
    print(report.table(sweep))
    print(f"wrote {args.out / 'fidelity_sweep.json'} and {args.out / 'fidelity_sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
