"""The retraining baseline: real coalition adapters, to check language-model arithmetic against.

For every coalition S with |S| ≥ 2 (n ≤ ``[retrain] max_sources``) two kinds of real models are trained
with the same DPO + LoRA settings as the per-source adapters (`valuation.adapters.training`):

* **sequential** — DPO over S's sources one after the other, each stage continuing the previous stage's
  adapter on the next source's pairs, always against the BASE model (adapter disabled) as the DPO reference.
  That is the procedure whose optimum the ``sum`` weighting describes (r_S = Σ_{ℓ∈S} r_ℓ), but real
  training is order-dependent, so S is trained in R random orders (``[retrain] orders``). The orders are R
  random permutations π_1..π_R of all n sources (seeded by ``[retrain] seed``); coalition S's r-th order is
  π_r restricted to S — a uniformly random order of S. Restricting shared permutations makes prefixes
  shared: the sequence of S is a prefix of the sequence of S ∪ {later sources}, so each distinct sequence
  is ONE stage on top of its (already trained) prefix. A stage adapter is cached under the hash of
  (base model, training config, its prefix of (source, data hash)); training is deterministic for fixed
  seeds, so a cached prefix is reused, never retrained. Stage 1 of every sequence is exactly the source's
  own adapter (same data, config and seed), so ``RUN/adapters/<source>`` is reused for it.
* **union** — one fresh adapter on the shuffled union of S's pairs (shuffled with ``[retrain] seed``).
  For |S| = 1 the union is the source's own adapter.

trl pitfall, handled deliberately: given a ``PeftModel`` to continue and no ``ref_model``, trl 1.16's
``DPOTrainer`` adds an adapter ``"ref"`` = a copy of the current adapter and uses it as the reference, so
the reference would be the PREVIOUS STAGE (first loss exactly log 2 = 0.6931). `train_stage` deletes that
adapter right after building the trainer (before the optimiser exists); trl then computes the reference
with all adapters disabled — the base model — and only the intended adapter is saved.

Utilities are the SAME ``preference`` utility (``[utility] metric``, β) on the SAME eval sets as the
arithmetic path — also when ``[utility] kind = "reward"`` values the arithmetic run: a retrained
model π_S is scored by its implicit reward relative to the base, margin m_S = (log π_S(y_w) − log π₀(y_w))
− (log π_S(y_l) − log π₀(y_l)), then σ(β·m_S) / accuracy / log σ averaged over pairs. The sequential
utility of S is the mean over its R orders; the order sensitivity is the standard deviation across orders
(ddof = 1). Optionally (``[retrain] merge``) a third, training-free comparison merges the per-source
adapters' weights (`valuation.adapters.merge`).

Run directory additions::

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
                                 eval set), the load average and this run's timings

Fidelity (`utility_fidelity`, `shapley_fidelity`): Pearson r of u_arith(S) vs u_variant(S) over the
non-empty coalitions (``utility_pearson``; singletons are identical by construction for sequential/union)
and over |S| ≥ 2 only (``utility_pearson_multi``), max/mean |Δu|; of the exact Shapley values: Spearman ρ
across players, max |φ_arith − φ_variant| and the fraction of players whose values have the same sign.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from valuation.adapters.training import (
    ADAPTER_FORMAT,
    ADAPTER_WEIGHTS,
    MANIFEST,
    TrainingConfig,
    read_adapter_manifest,
    sha256_file,
    sha256_json,
    train_one_adapter,
)
from valuation.errors import InputError

if TYPE_CHECKING:
    from valuation.adapters.training import AdapterRecord, BaseModelRef, PairLike
    from valuation.composition.logprobs import EvalLogProbs, ResponseLogProbs
    from valuation.games.result import ValuationResult
    from valuation.pipeline.config import ValuationConfig
    from valuation.pipeline.inputs import PreparedInputs
    from valuation.pipeline.outcome import ValuationRun
    from valuation.pipeline.tables import CoalitionTable

FIDELITY_FORMAT = "payoutsim-fidelity/1"
Kind = Literal["sequential", "union"]


# ---------------------------------------------------------------------------------------------------
# plan: orders, sequences, shared prefixes


def random_orders(sources: Sequence[str], orders: int, seed: int) -> list[tuple[str, ...]]:
    """``orders`` random permutations of all sources (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return [tuple(sources[i] for i in rng.permutation(len(sources))) for _ in range(orders)]


def restrict(order: Sequence[str], coalition: Sequence[str]) -> tuple[str, ...]:
    """The sources of ``coalition`` in the order they appear in ``order``."""
    members = set(coalition)
    return tuple(s for s in order if s in members)


@dataclass(frozen=True)
class RetrainPlan:
    """What the baseline trains: per coalition (|S| ≥ 2) its sequence per order, the distinct stages and unions.

    ``stages`` are the distinct sequences of length ≥ 2 (prefix-closed, sorted by length so every stage's
    parent comes first); each is one DPO stage on top of its prefix. ``unions`` are the coalitions.
    """

    sources: tuple[str, ...]
    orders: tuple[tuple[str, ...], ...]
    coalitions: tuple[tuple[str, ...], ...]
    sequences: dict[tuple[str, ...], tuple[tuple[str, ...], ...]]
    stages: tuple[tuple[str, ...], ...]

    @property
    def unions(self) -> tuple[tuple[str, ...], ...]:
        return self.coalitions

    def stages_without_prefix_reuse(self) -> int:
        """Σ over coalitions and orders of |S| − 1: the stages needed if no prefix were shared (singletons
        still reused), for comparison with ``len(stages)``."""
        return sum(len(seq) - 1 for seqs in self.sequences.values() for seq in seqs)


def plan_retrain(sources: Sequence[str], orders: Sequence[Sequence[str]]) -> RetrainPlan:
    """Coalitions of size ≥ 2 (in `valuation.games.game.all_coalitions` order), their sequences, the stages."""
    from valuation.games.game import all_coalitions

    sources = tuple(sources)
    for order in orders:
        if sorted(order) != sorted(sources):
            raise ValueError(f"order {order} is not a permutation of the sources {sources}")
    coalitions = tuple(
        tuple(s for s, present in zip(sources, row, strict=True) if present)
        for row in all_coalitions(len(sources))
        if row.sum() >= 2
    )
    sequences = {c: tuple(restrict(order, c) for order in orders) for c in coalitions}
    stages: dict[tuple[str, ...], None] = {}
    for seqs in sequences.values():
        for seq in seqs:
            for end in range(2, len(seq) + 1):
                stages[seq[:end]] = None
    ordered = tuple(sorted(stages, key=len))  # stable: first-need order within a length
    return RetrainPlan(sources, tuple(tuple(o) for o in orders), coalitions, sequences, ordered)


def stage_key(
    base_sha256: str, config: TrainingConfig, prefix: Sequence[str], data_hashes: Mapping[str, str]
) -> str:
    """Cache key of a sequential stage: SHA-256 over (base, training config, [(source, data hash)…])."""
    return sha256_json(
        {
            "kind": "sequential",
            "base": base_sha256,
            "training": config.config_hash(),
            "prefix": [[s, data_hashes[s]] for s in prefix],
        }
    )


def union_key(
    base_sha256: str,
    config: TrainingConfig,
    coalition: Sequence[str],
    data_hashes: Mapping[str, str],
    seed: int,
) -> str:
    """Cache key of a union adapter: SHA-256 over (base, training config, sources + data hashes, shuffle seed)."""
    return sha256_json(
        {
            "kind": "union",
            "base": base_sha256,
            "training": config.config_hash(),
            "sources": [[s, data_hashes[s]] for s in coalition],
            "shuffle_seed": seed,
        }
    )


def shuffled_union(
    data: Mapping[str, Sequence[PairLike]], coalition: Sequence[str], seed: int
) -> list[PairLike]:
    """The pairs of ``coalition``'s sources concatenated (in the given order), then permuted with ``seed``."""
    pairs = [p for s in coalition for p in data[s]]
    perm = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in perm]


# ---------------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class RetrainedAdapter:
    """A finished coalition adapter (fits `valuation.composition.logprobs.AdapterRef`)."""

    key: str
    path: Path
    manifest: dict[str, Any]
    status: Literal["trained", "cached", "source"]  # "source": the per-source adapter, reused

    @property
    def sha256(self) -> str:
        return str(self.manifest["adapter_sha256"])

    @property
    def wall_time_s(self) -> float:
        return float(self.manifest.get("wall_time_s") or 0.0)


def train_stage(
    base: BaseModelRef,
    parent: Path,
    source: str,
    pairs: Sequence[PairLike],
    *,
    config: TrainingConfig,
    out_dir: Path,
    manifest_extra: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Continue the adapter in ``parent`` with DPO on ``pairs`` against the BASE model; save to ``out_dir``.

    The reference is the base with every adapter disabled (see the module docstring for the trl pitfall
    this handles). Written atomically like `valuation.adapters.training.train_one_adapter`; returns the manifest
    (``format`` = ``payoutsim-adapter/1`` plus the ``manifest_extra`` keys).
    """
    if not pairs:
        raise InputError(f"source {source!r} has no preference pairs to train on", field="data")
    from valuation.adapters.training import _swap_into_place, _versions, quiet_libraries

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp_adapter = Path(tempfile.mkdtemp(prefix=".tmp-stage-", dir=out_dir.parent))
    tmp_trainer = Path(tempfile.mkdtemp(prefix=".trainer-stage-", dir=out_dir.parent))
    try:
        peft_model, metrics = _continue_dpo(base, parent, pairs, config, tmp_trainer, callbacks)
        with quiet_libraries():
            peft_model.save_pretrained(tmp_adapter)
        manifest = {
            "format": ADAPTER_FORMAT,
            "source": source,
            "n_pairs": len(pairs),
            "data_hash": (manifest_extra or {}).get("data_hash"),
            "config_hash": config.config_hash(),
            "training": config.model_dump(mode="json"),
            "base_model": {"name": base.name, "sha256": base.sha256, "preset": getattr(base, "preset", None)},
            "parent": str(parent),
            "adapter_sha256": sha256_file(tmp_adapter / ADAPTER_WEIGHTS),
            "metrics": metrics,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            **dict(manifest_extra or {}),
        }
        from valuation.files import atomic_write_json

        atomic_write_json(tmp_adapter / MANIFEST, manifest, sort_keys=True)
        tmp_adapter.chmod(0o755)
        _swap_into_place(tmp_adapter, out_dir)
        return manifest
    finally:
        shutil.rmtree(tmp_trainer, ignore_errors=True)
        shutil.rmtree(tmp_adapter, ignore_errors=True)


def _continue_dpo(
    base: BaseModelRef,
    parent: Path,
    pairs: Sequence[PairLike],
    config: TrainingConfig,
    trainer_dir: Path,
    callbacks: Sequence[Any],
) -> tuple[Any, dict[str, Any]]:
    """Load base + the parent adapter (trainable, as ``"default"``) and run one DPO stage on it."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    from valuation.adapters.training import dpo_arguments, quiet_libraries
    from valuation.composition.logprobs import has_chat_template, to_trl_example
    from valuation.models import load_base_model

    with quiet_libraries():
        model, tokenizer = load_base_model(base)
        model = PeftModel.from_pretrained(model, str(parent), adapter_name="default", is_trainable=True)
    chat = has_chat_template(tokenizer)
    dataset = Dataset.from_list([to_trl_example(p, chat=chat) for p in pairs])
    with quiet_libraries():
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=dpo_arguments(config, trainer_dir, len(pairs), precompute=False),  # see dpo_arguments
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )
        # trl added "ref" (a copy of the parent adapter) as the reference; drop it so the reference is the
        # base with adapters disabled. The optimiser is built in train(), after this, so "ref" never trains.
        if "ref" in model.peft_config:
            model.delete_adapter("ref")
        if set(model.peft_config) != {"default"}:
            raise RuntimeError(f"unexpected adapters on the stage model: {sorted(model.peft_config)}")
        trainer.remove_callback(PrinterCallback)
        output = trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "epochs": float(config.epochs),
    }
    if logs:
        metrics["first_loss"] = float(logs[0]["loss"])
        for key, name in (
            ("loss", "final_loss"),
            ("rewards/accuracies", "final_reward_accuracy"),
            ("rewards/margins", "final_reward_margin"),
        ):
            if key in logs[-1]:
                metrics[name] = float(logs[-1][key])
    return trainer.model, metrics


def _finished(path: Path, key: str) -> dict[str, Any] | None:
    manifest = read_adapter_manifest(path)
    if manifest is None or manifest.get("retrain_key") != key:
        return None
    return manifest


def train_coalition_adapters(
    prepared: PreparedInputs,
    source_adapters: Mapping[str, AdapterRecord],
    plan: RetrainPlan,
    *,
    config: TrainingConfig,
    seed: int,
    kinds: Sequence[Kind] = ("sequential", "union"),
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
) -> dict[Kind, dict[tuple[str, ...], RetrainedAdapter]]:
    """Train (or reuse) every stage and union adapter of ``plan`` under ``RUN/retrain/<kind>/<key>``.

    Returns per kind: sequence (sequential) or coalition (union) → adapter, including the length-1 entries
    that map to the per-source adapters. Cached adapters (same key, finished manifest) are not retrained.
    """
    from valuation.adapters.training import _progress_callback, _remove_leftovers

    base = prepared.base
    hashes = prepared.data_hashes
    root = prepared.run_dir / "retrain"
    out: dict[Kind, dict[tuple[str, ...], RetrainedAdapter]] = {}
    singles = {
        (s,): RetrainedAdapter(f"source:{s}", rec.path, rec.manifest, "source")
        for s, rec in source_adapters.items()
    }
    jobs: list[tuple[Kind, tuple[str, ...], str, Path]] = []
    for kind in kinds:
        (root / kind).mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root / kind)
        out[kind] = dict(singles)
        items = plan.stages if kind == "sequential" else plan.unions
        for item in items:
            key = (
                stage_key(base.sha256, config, item, hashes)
                if kind == "sequential"
                else union_key(base.sha256, config, item, hashes, seed)
            )
            path = root / kind / key[:20]
            manifest = _finished(path, key)
            if manifest is not None:
                out[kind][item] = RetrainedAdapter(key, path, manifest, "cached")
            else:
                jobs.append((kind, item, key, path))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    note = log or (lambda msg: bars.console.print(msg, highlight=False))
    cached = sum(1 for kind in kinds for a in out[kind].values() if a.status == "cached")
    if cached:
        note(f"retrain: {cached} coalition adapters up to date (reused)")
    with bars:
        overall = bars.add_task("retraining coalition adapters", total=len(jobs))
        for kind, item, key, path in jobs:
            label = ">".join(item) if kind == "sequential" else "+".join(item)
            task = bars.add_task(f"  {kind} {label}", total=None)
            extra_cbs = [*callbacks, _progress_callback(bars, task)]
            extra = {"retrain_key": key, "retrain_kind": kind}
            if kind == "sequential":
                parent = out[kind][item[:-1]]
                manifest = train_stage(
                    base,
                    parent.path,
                    item[-1],
                    prepared.train[item[-1]],
                    config=config,
                    out_dir=path,
                    manifest_extra=extra
                    | {"prefix": list(item), "data_hash": hashes[item[-1]], "parent_key": parent.key},
                    callbacks=extra_cbs,
                )
            else:
                pairs = shuffled_union(prepared.train, item, seed)
                train_one_adapter(
                    base,
                    "+".join(item),
                    pairs,
                    data_hash=sha256_json([hashes[s] for s in item]),
                    config=config,
                    out_dir=path,
                    callbacks=extra_cbs,
                )
                manifest = _add_to_manifest(path, extra | {"coalition": list(item), "shuffle_seed": seed})
            out[kind][item] = RetrainedAdapter(key, path, manifest, "trained")
            bars.update(task, visible=False)
            bars.advance(overall)
    return out


def _add_to_manifest(adapter_dir: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    from valuation.files import atomic_write_json

    manifest = read_adapter_manifest(adapter_dir) or {}
    manifest.update(extra)
    atomic_write_json(adapter_dir / MANIFEST, manifest, sort_keys=True)
    return manifest


# ---------------------------------------------------------------------------------------------------
# utilities of retrained models


def model_margins(table: EvalLogProbs, logps: ResponseLogProbs) -> np.ndarray:
    """m[p] = (log π(y_w) − log π₀(y_w)) − (log π(y_l) − log π₀(y_l)) of one model on one eval set."""
    return (logps.chosen - table.base.chosen) - (logps.rejected - table.base.rejected)


@dataclass(frozen=True)
class VariantTable:
    """Utilities of one retrained (or merged) variant over all 2^n coalitions, per objective.

    ``values``/``std_errs`` are ``[2^n, m]``; ``per_order`` is ``[R, 2^n, m]`` (sequential only) and
    ``order_std`` its standard deviation across orders (ddof 1; 0 with one order).
    """

    name: str
    values: np.ndarray
    std_errs: np.ndarray
    per_order: np.ndarray | None = None
    order_std: np.ndarray | None = None


def variant_table(
    name: str,
    players: Sequence[str],
    tables: Mapping[str, EvalLogProbs],
    margins_of: Callable[[str, tuple[str, ...], int], np.ndarray],
    *,
    n_orders: int,
    metric: str,
    beta: float,
) -> VariantTable:
    """Score every coalition: ``margins_of(objective, coalition, order)`` gives its per-pair margins.

    The per-pair score (`valuation.coalition_utility.utilities.pair_scores`) is averaged over orders, then over pairs; the
    standard error is that of the mean over pairs of the order-averaged scores.
    """
    from valuation.coalition_utility.utilities import pair_scores
    from valuation.games.game import all_coalitions

    masks = all_coalitions(len(players))
    objectives = list(tables)
    k, m = masks.shape[0], len(objectives)
    per_order = np.zeros((n_orders, k, m))
    values, std_errs = np.zeros((k, m)), np.zeros((k, m))
    for j, objective in enumerate(objectives):
        n_pairs = len(tables[objective].base)
        for i, row in enumerate(masks):
            coalition = tuple(p for p, present in zip(players, row, strict=True) if present)
            scores = np.stack(
                [pair_scores(margins_of(objective, coalition, r), metric, beta) for r in range(n_orders)]
            )
            per_order[:, i, j] = scores.mean(axis=1)
            mean_scores = scores.mean(axis=0)
            values[i, j] = mean_scores.mean()
            std_errs[i, j] = mean_scores.std(ddof=1) / np.sqrt(n_pairs) if n_pairs > 1 else 0.0
    order_std = per_order.std(axis=0, ddof=1) if n_orders > 1 else np.zeros((k, m))
    return VariantTable(name, values, std_errs, per_order if n_orders > 1 else None, order_std)


# ---------------------------------------------------------------------------------------------------
# fidelity


def _nan_to_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def utility_fidelity(reference: np.ndarray, other: np.ndarray, sizes: np.ndarray) -> dict[str, float | None]:
    """Agreement of two utility columns over the same coalitions (``sizes`` = |S| per row).

    ``utility_pearson``: Pearson r over the non-empty coalitions; ``utility_pearson_multi``: over |S| ≥ 2;
    ``utility_max_abs_diff`` / ``utility_mean_abs_diff``: over the non-empty coalitions. A correlation of
    a constant column is undefined (``None``).
    """
    ref, oth, sizes = np.asarray(reference, float), np.asarray(other, float), np.asarray(sizes)
    nonempty, multi = sizes >= 1, sizes >= 2
    diff = np.abs(ref[nonempty] - oth[nonempty])
    return {
        "utility_pearson": _pearson(ref[nonempty], oth[nonempty]),
        "utility_pearson_multi": _pearson(ref[multi], oth[multi]),
        "utility_max_abs_diff": _nan_to_none(diff.max()) if diff.size else None,
        "utility_mean_abs_diff": _nan_to_none(diff.mean()) if diff.size else None,
    }


def shapley_fidelity(reference: np.ndarray, other: np.ndarray) -> dict[str, float | None]:
    """Agreement of two value vectors over the same players.

    ``shapley_spearman``: Spearman ρ (rank correlation; ``None`` when a vector is constant or n < 2);
    ``shapley_max_abs_diff``: max_i |φ_i − φ'_i|; ``shapley_sign_agreement``: the fraction of players with
    sign(φ_i) = sign(φ'_i) (0 counts as its own sign).
    """
    ref, oth = np.asarray(reference, float), np.asarray(other, float)
    return {
        "shapley_spearman": _spearman(ref, oth),
        "shapley_max_abs_diff": float(np.max(np.abs(ref - oth))) if ref.size else None,
        "shapley_sign_agreement": float(np.mean(np.sign(ref) == np.sign(oth))) if ref.size else None,
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import pearsonr

    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return _nan_to_none(float(pearsonr(a, b).statistic))


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _nan_to_none(float(spearmanr(a, b).statistic))


def fidelity_metrics(
    objectives: Sequence[str],
    sizes: np.ndarray,
    reference_values: np.ndarray,
    reference_shapley: np.ndarray,
    variant_values: np.ndarray,
    variant_shapley: np.ndarray,
) -> dict[str, dict[str, float | None]]:
    """Per objective: `utility_fidelity` of the ``[2^n, m]`` tables and `shapley_fidelity` of the ``[n, m]``
    values (reference = arithmetic)."""
    return {
        objective: utility_fidelity(reference_values[:, j], variant_values[:, j], sizes)
        | shapley_fidelity(reference_shapley[:, j], variant_shapley[:, j])
        for j, objective in enumerate(objectives)
    }


# ---------------------------------------------------------------------------------------------------
# the run


@dataclass
class RetrainRun:
    """The outcome of `run_retrain`: arithmetic and variant tables, their Shapley values and the report."""

    run_dir: Path
    players: tuple[str, ...]
    objectives: tuple[str, ...]
    arithmetic: VariantTable
    arithmetic_result: ValuationResult
    variants: dict[str, VariantTable]
    results: dict[str, ValuationResult]
    fidelity: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def run_retrain(
    config: ValuationConfig,
    *,
    arithmetic: ValuationRun | None = None,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
) -> RetrainRun:
    """The retraining baseline for ``config``; see the module docstring for what is trained and written.

    Args:
        config: the valuation config (its ``[retrain]`` table: orders, seed, sequential, union, merge,
            max_sources).
        arithmetic: the arithmetic run of the same config (``--mode both``); computed here when ``None``
            (per-source adapters trained if missing, log-probs from the cache; nothing of it is written).
        retrain: retrain stale per-source adapters instead of raising `InputError` (``--retrain``).
        callbacks: extra ``TrainerCallback`` objects for every coalition training (tests count trainings).

    Raises:
        InputError: more sources than ``[retrain] max_sources`` (checked before anything is trained).
    """
    from valuation.composition.logprobs import compute_eval_logprobs
    from valuation.games.estimators import approximate
    from valuation.games.game import TableGame, all_coalitions
    from valuation.pipeline.inputs import prepare_inputs
    from valuation.pipeline.run import run_train
    from valuation.pipeline.tables import coalition_table

    rcfg = config.retrain
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prepared = arithmetic.prepared if arithmetic is not None else prepare_inputs(config, progress=progress)
    sources = prepared.sources
    n = len(sources)
    if n > rcfg.max_sources:
        raise InputError(
            f"the retraining baseline trains every coalition: {n} sources need {2**n - 1} coalition models, "
            f"more than [retrain] max_sources = {rcfg.max_sources} allows; value fewer sources or raise the limit",
            file=config.config_path,
            field="retrain.max_sources",
        )
    if arithmetic is not None:
        source_adapters = arithmetic.adapters
    else:
        _, source_adapters = run_train(config, retrain=retrain, progress=progress, log=log, prepared=prepared)

    t0 = time.perf_counter()
    score_kwargs = {
        "cache_dir": prepared.run_dir / "cache" / "logprobs",
        "max_length": config.training.max_length,
        "batch_size": config.eval.batch_size,
        "progress": progress,
    }
    report = compute_eval_logprobs(prepared.base, source_adapters, prepared.eval_sets, **score_kwargs)  # type: ignore[arg-type]
    masks = all_coalitions(n)
    sizes = masks.sum(axis=1)
    objectives = tuple(report.tables)
    ctable: CoalitionTable = coalition_table(
        report.tables,
        sources,
        masks,
        weighting=config.arithmetic.weighting,
        sizes=[len(prepared.train[s]) for s in sources],
        metric=config.utility.metric,
        beta=config.utility_beta,
    )
    arith = VariantTable("arithmetic", ctable.values, ctable.std_errs)
    timings["arithmetic_score_s"] = time.perf_counter() - t0

    def exact(values: np.ndarray) -> ValuationResult:
        return approximate(TableGame(sources, objectives, masks, values), "exact")

    arith_result = exact(arith.values)
    orders = random_orders(sources, rcfg.orders, rcfg.seed)
    plan = plan_retrain(sources, orders)
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
    )
    timings["retrain_train_s"] = time.perf_counter() - t0

    variants: dict[str, VariantTable] = {}
    ways: dict[str, dict[str, Any]] = {
        "arithmetic": {
            "fine_tunings": n,
            "train_wall_time_s": round(sum(_wall(r.manifest) for r in source_adapters.values()), 3),
            "score_wall_time_s": round(timings["arithmetic_score_s"], 3),
            "forward_passes_per_eval_set": n + 1,
        }
    }
    for kind in kinds:
        t0 = time.perf_counter()
        kind_adapters = adapters[kind]
        refs = {a.key: a for a in kind_adapters.values() if a.status != "source"}
        kreport = compute_eval_logprobs(prepared.base, refs, prepared.eval_sets, **score_kwargs)  # type: ignore[arg-type]
        margins_of = _retrained_margins(report.tables, kreport.tables, kind_adapters, plan, kind)
        n_orders = rcfg.orders if kind == "sequential" else 1
        variants[kind] = variant_table(
            kind,
            sources,
            report.tables,
            margins_of,
            n_orders=n_orders,
            metric=config.utility.metric,
            beta=config.utility_beta,
        )
        needed = [a for a in kind_adapters.values() if a.status != "source"]
        ways[kind] = {
            "fine_tunings": n + len(needed),
            "fine_tunings_shared_with_arithmetic": n,
            "fine_tunings_trained_this_run": sum(1 for a in needed if a.status == "trained"),
            "train_wall_time_s": round(
                ways["arithmetic"]["train_wall_time_s"] + sum(a.wall_time_s for a in needed), 3
            ),
            "optimizer_steps": int(sum(int(a.manifest.get("metrics", {}).get("steps", 0)) for a in needed)),
            "score_wall_time_s": round(time.perf_counter() - t0, 3),
            "forward_passes_per_eval_set": n + 1 + len(needed),
        }
        if kind == "sequential":
            ways[kind]["stages_without_prefix_reuse"] = n + plan.stages_without_prefix_reuse()
            ways[kind]["orders"] = [list(o) for o in plan.orders]

    merge_report: dict[str, Any] | None = None
    if rcfg.merge != "none":
        from valuation.adapters.merge import merged_coalition_logprobs

        t0 = time.perf_counter()
        coalitions = [tuple(s for s, p in zip(sources, row, strict=True) if p) for row in masks if row.any()]
        merged = merged_coalition_logprobs(
            prepared.base,
            source_adapters,
            coalitions,
            prepared.eval_sets,
            combination=rcfg.merge,
            **score_kwargs,
        )
        name = f"merge_{rcfg.merge}"

        def merged_margins(objective: str, coalition: tuple[str, ...], _r: int) -> np.ndarray:
            table = report.tables[objective]
            if not coalition:
                return np.zeros(len(table.base))
            return model_margins(table, merged[objective][coalition])

        variants[name] = variant_table(
            name,
            sources,
            report.tables,
            merged_margins,
            n_orders=1,
            metric=config.utility.metric,
            beta=config.utility_beta,
        )
        ways[name] = {
            "fine_tunings": n,
            "fine_tunings_shared_with_arithmetic": n,
            "train_wall_time_s": ways["arithmetic"]["train_wall_time_s"],
            "merged_models": len(coalitions),
            "score_wall_time_s": round(time.perf_counter() - t0, 3),
            "forward_passes_per_eval_set": n + 1 + len(coalitions),
        }
        merge_report = _merge_vs_arithmetic(report.tables, sources, merged)

    results = {name: exact(v.values) for name, v in variants.items()}
    timings["total_s"] = time.perf_counter() - started
    fidelity = {
        "format": FIDELITY_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference": "arithmetic",
        "players": list(sources),
        "objectives": list(objectives),
        "utility": {
            "kind": "preference",  # always: the retrained models are scored like the arithmetic ones
            "metric": config.utility.metric,
            "beta": config.utility_beta,
        },
        "weighting": config.arithmetic.weighting,
        "retrain": rcfg.model_dump(mode="json"),
        "variants": {
            name: {
                "objectives": fidelity_metrics(
                    objectives, sizes, arith.values, arith_result.values, v.values, results[name].values
                ),
                "max_order_std": (
                    {o: float(v.order_std[:, j].max()) for j, o in enumerate(objectives)}
                    if v.order_std is not None and v.per_order is not None
                    else None
                ),
            }
            for name, v in variants.items()
        },
        "cost": ways,
        "merge_vs_arithmetic_pairs": merge_report,
        "timings": {k: round(val, 3) for k, val in timings.items()},
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
    }
    run = RetrainRun(
        prepared.run_dir, tuple(sources), objectives, arith, arith_result, variants, results, fidelity
    )
    run.files = write_retrain(run)
    return run


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


def _wall(manifest: Mapping[str, Any]) -> float:
    return float(manifest.get("wall_time_s") or 0.0)


def _merge_vs_arithmetic(
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


def write_retrain(run: RetrainRun) -> dict[str, Path]:
    """Write the GAME.csv tables, retrain_coalitions.csv, the values JSON files and fidelity.json (atomic)."""
    import json

    import polars as pl

    from valuation.files import atomic_path, atomic_write_text
    from valuation.games.game import TableGame, all_coalitions, coalition_label

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
    path = run.run_dir / "retrain_coalitions.csv"
    with atomic_path(path) as tmp:
        pl.DataFrame(columns).write_csv(tmp)
    files["retrain_coalitions"] = path
    path = run.run_dir / "fidelity.json"
    atomic_write_text(path, json.dumps(run.fidelity, indent=2, allow_nan=False) + "\n")
    files["fidelity"] = path
    return files


def fidelity_rows(fidelity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (variant, objective, fine-tunings, train wall time, metrics) for a summary table."""
    rows = []
    cost = fidelity.get("cost", {})
    for name, variant in fidelity["variants"].items():
        for objective, metrics in variant["objectives"].items():
            rows.append(
                {
                    "variant": name,
                    "objective": objective,
                    "fine_tunings": cost.get(name, {}).get("fine_tunings"),
                    "train_wall_time_s": cost.get(name, {}).get("train_wall_time_s"),
                    **metrics,
                }
            )
    return rows


__all__ = [
    "FIDELITY_FORMAT",
    "RetrainPlan",
    "RetrainRun",
    "RetrainedAdapter",
    "VariantTable",
    "fidelity_metrics",
    "fidelity_rows",
    "plan_retrain",
    "random_orders",
    "restrict",
    "run_retrain",
    "shapley_fidelity",
    "shuffled_union",
    "stage_key",
    "train_coalition_adapters",
    "train_stage",
    "union_key",
    "utility_fidelity",
    "variant_table",
    "write_retrain",
]
