"""The retraining baseline: real coalition adapters, to check language-model arithmetic against.

For every coalition S with |S| ≥ 2 (n ≤ ``[retrain] max_sources``) two kinds of real models are trained
with the same DPO + LoRA settings as the per-source adapters (`valuation.adapters.dpo`):

* **sequential** — DPO over S's sources one after the other, each stage continuing the previous stage's
  adapter on the next source's pairs, always against the BASE model as the DPO reference
  (`valuation.retraining.stages.train_stage`). That is the procedure whose optimum the ``sum`` weighting
  describes (r_S = Σ_{ℓ∈S} r_ℓ), but real training is order-dependent, so S is trained in R random orders
  (``[retrain] orders``) that share prefixes (`valuation.retraining.plan`).
* **union** — one fresh adapter on the shuffled union of S's pairs (shuffled with ``[retrain] seed``).

Both are scored with the same preference utility as the arithmetic and compared with it
(`valuation.retraining.fidelity`). Optionally (``[retrain] merge``) a third, training-free comparison merges
the per-source adapters' weights (`valuation.adapters.merge`).

Retraining is itself noisy (adapter initialisation, batch order, source order, shuffle). With
``[retrain] seeds = k ≥ 2`` the baseline is trained k times (`Replicate`): replicate i uses
``[training] seed + i`` and ``[retrain] seed + i`` for everything, its own n per-source adapters included
(``RUN/retrain/seed<i>/adapters``), so replicates share no adapter. ``fidelity.json`` then reports, per
retrained kind and objective, retraining's agreement with itself (retrain vs retrain: the noise floor) beside
the arithmetic's agreement with retraining of another replicate, each with a bootstrap interval over eval
pairs (`valuation.retraining.fidelity.noise_floor`). The cost is k times the training.

`run_retrain` runs it all: score the arithmetic (`_score_arithmetic`), train the coalition adapters
(`valuation.retraining.stages.train_coalition_adapters`), score each variant (`_score_retrained`,
`_score_merged`, `merge_vs_arithmetic`), take exact Shapley values, assemble the report (`_fidelity_report`)
and write it (`write_retrain`). Run directory additions::

    retrain/sequential/<key>/    stage adapters (peft dir + manifest.json with the prefix)
    retrain/union/<key>/         union adapters
    game_retrain_sequential.csv  order-averaged utilities, GAME.csv format
    game_retrain_union.csv       GAME.csv format
    game_merge_<cat|svd>.csv     weight-merged utilities (when merge is on)
    retrain_coalitions.csv       per coalition: size, and per objective the arithmetic, sequential (+ per
                                 order, order std), union and merge utilities side by side
    values_retrain_sequential.json, values_retrain_union.json, values_merge_<kind>.json  (exact Shapley)
    fidelity.json                per objective and variant: utility correlation with the arithmetic,
                                 Shapley fidelity; the cost of each way (``cost``: fine-tunings and the
                                 sum of their recorded training wall times, both including the n
                                 per-source adapters every way needs; optimiser steps; model passes per
                                 eval set); ``seeds`` (`seeds_report`: every replicate's seeds, cost and
                                 values, and the noise floor when k ≥ 2), the load average and this
                                 run's timings
    retrain/seed<i>/adapters/    replicate i's per-source adapters (k ≥ 2)
    retrain_coalitions.csv also gets ``<objective>_arithmetic_seed<i>`` and ``<objective>_<kind>_seed<i>``
    columns for every replicate i ≥ 1.

polars is imported inside `write_retrain`, as before this module was split.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from valuation.adapters.config import TrainingConfig
from valuation.adapters.dpo import train_adapters
from valuation.adapters.merge import merged_coalition_logprobs
from valuation.adapters.store import AdapterRecord
from valuation.composition.logprobs import EvalLogProbs, ResponseLogProbs, compute_eval_logprobs
from valuation.errors import InputError
from valuation.files import atomic_path, atomic_write_text
from valuation.games.coalitions import all_coalitions, coalition_label
from valuation.games.estimators import approximate
from valuation.games.game import TableGame
from valuation.games.result import ValuationResult
from valuation.pipeline.config import ValuationConfig
from valuation.pipeline.inputs import PreparedInputs, prepare_inputs
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.run import open_runtime, run_train
from valuation.pipeline.tables import coalition_table
from valuation.retraining.fidelity import (
    FIDELITY_FORMAT,
    VariantTable,
    arithmetic_pair_scores,
    fidelity_metrics,
    model_margins,
    noise_floor,
    variant_table,
)
from valuation.retraining.plan import Kind, RetrainPlan, plan_retrain, random_orders
from valuation.retraining.stages import RetrainedAdapter, train_coalition_adapters
from valuation.runtime.backend import Backend


@dataclass
class Replicate:
    """One independent retraining (``[retrain] seeds``): replicate i trains its per-source adapters and its
    coalition adapters with ``[training] seed + i``, and draws its orders and union shuffles with
    ``[retrain] seed + i``. Replicate 0 is the run's own (its per-source adapters are the arithmetic run's)."""

    index: int
    training_seed: int
    retrain_seed: int
    orders: tuple[tuple[str, ...], ...]
    arithmetic: VariantTable
    arithmetic_result: ValuationResult
    variants: dict[str, VariantTable]  # sequential / union only (the merge is not retrained)
    results: dict[str, ValuationResult]
    train_wall_time_s: float  # per-source + coalition adapters of this replicate (recorded wall times)
    fine_tunings_trained: int  # trained by this run (not reused)


@dataclass
class RetrainRun:
    """The outcome of `run_retrain`: arithmetic and variant tables, their Shapley values and the report
    (all of replicate 0), and every replicate (``[retrain] seeds``)."""

    run_dir: Path
    players: tuple[str, ...]
    objectives: tuple[str, ...]
    arithmetic: VariantTable
    arithmetic_result: ValuationResult
    variants: dict[str, VariantTable]
    results: dict[str, ValuationResult]
    fidelity: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    replicates: list[Replicate] = field(default_factory=list)


def run_retrain(
    config: ValuationConfig,
    *,
    arithmetic: ValuationRun | None = None,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    backend: Backend | None = None,
) -> RetrainRun:
    """The retraining baseline for ``config``; see the module docstring for what is trained and written.

    Args:
        config: the valuation config (its ``[retrain]`` table: orders, seed, sequential, union, merge,
            max_sources, seeds, bootstrap). With ``seeds = k ≥ 2`` the whole baseline is trained k times
            (`Replicate`; replicate i ≥ 1 also trains its own n per-source adapters under
            ``RUN/retrain/seed<i>/adapters``) and ``fidelity.json`` gets ``seeds``: retraining's agreement with
            itself beside the arithmetic's agreement with it (`valuation.retraining.fidelity.noise_floor`).
        arithmetic: the arithmetic run of the same config (``--mode both``); computed here when ``None``
            (per-source adapters trained if missing, log-probs from the cache; nothing of it is written).
        retrain: retrain stale per-source adapters instead of raising `InputError` (``--retrain``).
        callbacks: extra ``TrainerCallback`` objects for every coalition training (tests count trainings).
        backend: where the trainings and scorings run (`valuation.runtime.backend`: one task per coalition
            training and per scored model when remote); default: the config's ``[runtime]``.

    Raises:
        InputError: more sources than ``[retrain] max_sources`` (checked before anything is trained).
    """
    if backend is None:
        with open_runtime(config) as opened:
            return run_retrain(
                config, arithmetic=arithmetic, retrain=retrain, progress=progress, callbacks=callbacks, log=log,
                backend=opened,
            )
    rcfg = config.retrain
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prepared, source_adapters = _inputs(config, arithmetic, retrain=retrain, progress=progress, log=log,
                                        backend=backend)
    sources = prepared.sources

    t0 = time.perf_counter()
    score_kwargs = _score_kwargs(config, prepared, progress) | {"backend": backend}
    masks = all_coalitions(len(sources))
    tables, arith = _score_arithmetic(config, prepared, source_adapters, masks, score_kwargs)
    timings["arithmetic_score_s"] = time.perf_counter() - t0
    objectives = tuple(tables)

    def exact(values: np.ndarray) -> ValuationResult:
        return approximate(TableGame(sources, objectives, masks, values), "exact")

    arith_result = exact(arith.values)
    plan = plan_retrain(sources, random_orders(sources, rcfg.orders, rcfg.seed))
    kinds: list[Kind] = [k for k in ("sequential", "union") if getattr(rcfg, k)]  # type: ignore[misc]

    t0 = time.perf_counter()
    adapters = train_coalition_adapters(
        prepared,
        source_adapters,
        plan,
        config=config.training,
        seed=rcfg.seed,
        kinds=kinds,
        progress=progress,
        callbacks=callbacks,
        log=log,
        backend=backend,
    )
    timings["retrain_train_s"] = time.perf_counter() - t0

    ways = {"arithmetic": _arithmetic_cost(len(sources), source_adapters, timings["arithmetic_score_s"])}
    arith_wall = ways["arithmetic"]["train_wall_time_s"]
    variants: dict[str, VariantTable] = {}
    for kind in kinds:
        variants[kind], ways[kind] = _score_retrained(
            kind, config, prepared, tables, adapters[kind], plan, score_kwargs, arith_wall
        )
    merge_report: dict[str, Any] | None = None
    if rcfg.merge != "none":
        name = f"merge_{rcfg.merge}"
        variants[name], ways[name], merge_report = _score_merged(
            config, prepared, source_adapters, tables, masks, score_kwargs, arith_wall
        )

    results = {name: exact(v.values) for name, v in variants.items()}
    first = Replicate(
        0,
        config.training.seed,
        rcfg.seed,
        plan.orders,
        arith,
        arith_result,
        {k: variants[k] for k in kinds},
        {k: results[k] for k in kinds},
        sum(_wall(r.manifest) for r in source_adapters.values())
        + sum(a.wall_time_s for k in kinds for a in adapters[k].values() if a.status != "source"),
        sum(1 for r in source_adapters.values() if r.status == "trained")
        + sum(1 for k in kinds for a in adapters[k].values() if a.status == "trained"),
    )
    replicates = [first]
    t0 = time.perf_counter()
    for i in range(1, rcfg.seeds):
        replicates.append(
            _replicate(i, config, prepared, kinds, score_kwargs, exact, retrain, progress, callbacks, log)
        )
    if rcfg.seeds > 1:
        timings["replicates_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    run = RetrainRun(
        prepared.run_dir,
        tuple(sources),
        objectives,
        arith,
        arith_result,
        variants,
        results,
        {},
        {},
        replicates,
    )
    run.fidelity = _fidelity_report(config, run, ways, merge_report, timings)
    run.files = write_retrain(run)
    return run


def replicate_training(training: TrainingConfig, index: int) -> TrainingConfig:
    """The ``[training]`` config of replicate ``index``: the same, with ``seed + index``."""
    return training.model_copy(update={"seed": training.seed + index})


def _replicate(
    index: int,
    config: ValuationConfig,
    prepared: PreparedInputs,
    kinds: Sequence[Kind],
    score_kwargs: Mapping[str, Any],
    exact: Callable[[np.ndarray], ValuationResult],
    retrain: bool,
    progress: bool,
    callbacks: Sequence[Any],
    log: Callable[[str], None] | None,
) -> Replicate:
    """Replicate ``index`` ≥ 1 of the baseline: its own per-source adapters (``RUN/retrain/seed<i>/adapters``,
    resumable like ``RUN/adapters``), its arithmetic, its coalition adapters (cached under keys that include
    the training seed) and their utilities and exact Shapley values."""
    rcfg = config.retrain
    training = replicate_training(config.training, index)
    retrain_seed = rcfg.seed + index
    sources = prepared.sources
    source_adapters = train_adapters(
        prepared.base,
        prepared.train,
        prepared.data_hashes,
        training,
        prepared.run_dir / "retrain" / f"seed{index}" / "adapters",
        retrain=retrain,
        progress=progress,
        callbacks=callbacks,
        log=log,
    )
    masks = all_coalitions(len(sources))
    tables, arith = _score_arithmetic(config, prepared, source_adapters, masks, score_kwargs)
    plan = plan_retrain(sources, random_orders(sources, rcfg.orders, retrain_seed))
    adapters = train_coalition_adapters(
        prepared,
        source_adapters,
        plan,
        config=training,
        seed=retrain_seed,
        kinds=kinds,
        progress=progress,
        callbacks=callbacks,
        log=log,
    )
    variants = {
        kind: _score_retrained(kind, config, prepared, tables, adapters[kind], plan, score_kwargs, 0.0)[0]
        for kind in kinds
    }
    return Replicate(
        index,
        training.seed,
        retrain_seed,
        plan.orders,
        arith,
        exact(arith.values),
        variants,
        {k: exact(v.values) for k, v in variants.items()},
        sum(_wall(r.manifest) for r in source_adapters.values())
        + sum(a.wall_time_s for k in kinds for a in adapters[k].values() if a.status != "source"),
        sum(1 for r in source_adapters.values() if r.status == "trained")
        + sum(1 for k in kinds for a in adapters[k].values() if a.status == "trained"),
    )


def _inputs(
    config: ValuationConfig,
    arithmetic: ValuationRun | None,
    *,
    retrain: bool,
    progress: bool,
    log: Callable[[str], None] | None,
    backend: Backend,
) -> tuple[PreparedInputs, Mapping[str, AdapterRecord]]:
    """The prepared inputs and the per-source adapters: the arithmetic run's, or prepared and trained (when
    missing) here. The source count is checked (`check_source_count`) before any training."""
    prepared = arithmetic.prepared if arithmetic is not None else prepare_inputs(config, progress=progress)
    check_source_count(config, len(prepared.sources))
    if arithmetic is not None:
        return prepared, arithmetic.adapters
    _, source_adapters = run_train(
        config, retrain=retrain, progress=progress, log=log, prepared=prepared, backend=backend
    )
    return prepared, source_adapters


def check_source_count(config: ValuationConfig, n: int) -> None:
    """Raise `InputError` when ``n`` sources are more than ``[retrain] max_sources`` (2^n − 1 coalition models)."""
    limit = config.retrain.max_sources
    if n > limit:
        raise InputError(
            f"the retraining baseline trains every coalition: {n} sources need {2**n - 1} coalition models, "
            f"more than [retrain] max_sources = {limit} allows; value fewer sources or raise the limit",
            file=config.config_path,
            field="retrain.max_sources",
        )


def _score_kwargs(config: ValuationConfig, prepared: PreparedInputs, progress: bool) -> dict[str, Any]:
    """Keyword arguments of every log-prob scoring of the run (same cache, truncation and batch size)."""
    return {
        "cache_dir": prepared.run_dir / "cache" / "logprobs",
        "max_length": config.training.max_length,
        "batch_size": config.eval.batch_size,
        "progress": progress,
    }


def _score_arithmetic(
    config: ValuationConfig,
    prepared: PreparedInputs,
    source_adapters: Mapping[str, AdapterRecord],
    masks: np.ndarray,
    score_kwargs: Mapping[str, Any],
) -> tuple[dict[str, EvalLogProbs], VariantTable]:
    """The log-prob tables of the base and the per-source adapters (from the cache when there), and the
    arithmetic utilities of every coalition (`valuation.pipeline.tables.coalition_table`)."""
    sources = prepared.sources
    report = compute_eval_logprobs(prepared.base, source_adapters, prepared.eval_sets, **score_kwargs)  # type: ignore[arg-type]
    sizes = [len(prepared.train[s]) for s in sources]
    weighting, metric, beta = config.arithmetic.weighting, config.utility.metric, config.utility_beta
    ctable = coalition_table(
        report.tables, sources, masks, weighting=weighting, sizes=sizes, metric=metric, beta=beta
    )
    per_pair = arithmetic_pair_scores(
        report.tables, sources, weighting=weighting, sizes=sizes, metric=metric, beta=beta
    )
    return report.tables, VariantTable("arithmetic", ctable.values, ctable.std_errs, pair_scores=per_pair)


def _score_retrained(
    kind: Kind,
    config: ValuationConfig,
    prepared: PreparedInputs,
    tables: Mapping[str, EvalLogProbs],
    kind_adapters: Mapping[tuple[str, ...], RetrainedAdapter],
    plan: RetrainPlan,
    score_kwargs: Mapping[str, Any],
    arith_wall: float,
) -> tuple[VariantTable, dict[str, Any]]:
    """Score the coalition adapters of one kind: its `VariantTable` and its ``cost`` entry (fine-tunings
    and wall time including the n per-source adapters ``arith_wall`` counts; optimiser steps; passes)."""
    t0 = time.perf_counter()
    n = len(prepared.sources)
    refs = {a.key: a for a in kind_adapters.values() if a.status != "source"}
    kreport = compute_eval_logprobs(prepared.base, refs, prepared.eval_sets, **score_kwargs)  # type: ignore[arg-type]
    margins_of = _retrained_margins(tables, kreport.tables, kind_adapters, plan, kind)
    table = variant_table(
        kind,
        prepared.sources,
        tables,
        margins_of,
        n_orders=config.retrain.orders if kind == "sequential" else 1,
        metric=config.utility.metric,
        beta=config.utility_beta,
    )
    needed = [a for a in kind_adapters.values() if a.status != "source"]
    way: dict[str, Any] = {
        "fine_tunings": n + len(needed),
        "fine_tunings_shared_with_arithmetic": n,
        "fine_tunings_trained_this_run": sum(1 for a in needed if a.status == "trained"),
        "train_wall_time_s": round(arith_wall + sum(a.wall_time_s for a in needed), 3),
        "optimizer_steps": int(sum(int(a.manifest.get("metrics", {}).get("steps", 0)) for a in needed)),
        "score_wall_time_s": round(time.perf_counter() - t0, 3),
        "forward_passes_per_eval_set": n + 1 + len(needed),
    }
    if kind == "sequential":
        way["stages_without_prefix_reuse"] = n + plan.stages_without_prefix_reuse()
        way["orders"] = [list(o) for o in plan.orders]
    return table, way


def _retrained_margins(
    source_tables: Mapping[str, EvalLogProbs],
    retrained_tables: Mapping[str, EvalLogProbs],
    adapters: Mapping[tuple[str, ...], RetrainedAdapter],
    plan: RetrainPlan,
    kind: Kind,
) -> Callable[[str, tuple[str, ...], int], np.ndarray]:
    """``margins_of(objective, coalition, order)`` of one retrained variant: ∅ → 0; a singleton → the source
    adapter; otherwise the union adapter or the sequential stage adapter of the coalition's r-th order."""

    def margins_of(objective: str, coalition: tuple[str, ...], r: int) -> np.ndarray:
        table = source_tables[objective]
        if not coalition:
            return np.zeros(len(table.base))
        item = coalition if (kind == "union" or len(coalition) == 1) else plan.sequences[coalition][r]
        adapter = adapters[item]
        if adapter.status == "source":
            return model_margins(table, table.models[item[0]])
        return model_margins(table, retrained_tables[objective].models[adapter.key])

    return margins_of


def _arithmetic_cost(n: int, source_adapters: Mapping[str, AdapterRecord], score_s: float) -> dict[str, Any]:
    """The ``cost`` entry of the arithmetic: n fine-tunings (the per-source adapters' recorded wall times
    summed), the scoring time, n + 1 model passes per eval set."""
    return {
        "fine_tunings": n,
        "train_wall_time_s": round(sum(_wall(r.manifest) for r in source_adapters.values()), 3),
        "score_wall_time_s": round(score_s, 3),
        "forward_passes_per_eval_set": n + 1,
    }


def _wall(manifest: Mapping[str, Any]) -> float:
    return float(manifest.get("wall_time_s") or 0.0)


# ---------------------------------------------------------------------------------------------------
# the weight-merge comparison


def _score_merged(
    config: ValuationConfig,
    prepared: PreparedInputs,
    source_adapters: Mapping[str, AdapterRecord],
    tables: Mapping[str, EvalLogProbs],
    masks: np.ndarray,
    score_kwargs: Mapping[str, Any],
    arith_wall: float,
) -> tuple[VariantTable, dict[str, Any], dict[str, Any]]:
    """Merge the per-source adapters' weights for every non-empty coalition (``[retrain] merge``) and score
    them: the `VariantTable` ``merge_<kind>``, its ``cost`` entry and `merge_vs_arithmetic`."""
    t0 = time.perf_counter()
    sources = prepared.sources
    coalitions = [tuple(s for s, p in zip(sources, row, strict=True) if p) for row in masks if row.any()]
    merged = merged_coalition_logprobs(
        prepared.base,
        source_adapters,
        coalitions,
        prepared.eval_sets,
        combination=config.retrain.merge,
        **{k: v for k, v in score_kwargs.items() if k != "backend"},  # merged models are scored on the driver
    )
    name = f"merge_{config.retrain.merge}"

    def merged_margins(objective: str, coalition: tuple[str, ...], _r: int) -> np.ndarray:
        table = tables[objective]
        if not coalition:
            return np.zeros(len(table.base))
        return model_margins(table, merged[objective][coalition])

    table = variant_table(
        name,
        sources,
        tables,
        merged_margins,
        n_orders=1,
        metric=config.utility.metric,
        beta=config.utility_beta,
    )
    way = {
        "fine_tunings": len(sources),
        "fine_tunings_shared_with_arithmetic": len(sources),
        "train_wall_time_s": arith_wall,
        "merged_models": len(coalitions),
        "score_wall_time_s": round(time.perf_counter() - t0, 3),
        "forward_passes_per_eval_set": len(sources) + 1 + len(coalitions),
    }
    return table, way, merge_vs_arithmetic(tables, sources, merged)


def merge_vs_arithmetic(
    tables: Mapping[str, EvalLogProbs],
    sources: Sequence[str],
    merged: Mapping[str, Mapping[tuple[str, ...], ResponseLogProbs]],
) -> dict[str, Any]:
    """For |S| = 2: how far the weight-merged model's margins are from sequence-level ``sum`` arithmetic,
    Σ_ℓ Δ_ℓ (per objective: max and mean |m_merge − m_arith| over pairs and pair coalitions, and the mean
    |m_arith| for scale). Singletons are checked for equality (max |Δ|, ~0 for ``cat``)."""
    out: dict[str, Any] = {}
    for objective, table in tables.items():
        deltas = {s: model_margins(table, table.models[s]) for s in sources}
        pair_diffs, scale, single = [], [], []
        for coalition, logps in merged[objective].items():
            arith = sum((deltas[s] for s in coalition), start=np.zeros(len(table.base)))
            diff = np.abs(model_margins(table, logps) - arith)
            if len(coalition) == 1:
                single.append(diff.max())
            elif len(coalition) == 2:
                pair_diffs.append(diff)
                scale.append(np.abs(arith))
        entry: dict[str, Any] = {"singleton_max_abs_diff": float(max(single)) if single else None}
        if pair_diffs:
            d, s = np.concatenate(pair_diffs), np.concatenate(scale)
            entry |= {
                "pairs_max_abs_margin_diff": float(d.max()),
                "pairs_mean_abs_margin_diff": float(d.mean()),
                "pairs_mean_abs_arithmetic_margin": float(s.mean()),
            }
        out[objective] = entry
    return out


# ---------------------------------------------------------------------------------------------------
# the report and its files


def _fidelity_report(
    config: ValuationConfig,
    run: RetrainRun,
    ways: dict[str, dict[str, Any]],
    merge_report: dict[str, Any] | None,
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """The content of ``fidelity.json`` (format ``payoutsim-fidelity/1``) for ``run``'s tables and values:
    per variant and objective the `valuation.retraining.fidelity.fidelity_metrics` against the arithmetic and
    the largest order std; the ``cost`` of each way (``ways``), the merge-vs-arithmetic check, the timings and
    the machine's load."""
    objectives = run.objectives
    sizes = all_coalitions(len(run.players)).sum(axis=1)
    arith, arith_values = run.arithmetic.values, run.arithmetic_result.values
    return {
        "format": FIDELITY_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference": "arithmetic",
        "players": list(run.players),
        "objectives": list(objectives),
        "utility": {
            "kind": "preference",  # always: the retrained models are scored like the arithmetic ones
            "metric": config.utility.metric,
            "beta": config.utility_beta,
        },
        "weighting": config.arithmetic.weighting,
        "retrain": config.retrain.model_dump(mode="json"),
        "variants": {
            name: {
                "objectives": fidelity_metrics(
                    objectives, sizes, arith, arith_values, v.values, run.results[name].values
                ),
                "max_order_std": (
                    {o: float(v.order_std[:, j].max()) for j, o in enumerate(objectives)}
                    if v.order_std is not None and v.per_order is not None
                    else None
                ),
            }
            for name, v in run.variants.items()
        },
        "cost": ways,
        "seeds": seeds_report(config, run),
        "merge_vs_arithmetic_pairs": merge_report,
        "timings": {k: round(val, 3) for k, val in timings.items()},
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
    }


def seeds_report(config: ValuationConfig, run: RetrainRun) -> dict[str, Any]:
    """The ``seeds`` part of ``fidelity.json``: ``count`` (``[retrain] seeds``); per replicate its seeds,
    orders, training cost and exact Shapley values per way; ``noise_floor`` (k ≥ 2, else ``None``): per
    retrained kind `valuation.retraining.fidelity.noise_floor` — retrain vs retrain under other seeds beside
    arithmetic vs retrain, with bootstrap uncertainty over eval pairs (``[retrain] bootstrap`` replicates)."""
    rcfg = config.retrain
    reps = run.replicates
    objectives = run.objectives

    def values(result: ValuationResult) -> dict[str, dict[str, float]]:
        return {
            o: {p: float(result.values[i, j]) for i, p in enumerate(run.players)}
            for j, o in enumerate(objectives)
        }

    noise: dict[str, Any] | None = None
    if len(reps) >= 2:
        noise = {}
        for kind in reps[0].variants:
            arith_scores = [r.arithmetic.pair_scores for r in reps]
            kind_scores = [r.variants[kind].pair_scores for r in reps]
            if any(s is None for s in (*arith_scores, *kind_scores)):
                raise RuntimeError("a replicate's table has no per-pair scores")
            noise[kind] = noise_floor(
                arith_scores,  # type: ignore[arg-type]
                kind_scores,  # type: ignore[arg-type]
                objectives,
                n_boot=rcfg.bootstrap,
                seed=rcfg.seed,
            )
    return {
        "count": len(reps),
        "replicates": [
            {
                "replicate": r.index,
                "training_seed": r.training_seed,
                "retrain_seed": r.retrain_seed,
                "orders": [list(o) for o in r.orders],
                "train_wall_time_s": round(r.train_wall_time_s, 3),
                "fine_tunings_trained_this_run": r.fine_tunings_trained,
                "values": {"arithmetic": values(r.arithmetic_result)}
                | {k: values(v) for k, v in r.results.items()},
            }
            for r in reps
        ],
        "bootstrap": {
            "replicates": rcfg.bootstrap,
            "seed": rcfg.seed,
            "over": "eval pairs (one draw for every model)",
        },
        "noise_floor": noise,
    }


def write_retrain(run: RetrainRun) -> dict[str, Path]:
    """Write the GAME.csv tables, retrain_coalitions.csv, the values JSON files and fidelity.json (atomic)."""
    import polars as pl

    files: dict[str, Path] = {}
    masks = all_coalitions(len(run.players))
    for name, variant in run.variants.items():
        stem = f"retrain_{name}" if name in ("sequential", "union") else name
        path = run.run_dir / f"game_{stem}.csv"
        TableGame(run.players, run.objectives, masks, variant.values).to_csv(path)
        files[f"game_{stem}"] = path
        vpath = run.run_dir / f"values_{stem}.json"
        atomic_write_text(vpath, json.dumps(run.results[name].to_json_dict(), indent=2) + "\n")
        files[f"values_{stem}"] = vpath

    columns: dict[str, Any] = {
        "coalition": [coalition_label(row, run.players) for row in masks],
        "size": masks.sum(axis=1).astype(np.int64),
    }
    for j, objective in enumerate(run.objectives):
        columns[f"{objective}_arithmetic"] = run.arithmetic.values[:, j]
        for name, variant in run.variants.items():
            columns[f"{objective}_{name}"] = variant.values[:, j]
            columns[f"{objective}_{name}_std_err"] = variant.std_errs[:, j]
            if variant.per_order is not None and variant.order_std is not None:
                columns[f"{objective}_{name}_order_std"] = variant.order_std[:, j]
                for r in range(variant.per_order.shape[0]):
                    columns[f"{objective}_{name}_order{r + 1}"] = variant.per_order[r, :, j]
        for rep in run.replicates[1:]:
            columns[f"{objective}_arithmetic_seed{rep.index}"] = rep.arithmetic.values[:, j]
            for name, variant in rep.variants.items():
                columns[f"{objective}_{name}_seed{rep.index}"] = variant.values[:, j]
    path = run.run_dir / "retrain_coalitions.csv"
    with atomic_path(path) as tmp:
        pl.DataFrame(columns).write_csv(tmp)
    files["retrain_coalitions"] = path
    path = run.run_dir / "fidelity.json"
    atomic_write_text(path, json.dumps(run.fidelity, indent=2, allow_nan=False) + "\n")
    files["fidelity"] = path
    return files
