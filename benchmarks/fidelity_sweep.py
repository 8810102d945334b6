"""Fidelity against training budget: does language-model arithmetic approach retraining as DPO converges?

``python -m benchmarks.fidelity_sweep [--out DIR] [--work DIR] [--jobs 2]`` (about 45 min on 2 cores with the
defaults; ``--quick`` is a two-point smoke run of a few minutes).

Setup (deterministic): the synthetic corpus (`valuation.synth.write_corpus`, seed 1) with ``--pairs`` pairs per
source and ``--eval-pairs`` held-out pairs per objective, the four paper sources, the ``tiny`` preset from the
model cache. For each budget point (learning rate × epochs; everything else as
``data/configs/synthetic-tiny-paper4.toml``) one run directory under ``--work`` and one valuation config with
``[retrain] seeds = --seeds``, ``orders = 1``, union retraining (``--sequential``: sequential too), no merge; then

* `valuation.pipeline.run.run_value` (the arithmetic: 4 per-source adapters trained with that budget) and
* `valuation.retraining.run.run_retrain` (every coalition retrained with that budget, ``--seeds`` times with
  other seeds, each replicate with its own per-source adapters): ``fidelity.json`` with the noise floor
  (`valuation.retraining.fidelity.noise_floor`: retrain vs retrain beside arithmetic vs retrain, 95% bootstrap
  intervals over eval pairs).

Training convergence is read from the adapters' manifests (``metrics.loss_curve``, logged about four times an
epoch): per point the mean training loss of each adapter's last epoch and its change from the epoch before
(`benchmarks.fidelity_sweep_report.loss_summary`). Budget = (lr × epochs) / (1e-3 × 2), today's setting = 1.

Writes ``--out/fidelity_sweep.json`` (per point: the settings, the loss summary, the noise-floor figures, the
wall time and the load average) and ``--out/fidelity_sweep.png`` (`benchmarks.fidelity_sweep_report.plot`).
Points run in ``--jobs`` worker processes (spawned; torch on one thread each); a finished run directory is
reused (adapters and log-probs are cached by the pipeline), so an interrupted sweep resumes.
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

SOURCES = ("flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat")
TODAY = (1e-3, 2.0)  # data/configs/synthetic-tiny-paper4.toml: learning_rate, epochs
DEFAULT_POINTS = ((1e-3, 1.0), (1e-3, 2.0), (3e-3, 2.0), (1e-2, 2.0), (1e-2, 6.0))  # (learning rate, epochs)
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
    point: Point, corpus: Path, run_dir: Path, *, seeds: int, bootstrap: int, sequential: bool
) -> str:
    """The valuation config (TOML) of one point: synthetic-tiny-paper4's settings with ``point``'s budget."""
    return f"""name = "fidelity-sweep-{point.name}"
[data]
corpus = "{corpus}"
sources = {json.dumps(list(SOURCES))}
[model]
base = "tiny"
seed = 0
[training]
learning_rate = {point.learning_rate!r}
epochs = {point.epochs!r}
batch_size = 16
max_length = 256
beta = 0.1
lora_r = 8
lora_alpha = 16
seed = 0
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
seed = 0
sequential = {str(sequential).lower()}
union = true
merge = "none"
seeds = {seeds}
bootstrap = {bootstrap}
[output]
dir = "{run_dir}"
"""


def run_point(
    point: Point, corpus: Path, work: Path, seeds: int, bootstrap: int, sequential: bool
) -> dict[str, Any]:
    """Train and compare one point (in a worker process); return its row of the sweep's JSON."""
    import torch

    from valuation.pipeline.config import load_valuation_config
    from valuation.pipeline.run import run_value
    from valuation.retraining.run import run_retrain

    torch.set_num_threads(1)
    folder = work / point.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(
        point_config(point, corpus, folder / "run", seeds=seeds, bootstrap=bootstrap, sequential=sequential),
        encoding="utf-8",
    )
    config = load_valuation_config(path)
    started = time.perf_counter()
    arithmetic = run_value(config, progress=False, log=lambda _m: None)
    retrained = run_retrain(config, arithmetic=arithmetic, progress=False, log=lambda _m: None)
    return {
        **asdict(point),
        "name": point.name,
        "budget": point.budget,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "load_average_after": load_average(),
        "loss": report.loss_summary(folder / "run"),
        "fidelity": report.point_fidelity(retrained.fidelity),
    }


def prepare_base(point: Point, corpus: Path, work: Path, seeds: int, bootstrap: int, sequential: bool) -> None:
    """Build the base model (the tiny preset pre-trains on the corpus) once, before the workers start: each
    would otherwise pre-train the same model at the same time."""
    from valuation.pipeline.config import load_valuation_config
    from valuation.pipeline.inputs import prepare_inputs

    folder = work / point.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    text = point_config(point, corpus, folder / "run", seeds=seeds, bootstrap=bootstrap, sequential=sequential)
    path.write_text(text, encoding="utf-8")
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
    parser.add_argument("--pairs", type=int, default=48, help="training pairs per source")
    parser.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs per objective")
    parser.add_argument("--seeds", type=int, default=2, help="[retrain] seeds (>= 2 for the noise floor)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="[retrain] bootstrap replicates")
    parser.add_argument("--jobs", type=int, default=1, help="points trained in parallel (one core each)")
    parser.add_argument("--sequential", action="store_true", help="also sequential retraining (1 order)")
    parser.add_argument(
        "--quick", action="store_true", help="two points, 32 pairs per source, 100 eval pairs"
    )
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: the noise floor compares retraining with itself")
    from valuation.synth import SynthConfig, write_corpus

    points = args.points or tuple(
        Point(lr, ep) for lr, ep in (QUICK_POINTS if args.quick else DEFAULT_POINTS)
    )
    pairs, eval_pairs = (32, 100) if args.quick else (args.pairs, args.eval_pairs)
    work = args.work.resolve()
    corpus = work / f"corpus-{pairs}-{eval_pairs}"
    if not (corpus / "train").is_dir():
        write_corpus(corpus, SynthConfig(seed=1, pairs_per_source=pairs, eval_pairs_per_objective=eval_pairs))
    started = time.perf_counter()
    load_before = load_average()
    prepare_base(points[0], corpus, work, args.seeds, args.bootstrap, args.sequential)
    costly_first = sorted(points, key=lambda p: -p.epochs)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            p: pool.submit(run_point, p, corpus, work, args.seeds, args.bootstrap, args.sequential)
            for p in costly_first
        }
        rows = {p: f.result() for p, f in futures.items()}
    sweep = {
        "format": "payoutsim-fidelity-sweep/1",
        "command": "python -m benchmarks.fidelity_sweep "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "setup": {
            "base": "tiny",
            "sources": list(SOURCES),
            "pairs_per_source": pairs,
            "eval_pairs_per_objective": eval_pairs,
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
        "points": [rows[p] for p in sorted(points, key=lambda p: (p.budget, p.epochs))],
    }
    sweep["target"] = report.target_check(sweep["points"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity_sweep.json").write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    report.plot(sweep, args.out / "fidelity_sweep.png")
    print(report.table(sweep))
    print(f"wrote {args.out / 'fidelity_sweep.json'} and {args.out / 'fidelity_sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
