"""The retraining baseline's coalition trainings as remote tasks (`valuation.runtime.backend`).

`train_jobs_remote` runs the jobs of `valuation.retraining.stages.train_coalition_adapters` in waves of equal
coalition size: union adapters depend on nothing, and a sequential stage of length k continues the stage of
length k − 1 of its order, finished in the previous wave (or the per-source adapter for k = 2). Each job is
one task (`retrain_job_task`) that receives its parent adapter and its pairs as data and returns the adapter
as bytes; the driver writes it into ``RUN/retrain/<kind>/<key>`` the moment it arrives, so an interrupted run
keeps every finished job. The job's training is exactly the local one (`train_stage` or `train_one_adapter`
with the same manifest keys).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuation.adapters.config import TrainingConfig
from valuation.adapters.dpo import TrainedAdapter, install_adapter, ship_base, train_one_adapter
from valuation.adapters.store import MANIFEST
from valuation.files import atomic_write_json
from valuation.runtime.backend import Backend
from valuation.runtime.shipping import DirPayload, ShippedModel, materialise_base_model, pack_dir, unpack_dir


@dataclass(frozen=True)
class RemoteJob:
    """One coalition adapter for a task: a sequential stage (``parent`` set) or a union adapter."""

    kind: str
    label: str
    source: str
    pairs: list[Any]
    data_hash: str | None
    config: TrainingConfig
    manifest_extra: dict[str, Any]
    parent: DirPayload | None
    #: `valuation.retraining.stages.train_stage` for a stage (passed by reference: stages imports this module)
    train_stage: Callable[..., dict[str, Any]] | None = None


def retrain_job_task(job: RemoteJob, base: ShippedModel) -> TrainedAdapter:
    """A task's body: train one stage (on its parent, written to a temp dir) or one union adapter."""
    info = materialise_base_model(base)
    with tempfile.TemporaryDirectory(prefix="payoutsim-retrain-") as tmp:
        out_dir = Path(tmp) / "adapter"
        if job.parent is not None and job.train_stage is not None:
            parent = unpack_dir(job.parent, Path(tmp) / "parent")
            manifest = job.train_stage(
                info, parent, job.source, job.pairs, config=job.config, out_dir=out_dir,
                manifest_extra=job.manifest_extra,
            )
        else:
            manifest = train_one_adapter(
                info, job.source, job.pairs, data_hash=job.data_hash or "", config=job.config, out_dir=out_dir
            )
            manifest.update(job.manifest_extra)
            atomic_write_json(out_dir / MANIFEST, manifest, sort_keys=True)
        return TrainedAdapter(manifest, pack_dir(out_dir))


def train_jobs_remote(
    jobs: Sequence[Any],
    describe: Callable[[Any, Mapping[tuple[str, ...], Any]], RemoteJob],
    trained: Mapping[str, dict[tuple[str, ...], Any]],
    finished: Callable[[Any, dict[str, Any]], None],
    *,
    base: Any,
    backend: Backend,
    progress: bool,
) -> None:
    """Run ``jobs`` (each with ``kind``, ``item``, ``path``) in waves of ``len(item)``: ``describe(job,
    trained[job.kind])`` builds its `RemoteJob` once its wave starts; ``finished(job, manifest)`` is called
    as each adapter is installed at ``job.path``."""
    if not jobs:
        return
    shared = ship_base(backend, base)
    for size in sorted({len(job.item) for job in jobs}):
        wave = [job for job in jobs if len(job.item) == size]
        remote = [describe(job, trained[job.kind]) for job in wave]

        def arrived(i: int, adapter: TrainedAdapter, wave: list[Any] = wave) -> None:
            job = wave[i]
            finished(job, install_adapter(adapter, job.path, "stage" if job.kind == "sequential" else "union"))

        backend.map(retrain_job_task, remote, shared=(shared,), label=f"retraining |S| = {size}",
                    progress=progress, on_result=arrived)


__all__ = ["RemoteJob", "retrain_job_task", "train_jobs_remote"]
