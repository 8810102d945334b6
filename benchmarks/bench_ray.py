"""Experiment: the Ray backend against the local one on this machine, side by side in one run (issue 16).

* ``--part training``: the training phase of 8 tiny-preset adapters (`valuation.adapters.dpo.train_adapters`),
  first locally (one process, torch's default threads), then locally with one torch thread, then on a local
  Ray instance with ``--ray-cpus`` CPUs and one-CPU, one-thread tasks (2 CPUs: two one-thread workers). The 8
  sources are the synthetic corpus's training pairs dealt round-robin into ``s0..s7``.
* ``--part retrain``: the retraining baseline at n = 5 sources (`valuation.retraining.run.run_retrain`, one
  order, sequential and union adapters, no merge) locally and through Ray, each from the same per-source
  adapters (trained once, copied), so only the coalition trainings and their scoring differ.

Prints and writes (``--out``) the wall times, their ratio (local / Ray) and the 1-minute load average before
and after each phase (the machine is shared: read the ratios with the load). Results must agree; the largest
difference of the two runs' outputs is reported too::

    .venv/bin/python -m benchmarks.bench_ray --part training --out runs/bench/ray_training.json
    .venv/bin/python -m benchmarks.bench_ray --part retrain --out runs/bench/ray_retrain.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import load_average, torch_threads
from valuation.pipeline.config import load_valuation_config
from valuation.runtime.settings import runtime_overrides
from valuation.synth import SynthConfig, write_corpus


def _phase(name: str, fn: Any) -> tuple[Any, dict[str, Any]]:
    before = load_average()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    entry = {"wall_s": round(wall, 2), "load_before": before, "load_after": load_average()}
    print(f"{name}: {wall:.1f} s (load {before} -> {entry['load_after']})", flush=True)
    return out, entry


def _config(folder: Path, data: str, sources: list[str], cache: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(
        f'{data}\nsources = {json.dumps(sources)}\n[model]\nbase = "tiny"\ncache_dir = "{cache}"\n'
        f"[training]\nepochs = 1\nbatch_size = 8\nmax_length = 128\n[output]\ndir = \"run\"\n{extra}",
        encoding="utf-8",
    )
    return path


def training(root: Path, pairs_per_source: int, ray_cpus: int) -> dict[str, Any]:
    """8 adapters locally, then through Ray with ``ray_cpus`` one-thread workers."""
    import numpy as np

    from valuation.adapters.dpo import train_adapters
    from valuation.pipeline.inputs import prepare_inputs
    from valuation.runtime.backend import open_backend
    from valuation.runtime.settings import RuntimeSection

    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=pairs_per_source))
    rows = []
    for path in sorted((root / "corpus" / "train").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows[: 8 * pairs_per_source]):
            fh.write(json.dumps(row | {"source": f"s{i % 8}"}) + "\n")
    sources = [f"s{i}" for i in range(8)]
    evals = "".join(f'{o} = "{root / "corpus" / "eval" / f"{o}.jsonl"}"\n' for o in ("helpfulness", "harmlessness"))
    config = load_valuation_config(_config(root / "cfg", f'[data]\npath = "{root / "pairs.jsonl"}"', sources,
                                           root / "cache", f"[eval]\n{evals}"))
    prepared = prepare_inputs(config, progress=False)  # the base model is prepared once, before either phase
    args = (prepared.base, prepared.train, prepared.data_hashes, config.training)
    local, local_t = _phase("local", lambda: train_adapters(*args, root / "local", progress=False, log=lambda _m: None))
    with torch_threads(1):  # the local run without thread oversubscription on a busy machine
        _, local1_t = _phase("local (1 thread)", lambda: train_adapters(
            *args, root / "local1", progress=False, log=lambda _m: None))
    runtime = RuntimeSection(backend="ray", device="cpu", num_cpus=1, ray_cpus=ray_cpus)
    with open_backend(runtime) as backend:  # Ray's start-up is outside the timed phase (reported separately)
        remote, ray_t = _phase(f"ray ({ray_cpus} one-thread workers)", lambda: train_adapters(
            *args, root / "ray", progress=False, log=lambda _m: None, backend=backend))
    loss_diff = max(abs(local[s].manifest["metrics"]["train_loss"] - remote[s].manifest["metrics"]["train_loss"])
                    for s in sources)
    return {"adapters": 8, "pairs_per_source": pairs_per_source, "local": local_t, "local_1_thread": local1_t,
            "ray": ray_t, "ratio_local_over_ray": round(local_t["wall_s"] / ray_t["wall_s"], 2),
            "ratio_local_1_thread_over_ray": round(local1_t["wall_s"] / ray_t["wall_s"], 2),
            "max_train_loss_diff": float(np.float64(loss_diff))}


def retrain(root: Path, pairs_per_source: int, ray_cpus: int) -> dict[str, Any]:
    """The n = 5 retraining baseline locally and through Ray, from the same per-source adapters."""
    import numpy as np

    from valuation.pipeline.run import run_train
    from valuation.retraining.run import run_retrain

    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=pairs_per_source, eval_pairs_per_objective=32))
    sources = ["flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat", "noisy"]
    extra = '[retrain]\norders = 1\nmerge = "none"\n' + f"[runtime]\nnum_cpus = 1\nray_cpus = {ray_cpus}\n"
    data = f'[data]\ncorpus = "{root / "corpus"}"'
    local = load_valuation_config(_config(root / "local", data, sources, root / "cache", extra))
    remote = load_valuation_config(_config(root / "ray", data, sources, root / "cache", extra))
    run_train(local, progress=False, log=lambda _m: None)
    shutil.copytree(local.output.dir / "adapters", remote.output.dir / "adapters")
    local_run, local_t = _phase("local", lambda: run_retrain(local, progress=False, log=lambda _m: None))
    with runtime_overrides(backend="ray"):
        remote_run, ray_t = _phase(f"ray ({ray_cpus} one-thread workers)", lambda: run_retrain(
            remote, progress=False, log=lambda _m: None))
    fid = local_run.fidelity["cost"]
    diff = max(float(np.abs(remote_run.variants[k].values - v.values).max()) for k, v in local_run.variants.items())
    return {"sources": 5, "pairs_per_source": pairs_per_source,
            "fine_tunings": {k: fid[k].get("fine_tunings") for k in ("sequential", "union")},
            "local": local_t, "ray": ray_t, "ratio_local_over_ray": round(local_t["wall_s"] / ray_t["wall_s"], 2),
            "local_retrain_train_s": local_run.fidelity["timings"].get("retrain_train_s"),
            "ray_retrain_train_s": remote_run.fidelity["timings"].get("retrain_train_s"),
            "max_utility_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("training", "retrain"), required=True)
    parser.add_argument("--pairs", type=int, default=64, help="pairs per source (default 64)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        fn = training if args.part == "training" else retrain
        result = {"part": args.part, **fn(Path(tmp), args.pairs, args.ray_cpus)}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
