"""Training the retraining baseline's coalition adapters: sequential DPO stages and union adapters.

* a **sequential stage** (`train_stage`) continues its prefix's adapter with DPO on the next source's pairs,
  always against the BASE model (adapter disabled) as the DPO reference. Stage 1 of every sequence is
  exactly the source's own adapter (same data, config and seed), so ``RUN/adapters/<source>`` is reused for it.
* a **union adapter** is one fresh adapter (`valuation.adapters.dpo.train_one_adapter`) on the shuffled union
  of the coalition's pairs (`valuation.retraining.plan.shuffled_union`). For |S| = 1 the union is the source's
  own adapter.

`train_coalition_adapters` trains every stage and union of a `valuation.retraining.plan.RetrainPlan` that is not
cached yet, under ``RUN/retrain/<kind>/<key>`` (peft dir + ``manifest.json`` with ``retrain_key``).

trl pitfall, handled deliberately: given a ``PeftModel`` to continue and no ``ref_model``, trl 1.16's
``DPOTrainer`` adds an adapter ``"ref"`` = a copy of the current adapter and uses it as the reference, so
the reference would be the PREVIOUS STAGE (first loss exactly log 2 = 0.6931). `train_stage` deletes that
adapter right after building the trainer (before the optimiser exists); trl then computes the reference
with all adapters disabled — the base model — and only the intended adapter is saved.

peft, transformers and trl are imported inside functions: importing them costs seconds (measured:
``import transformers, peft`` ≈ 4.8 s) and light commands must not pay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from valuation.adapters.config import TrainingConfig
from valuation.adapters.dpo import (
    dpo_arguments,
    dpo_dataset,
    float32,
    progress_callback,
    train_one_adapter,
    training_bars,
    training_metrics,
)
from valuation.adapters.store import (
    MANIFEST,
    AdapterRecord,
    new_manifest,
    read_adapter_manifest,
    remove_leftovers,
    staging_dirs,
    swap_into_place,
)
from valuation.composition.logprobs import PairLike
from valuation.errors import InputError
from valuation.files import atomic_write_json, sha256_json
from valuation.models import load_base_model
from valuation.models.cache import BaseModelRef
from valuation.models.quiet import quiet_libraries
from valuation.pipeline.inputs import PreparedInputs
from valuation.retraining.plan import Kind, RetrainPlan, shuffled_union, stage_key, union_key
from valuation.retraining.remote import RemoteJob, train_jobs_remote
from valuation.runtime.backend import LOCAL, Backend
from valuation.runtime.shipping import pack_dir


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


# ---------------------------------------------------------------------------------------------------
# one sequential stage


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
    this handles). Written atomically like `valuation.adapters.dpo.train_one_adapter`; returns the manifest
    (``format`` = ``payoutsim-adapter/1`` plus ``parent`` and the ``manifest_extra`` keys).
    """
    if not pairs:
        raise InputError(f"source {source!r} has no preference pairs to train on", field="data")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with staging_dirs(out_dir, "stage") as (tmp_adapter, tmp_trainer):
        peft_model, metrics = _continue_dpo(base, parent, pairs, config, tmp_trainer, callbacks)
        with quiet_libraries():
            peft_model.save_pretrained(tmp_adapter)
        extra = dict(manifest_extra or {})
        manifest = new_manifest(
            source=source,
            n_pairs=len(pairs),
            data_hash=extra.get("data_hash"),
            config=config,
            base=base,
            adapter_dir=tmp_adapter,
            metrics=metrics,
            started=started,
        )
        manifest |= {"parent": str(parent), **extra}
        atomic_write_json(tmp_adapter / MANIFEST, manifest, sort_keys=True)
        tmp_adapter.chmod(0o755)
        swap_into_place(tmp_adapter, out_dir)
        return manifest


def _continue_dpo(
    base: BaseModelRef,
    parent: Path,
    pairs: Sequence[PairLike],
    config: TrainingConfig,
    trainer_dir: Path,
    callbacks: Sequence[Any],
) -> tuple[Any, dict[str, Any]]:
    """Load base + the parent adapter (trainable, as ``"default"``) and run one DPO stage on it."""
    from peft import PeftModel
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    with quiet_libraries():
        model, tokenizer = load_base_model(base, dtype=float32())  # fp32 master weights
        model = PeftModel.from_pretrained(model, str(parent), adapter_name="default", is_trainable=True)
    dataset = dpo_dataset(tokenizer, pairs)
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
    return trainer.model, training_metrics(trainer, output, config, first_loss=True)


# ---------------------------------------------------------------------------------------------------
# every stage and union of a plan


@dataclass(frozen=True)
class CoalitionJob:
    """One coalition adapter still to train: its kind, sequence (sequential) or coalition (union), cache
    key and folder."""

    kind: Kind
    item: tuple[str, ...]
    key: str
    path: Path


def finished_manifest(path: Path, key: str) -> dict[str, Any] | None:
    """The manifest of the finished coalition adapter in ``path`` when it was trained under cache ``key``,
    else ``None`` (missing, or another key)."""
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
    backend: Backend = LOCAL,
) -> dict[Kind, dict[tuple[str, ...], RetrainedAdapter]]:
    """Train (or reuse) every stage and union adapter of ``plan`` under ``RUN/retrain/<kind>/<key>``.

    Returns per kind: sequence (sequential) or coalition (union) → adapter, including the length-1 entries
    that map to the per-source adapters. Cached adapters (same key, finished manifest) are not retrained.
    With a remote ``backend`` every job is a task (`valuation.retraining.remote`; ``callbacks`` are not used).
    """
    singles = {
        (s,): RetrainedAdapter(f"source:{s}", rec.path, rec.manifest, "source")
        for s, rec in source_adapters.items()
    }
    out: dict[Kind, dict[tuple[str, ...], RetrainedAdapter]] = {}
    jobs: list[CoalitionJob] = []
    for kind in kinds:
        out[kind] = dict(singles)
        jobs += _cached_or_todo(prepared, plan, kind, out[kind], config=config, seed=seed)

    bars = training_bars(progress, time_remaining=False)
    note = log or (lambda msg: bars.console.print(msg, markup=False, highlight=False))
    cached = sum(1 for kind in kinds for a in out[kind].values() if a.status == "cached")
    if cached:
        note(f"retrain: {cached} coalition adapters up to date (reused)")
    if backend.remote:

        def finished(job: CoalitionJob, manifest: dict[str, Any]) -> None:
            out[job.kind][job.item] = RetrainedAdapter(job.key, job.path, manifest, "trained")

        def describe(job: CoalitionJob, trained: Mapping[tuple[str, ...], RetrainedAdapter]) -> RemoteJob:
            return _remote_job(job, prepared, trained, config=config, seed=seed)

        train_jobs_remote(jobs, describe, out, finished, base=prepared.base, backend=backend, progress=progress)
        return out
    with bars:
        overall = bars.add_task("retraining coalition adapters", total=len(jobs))
        for job in jobs:
            label = ">".join(job.item) if job.kind == "sequential" else "+".join(job.item)
            task = bars.add_task(f"  {job.kind} {label}", total=None)
            job_callbacks = [*callbacks, progress_callback(bars, task)]
            manifest = _train_job(
                job, prepared, out[job.kind], config=config, seed=seed, callbacks=job_callbacks
            )
            out[job.kind][job.item] = RetrainedAdapter(job.key, job.path, manifest, "trained")
            bars.update(task, visible=False)
            bars.advance(overall)
    return out


def _cached_or_todo(
    prepared: PreparedInputs,
    plan: RetrainPlan,
    kind: Kind,
    found: dict[tuple[str, ...], RetrainedAdapter],
    *,
    config: TrainingConfig,
    seed: int,
) -> list[CoalitionJob]:
    """Prepare ``RUN/retrain/<kind>`` (leftovers of an interrupted run removed), add every finished adapter
    of ``kind`` to ``found`` (status ``"cached"``) and return the jobs still to train, in plan order."""
    folder = prepared.run_dir / "retrain" / kind
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    base_sha, hashes = prepared.base.sha256, prepared.data_hashes
    jobs: list[CoalitionJob] = []
    for item in plan.stages if kind == "sequential" else plan.unions:
        key = (
            stage_key(base_sha, config, item, hashes)
            if kind == "sequential"
            else union_key(base_sha, config, item, hashes, seed)
        )
        path = folder / key[:20]
        manifest = finished_manifest(path, key)
        if manifest is not None:
            found[item] = RetrainedAdapter(key, path, manifest, "cached")
        else:
            jobs.append(CoalitionJob(kind, item, key, path))
    return jobs


def _train_job(
    job: CoalitionJob,
    prepared: PreparedInputs,
    trained: Mapping[tuple[str, ...], RetrainedAdapter],
    *,
    config: TrainingConfig,
    seed: int,
    callbacks: Sequence[Any],
) -> dict[str, Any]:
    """Train one coalition adapter (a stage on top of ``trained[prefix]``, or a union); return its manifest."""
    hashes = prepared.data_hashes
    extra = {"retrain_key": job.key, "retrain_kind": job.kind}
    item = job.item
    if job.kind == "sequential":
        parent = trained[item[:-1]]
        return train_stage(
            prepared.base,
            parent.path,
            item[-1],
            prepared.train[item[-1]],
            config=config,
            out_dir=job.path,
            manifest_extra=extra
            | {"prefix": list(item), "data_hash": hashes[item[-1]], "parent_key": parent.key},
            callbacks=callbacks,
        )
    train_one_adapter(
        prepared.base,
        "+".join(item),
        shuffled_union(prepared.train, item, seed),
        data_hash=sha256_json([hashes[s] for s in item]),
        config=config,
        out_dir=job.path,
        callbacks=callbacks,
    )
    return add_to_manifest(job.path, extra | {"coalition": list(item), "shuffle_seed": seed})


def _remote_job(
    job: CoalitionJob,
    prepared: PreparedInputs,
    trained: Mapping[tuple[str, ...], RetrainedAdapter],
    *,
    config: TrainingConfig,
    seed: int,
) -> RemoteJob:
    """`_train_job`'s arguments as data for a task (the parent adapter's files instead of its folder)."""
    hashes = prepared.data_hashes
    extra = {"retrain_key": job.key, "retrain_kind": job.kind}
    item = job.item
    if job.kind == "sequential":
        parent = trained[item[:-1]]
        extra |= {"prefix": list(item), "data_hash": hashes[item[-1]], "parent_key": parent.key}
        return RemoteJob(job.kind, ">".join(item), item[-1], list(prepared.train[item[-1]]), hashes[item[-1]],
                         config, extra | {"parent": str(parent.path)}, pack_dir(parent.path), train_stage)
    return RemoteJob(job.kind, "+".join(item), "+".join(item), list(shuffled_union(prepared.train, item, seed)),
                     sha256_json([hashes[s] for s in item]), config,
                     extra | {"coalition": list(item), "shuffle_seed": seed}, None)


def add_to_manifest(adapter_dir: Path, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``extra``'s keys to the manifest of the finished adapter in ``adapter_dir`` (rewritten atomically);
    return the updated manifest."""
    manifest = read_adapter_manifest(adapter_dir) or {}
    manifest.update(extra)
    atomic_write_json(adapter_dir / MANIFEST, manifest, sort_keys=True)
    return manifest
