"""Large markets: the 64-source valuation end to end, its planted ground truth, and sampling on the compact game.

``python -m benchmarks.large_market [--seeds 0 1] [--sources 64] [--work runs/bench-large] [--out DIR]``

For every corpus seed: the valuation of ``data/configs/market64.toml`` with ``[data] synth.seed`` set to the
seed and ``n_sources`` to ``--sources`` (`valuation.pipeline.run.run_value`: 64 DPO adapters on the ``tiny``
preset, resumable, 65 log-prob tables, sampled Shapley on the compact game to a standard error of 1% of the
grand coalition's value), timed per stage. Then, against the manifest's planted strengths
(``sources.<name>.expected.<objective>.signal``):

* Spearman(planted strength, φ) per objective (target ≥ 0.8);
* whether every planted ``harmful`` source (harmlessness) and ``noisy`` source (helpfulness) is in the lowest
  quartile of that objective's values.

And on the cached compact game (no model): sampled Shapley (``regression``) and Banzhaf (MSR) from scratch
until every standard error is ≤ 1% of |u(N) − u(∅)| (`valuation.games.stopping.relative_standard_error`),
wall time and evaluations (target ≤ 60 s).

Writes ``--out/large_market.json``; prints a table. A finished run directory is reused (adapters and log-probs
are cached), so the second call only re-values.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from valuation.games.estimators import approximate
from valuation.games.game import Game, empty_and_grand
from valuation.games.stopping import MaxEvaluations, relative_standard_error
from valuation.pipeline.config import load_valuation_config
from valuation.pipeline.run import run_value

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "data" / "configs" / "market64.toml"
TARGET_SE = 0.01
LOW_CLASSES = {"harmful": "harmlessness", "noisy": "helpfulness"}


def seeded_config(seed: int, n_sources: int, work: Path, config: Path = CONFIG) -> Path:
    """`config` (``market64.toml``) with the corpus seed, the number of sources and the run directory replaced."""
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"synth = \{ seed = \d+, n_sources = \d+", f"synth = {{ seed = {seed}, n_sources = {n_sources}", text)
    run_dir = work / f"market{n_sources}-seed{seed}"
    text = re.sub(r'dir = ".*"', f'dir = "{run_dir}"', text)
    path = work / f"market{n_sources}-seed{seed}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ground_truth(manifest: dict[str, Any], players: tuple[str, ...], objectives: tuple[str, ...],
                 values: np.ndarray) -> dict[str, Any]:
    """Spearman per objective and the lowest-quartile check of the planted harmful / noisy sources."""
    sources = manifest["sources"]
    out: dict[str, Any] = {"spearman": {}, "low_quartile": {}}
    for k, objective in enumerate(objectives):
        planted = np.array([sources[p]["expected"][objective]["signal"] for p in players], dtype=float)
        out["spearman"][objective] = float(spearmanr(planted, values[:, k]).statistic)
    for cls, objective in LOW_CLASSES.items():
        k = objectives.index(objective)
        cut = float(np.quantile(values[:, k], 0.25))
        members = [p for p in players if sources[p].get("class") == cls]
        out["low_quartile"][cls] = {
            "objective": objective,
            "quartile_cut": cut,
            "sources": {p: float(values[players.index(p), k]) for p in members},
            "all_in_lowest_quartile": all(values[players.index(p), k] <= cut for p in members),
        }
    return out


def sampling_to_target(game: Game, method: str, seed: int = 0, cap: int = 400_000) -> dict[str, Any]:
    """``method`` on the compact game from scratch until every SE ≤ `TARGET_SE` of |u(N) − u(∅)|."""
    ends = empty_and_grand(game)
    grand = np.abs(ends[1] - ends[0])
    started = time.perf_counter()
    stopping = relative_standard_error(game, TARGET_SE) | MaxEvaluations(cap)
    result = approximate(game, method, seed=seed, stopping=stopping)
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "seconds": round(seconds, 2),
        "evaluations": int(result.n_evaluations),
        "stopped_by": result.info.get("stopped_by"),
        "max_se_over_grand": [float(x) for x in result.std_errs.max(axis=0) / grand],
    }


def bench_seed(seed: int, n_sources: int, work: Path, base: Path = CONFIG) -> dict[str, Any]:
    config = load_valuation_config(seeded_config(seed, n_sources, work, base))
    started = time.perf_counter()
    run = run_value(config, progress=False)
    wall = time.perf_counter() - started
    assert run.compact is not None
    manifest = json.loads((run.run_dir / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    trained = sum(1 for r in run.adapters.values() if r.status == "trained")
    return {
        "seed": seed,
        "sources": n_sources,
        "wall_s": round(wall, 1),
        "adapters_trained": trained,
        "adapter_train_s_sum": round(sum(float(r.manifest.get("wall_time_s") or 0.0) for r in run.adapters.values()), 1),
        "timings": run.timings,
        "valuation": {"stopped_by": run.result.info.get("stopped_by"), "evaluations": run.result.n_evaluations},
        "ground_truth": ground_truth(manifest, run.result.players, run.result.objectives, run.result.values),
        "sampling": [sampling_to_target(run.compact, m) for m in ("regression", "banzhaf")],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="corpus seeds (default 0 1)")
    parser.add_argument("--sources", type=int, default=64, help="generated sources (default 64)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-large", help="run directories")
    parser.add_argument("--out", type=Path, default=None, help="where large_market.json goes (default: --work)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the valuation config (default market64.toml)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {"load_average": os.getloadavg(), "runs": []}
    for seed in args.seeds:
        entry = bench_seed(seed, args.sources, args.work.resolve(), args.config)
        results["runs"].append(entry)
        print(json.dumps(entry, indent=1), flush=True)
    out = (args.out or args.work) / "large_market.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
