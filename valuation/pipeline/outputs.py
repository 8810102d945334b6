"""The files of a valuation run, written atomically into the run directory (``[output] dir``)::

    game.csv                coalition utilities, GAME.csv format (one column per objective)
    game.parquet            the same plus <objective>_std_err and <objective>_n_pairs per coalition
    items.npz               the per-item terms (eval pairs / prompts) the utilities are means of, for the bootstrap
    game.npz                the compact game of a ``preference`` run (per-pair margins; the only game file of
                            a run with more than 16 sources, which has no coalition table)
    values.json             source-level values (the `payoutsim shapley` result format)
    values_members.json     member-level values, when the config lists [[members]]
    config.toml             the config this run used (a copy)
    run.json                provenance: base model, adapters (hashes, metrics), eval sets, timings

run.json is the run's completion mark: it is removed before the other files are replaced and written last.
When a file cannot be written (disk full: `valuation.errors.OutputError`) every output file of the run is
removed (`RUN_FILES`; adapters and caches are kept, each checked on its own when reused) and the error says
so: a run directory holds a complete set of outputs with its run.json, or none.

polars is imported inside `_write_parquet` (measured: ``import polars`` ≈ 0.2 s), so importing the
pipeline does not load it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from valuation.errors import OutputError
from valuation.files import atomic_path, atomic_write_text, sha256_json
from valuation.games.coalitions import coalition_label
from valuation.games.game import TableGame
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.tables import CoalitionTable

RUN_FORMAT = "payoutsim-valuation-run/1"
RUN_FILES = (
    "game.csv", "game.parquet", "items.npz", "game.npz", "values.json", "values_members.json", "config.toml", "run.json"
)


def write_run(run: ValuationRun, *, logprobs_computed: int = 0, logprobs_cached: int = 0) -> dict[str, Path]:
    """Write game.csv, game.parquet, values.json, values_members.json, config.toml and run.json (atomic).

    Returns file key (``game_csv``, ``game_parquet``, ``values``, ``values_members``, ``config``, ``run``)
    → path, for the files written. On an `OutputError` (disk full) every file of `RUN_FILES` in the run
    directory is removed and the error, saying so, is raised again.
    """
    run_dir = run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").unlink(missing_ok=True)  # the completion mark goes first, comes back last
    try:
        return _write_files(run, run_dir, logprobs_computed, logprobs_cached)
    except OutputError as err:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        raise OutputError(
            f"{err.detail}; the run's output files in {run_dir} were removed (adapters and caches kept): "
            "free some space and re-run"
        ) from None


def _write_files(run: ValuationRun, run_dir: Path, computed: int, cached: int) -> dict[str, Path]:
    """The writes of `write_run`, run.json last."""
    files: dict[str, Path] = {}
    if run.table is not None and isinstance(run.game, TableGame):
        files["game_csv"] = run_dir / "game.csv"
        run.game.to_csv(files["game_csv"])
        files["game_parquet"] = run_dir / "game.parquet"
        _write_parquet(run.table, files["game_parquet"])
        if run.table.items is not None:
            files["items"] = run.table.items.save(run_dir / "items.npz")
    else:  # a run on the compact game: a table of a previous run there would not describe this one
        for name in ("game.csv", "game.parquet", "items.npz"):
            (run_dir / name).unlink(missing_ok=True)
    if run.compact is not None:
        files["game_npz"] = run.compact.save(run_dir / "game.npz")
    files["values"] = run_dir / "values.json"
    atomic_write_text(files["values"], json.dumps(run.result.to_json_dict(), indent=2) + "\n")
    if run.member_result is not None:
        files["values_members"] = run_dir / "values_members.json"
        atomic_write_text(files["values_members"], json.dumps(run.member_result.to_json_dict(), indent=2) + "\n")
    config = run.prepared.config
    if config.config_path is not None and config.config_path.is_file():
        files["config"] = run_dir / "config.toml"
        atomic_write_text(files["config"], config.config_path.read_text(encoding="utf-8"))
    files["run"] = run_dir / "run.json"
    atomic_write_text(files["run"], json.dumps(_provenance(run, computed, cached), indent=2) + "\n")
    return files


def _write_parquet(table: CoalitionTable, path: Path) -> None:
    """``game.parquet``: columns ``coalition`` (players joined by ``+``), ``size`` and, per objective,
    ``<objective>``, ``<objective>_std_err`` and ``<objective>_n_pairs``; one row per evaluated coalition."""
    import polars as pl

    columns: dict[str, Any] = {
        "coalition": [coalition_label(row, table.players) for row in table.coalitions],
        "size": table.coalitions.sum(axis=1).astype(np.int64),
    }
    for j, objective in enumerate(table.objectives):
        columns[objective] = table.values[:, j]
        columns[f"{objective}_std_err"] = table.std_errs[:, j]
        columns[f"{objective}_n_pairs"] = table.counts[:, j]
    with atomic_path(path) as tmp:
        pl.DataFrame(columns).write_parquet(tmp)


def _provenance(run: ValuationRun, computed: int, cached: int) -> dict[str, Any]:
    """The ``run.json`` document: config and its hash, base model, per-source data and adapter hashes and
    training metrics, eval sets, the utility/arithmetic/estimator settings, how many coalitions were
    evaluated, log-prob tables computed vs cached, timings (and, for ``reward``, the sampling summary)."""
    prepared = run.prepared
    config = prepared.config
    base = prepared.base
    return {
        "format": RUN_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": config.name,
        "config_file": None if config.config_path is None else str(config.config_path),
        "config_hash": sha256_json(config.model_dump(mode="json", exclude={"config_path"})),
        "base_model": {"name": base.name, "path": str(base.path), "sha256": base.sha256, "preset": base.preset},
        "sources": {
            s: {
                "n_pairs": len(prepared.train[s]),
                "data_hash": prepared.data_hashes[s],
                "adapter_sha256": run.adapters[s].sha256,
                "adapter_status": run.adapters[s].status,
                "metrics": run.adapters[s].manifest.get("metrics", {}),
                "train_wall_time_s": run.adapters[s].manifest.get("wall_time_s"),
            }
            for s in prepared.sources
        },
        "eval_sets": {es.objective: {"n_pairs": len(es.pairs), "data_hash": es.data_hash} for es in prepared.eval_sets},
        "utility": config.utility.model_dump(mode="json") | {"beta": config.utility_beta},
        **(  # [utility] kind = "reward": the scorers and the sampling settings
            {"reward": config.reward.specs(), "sampling": config.sampling.model_dump(mode="json"),
             "sampled_coalitions": _sampling_summary(run.sampling_report)}
            if config.utility.kind == "reward"
            else {}
        ),
        "arithmetic": config.arithmetic.model_dump(mode="json"),
        "shapley": config.shapley.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"),
        "members": [m.model_dump(mode="json") for m in config.members],
        "coalitions_evaluated": int(run.table.coalitions.shape[0]) if run.table is not None else run.result.n_evaluations,
        "compact_game": None if run.compact is None else run.compact.describe(),
        "logprob_tables": {"computed": computed, "cached": cached},
        "timings": run.timings,
    }


def _sampling_summary(report: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How the `reward` coalitions were estimated: counts per method, the smallest ESS, and every coalition."""
    methods = [entry["method"] for entry in report.values()]
    ess = [v for entry in report.values() for v in entry.get("ess", {}).values()]
    return {
        "importance": methods.count("importance"),
        "direct": methods.count("direct"),
        "min_ess": min(ess) if ess else None,
        "coalitions": dict(report),
    }


__all__ = ["RUN_FORMAT", "write_run"]
