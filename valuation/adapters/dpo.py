"""One LoRA adapter per data source, trained with DPO (trl ``DPOTrainer`` + peft), resumable.

For source ℓ with pairs D_ℓ, DPO fits π_ℓ = base + LoRA adapter against the reference π₀ = the same base
with the adapter disabled (trl does that when given ``peft_config``), minimising

    −log σ(β · ((log π_ℓ(y_w|x) − log π₀(y_w|x)) − (log π_ℓ(y_l|x) − log π₀(y_l|x))))

so the adapter's implicit reward is r_ℓ(x, y) = β log(π_ℓ(y|x)/π₀(y|x)). Paper defaults: LoRA r=8, α=16 on
every linear layer, β=0.1 (`valuation.adapters.config.TrainingConfig`). Pairs are fed to trl in its
conversational format (user prompt, assistant response) when the tokenizer has a chat template, as plain text
otherwise (`valuation.composition.logprobs.to_trl_example`, the same formatting the log-prob scorer uses).

Where adapters go on disk, how they are written atomically and when a finished one is reused: see
`valuation.adapters.store`.

torch, transformers, trl, peft and datasets are imported inside functions: importing them costs seconds
(measured: ``import torch`` ≈ 1.5 s, ``import transformers, peft`` ≈ 4.8 s) and light commands must not pay.
rich is imported inside functions too, as before this module was split.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from valuation.adapters.config import TrainingConfig
from valuation.adapters.store import (
    ADAPTER_WEIGHTS,
    MANIFEST,
    AdapterPlan,
    AdapterRecord,
    load_adapter_record,
    new_manifest,
    plan_adapters,
    remove_leftovers,
    staging_dirs,
    swap_into_place,
)
from valuation.composition.logprobs import PairLike, has_chat_template, to_trl_example
from valuation.errors import InputError
from valuation.files import sha256_file
from valuation.models import load_base_model
from valuation.models.cache import BaseModelInfo, BaseModelRef
from valuation.models.devices import current_placement
from valuation.models.quiet import quiet_libraries
from valuation.progress import progress_display
from valuation.runtime.backend import LOCAL, Backend
from valuation.runtime.shipping import (
    DirPayload,
    ShippedModel,
    materialise_base_model,
    pack_dir,
    ship_base_model,
    unpack_dir,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


# ---------------------------------------------------------------------------------------------------
# one DPO run


def dpo_arguments(
    config: TrainingConfig, trainer_dir: Path, n_pairs: int, *, precompute: bool | None = None
) -> Any:
    """trl ``DPOConfig`` for one LoRA-DPO run (every adapter and retraining stage uses it).

    On the CPU (`valuation.models.devices.current_placement`), the settings measured on this project's
    machines: fp32, no activation checkpointing, no checkpoints saved by trl, no tqdm of trl's own
    (payoutsim shows its own progress). On a GPU the same, with bf16 mixed precision when the placement's
    dtype is bfloat16 (fp32 master weights). ``precompute``
    overrides ``config.precompute_enabled`` (the retraining's continued stages must not precompute: trl would
    take the reference from the previous stage's adapter before payoutsim removes it).
    """
    from trl import DPOConfig

    steps_per_epoch = max(1, -(-n_pairs // config.batch_size))
    placement = current_placement()
    return DPOConfig(
        output_dir=str(trainer_dir),
        use_cpu=placement.on_cpu,
        bf16=not placement.on_cpu and placement.dtype == "bfloat16",
        activation_checkpointing=False,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        beta=config.beta,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps_per_epoch // 4),
        disable_tqdm=True,
        dataloader_num_workers=0,
        precompute_ref_log_probs=config.precompute_enabled if precompute is None else precompute,
    )


def dpo_dataset(tokenizer: Any, pairs: Sequence[PairLike]) -> Any:
    """The pairs as a ``datasets.Dataset`` of trl preference examples (conversational when the tokenizer
    has a chat template, plain text otherwise; `valuation.composition.logprobs.to_trl_example`)."""
    from datasets import Dataset

    chat = has_chat_template(tokenizer)
    return Dataset.from_list([to_trl_example(p, chat=chat) for p in pairs])


def training_metrics(
    trainer: Any, output: Any, config: TrainingConfig, *, first_loss: bool = False
) -> dict[str, Any]:
    """What a manifest records of a finished DPO run: ``train_loss`` (mean over the run), ``steps``,
    ``epochs``, ``loss_curve`` (every logged ``[step, loss]``, about four per epoch: whether the loss
    went flat), optionally ``first_loss`` (the first logged loss), and the last logged ``final_loss``,
    ``final_reward_accuracy`` and ``final_reward_margin`` (each when trl logged it)."""
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logs[-1] if logs else {}
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "epochs": float(config.epochs),
        "loss_curve": [[int(entry.get("step", 0)), round(float(entry["loss"]), 6)] for entry in logs],
    }
    if first_loss and logs:
        metrics["first_loss"] = float(logs[0]["loss"])
    for key, name in (
        ("loss", "final_loss"),
        ("rewards/accuracies", "final_reward_accuracy"),
        ("rewards/margins", "final_reward_margin"),
    ):
        if key in last:
            metrics[name] = float(last[key])
    return metrics


def _run_dpo(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PairLike],
    config: TrainingConfig,
    trainer_dir: Path,
    callbacks: Sequence[Any],
) -> tuple[Any, dict[str, Any]]:
    """Fit a fresh LoRA adapter on ``model``; return the trained ``PeftModel`` and the final metrics."""
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    dataset = dpo_dataset(tokenizer, pairs)
    args = dpo_arguments(config, trainer_dir, len(pairs))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    with quiet_libraries():
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=list(callbacks),
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
        output = trainer.train()
    return trainer.model, training_metrics(trainer, output, config)


def train_one_adapter(
    base: BaseModelRef,
    source: str,
    pairs: Sequence[PairLike],
    *,
    data_hash: str,
    config: TrainingConfig,
    out_dir: Path,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train one source's adapter with trl's ``DPOTrainer`` and move it, complete, to ``out_dir``.

    The adapter (peft dir + manifest) is written to a hidden temp dir next to ``out_dir`` and renamed into
    place at the end; trl's own output dir is a temp dir too (no checkpoints are saved). An existing
    ``out_dir`` is replaced only after the new adapter is complete. Returns the manifest.
    """
    if not pairs:
        raise InputError(f"source {source!r} has no preference pairs to train on", field="data")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with staging_dirs(out_dir, source) as (tmp_adapter, tmp_trainer):
        with quiet_libraries():
            model, tokenizer = load_base_model(base, dtype=float32())  # fp32 master weights
        peft_model, metrics = _run_dpo(model, tokenizer, pairs, config, tmp_trainer, callbacks)
        peft_model.save_pretrained(tmp_adapter)
        manifest = new_manifest(
            source=source,
            n_pairs=len(pairs),
            data_hash=data_hash,
            config=config,
            base=base,
            adapter_dir=tmp_adapter,
            metrics=metrics,
            started=started,
        )
        (tmp_adapter / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        tmp_adapter.chmod(0o755)  # mkdtemp makes it private; a finished adapter is an ordinary folder
        swap_into_place(tmp_adapter, out_dir)
        return manifest


def float32() -> Any:
    import torch

    return torch.float32


# ---------------------------------------------------------------------------------------------------
# one adapter as a remote task (valuation.runtime.backend)


@dataclass(frozen=True)
class AdapterJob:
    """One source's adapter to train in a task: what `train_one_adapter` needs besides the base model."""

    source: str
    pairs: list[Any]
    data_hash: str
    config: TrainingConfig


@dataclass(frozen=True)
class TrainedAdapter:
    """A finished adapter as a task returns it: its manifest and its files (no shared filesystem needed)."""

    manifest: dict[str, Any]
    files: DirPayload


def train_adapter_task(job: AdapterJob, base: ShippedModel) -> TrainedAdapter:
    """A task's body: train ``job`` with `train_one_adapter` into a temp dir on this node, return it as bytes."""
    info = materialise_base_model(base)
    with tempfile.TemporaryDirectory(prefix="payoutsim-adapter-") as tmp:
        out_dir = Path(tmp) / "adapter"
        manifest = train_one_adapter(
            info, job.source, job.pairs, data_hash=job.data_hash, config=job.config, out_dir=out_dir
        )
        return TrainedAdapter(manifest, pack_dir(out_dir))


def install_adapter(adapter: TrainedAdapter, out_dir: Path, label: str) -> dict[str, Any]:
    """Write a task's adapter to ``out_dir`` atomically (`valuation.adapters.store.staging_dirs`,
    `swap_into_place`) after checking its weights against the manifest's ``adapter_sha256``; return the
    manifest.

    Raises:
        RuntimeError: the weights that arrived do not match their manifest.
    """
    with staging_dirs(Path(out_dir), label) as (tmp_adapter, _):
        unpack_dir(adapter.files, tmp_adapter)
        if sha256_file(tmp_adapter / ADAPTER_WEIGHTS) != adapter.manifest.get("adapter_sha256"):
            raise RuntimeError(f"the adapter {label!r} arrived damaged (its sha256 differs from its manifest)")
        tmp_adapter.chmod(0o755)
        swap_into_place(tmp_adapter, Path(out_dir))
    return adapter.manifest


def ship_base(backend: Backend, base: BaseModelRef) -> Any:
    """The base model as the tasks of ``backend`` receive it (`valuation.runtime.shipping`), shared once."""
    info = BaseModelInfo(base.name, Path(base.path), base.sha256, getattr(base, "preset", None))
    return backend.share(ship_base_model(info, with_files=backend.ship_files))


# ---------------------------------------------------------------------------------------------------
# progress


def progress_callback(bars: Progress, task: TaskID) -> Any:
    """A ``transformers.TrainerCallback`` that drives one rich task of ``bars``: its total is set to the
    trainer's max steps when training begins, and it is advanced to the global step after every step."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Drives one rich task: total = max steps, advanced every optimiser step."""

        def __init__(self, bars: Progress, task: TaskID) -> None:
            self.bars = bars
            self.task = task

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bars.update(self.task, total=state.max_steps, completed=0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bars.update(self.task, completed=state.global_step)

    return ProgressCallback(bars, task)


def training_bars(progress: bool, *, time_remaining: bool = True) -> Progress:
    """Progress bars on stderr (description, bar, done/total, elapsed[, remaining]) from
    `valuation.progress.progress_display` (plain lines every 30 s when stderr is not a terminal); not
    started yet, and printing nothing when ``progress`` is false."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[ProgressColumn] = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if time_remaining:
        columns.append(TimeRemainingColumn())
    return progress_display(*columns, enabled=progress)


# ---------------------------------------------------------------------------------------------------
# every source


def train_adapters(
    base: BaseModelRef,
    data: Mapping[str, Sequence[PairLike]],
    data_hashes: Mapping[str, str],
    config: TrainingConfig,
    adapters_dir: Path,
    *,
    retrain: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    backend: Backend = LOCAL,
) -> dict[str, AdapterRecord]:
    """Train (or skip when up to date) one adapter per source, in the order of ``data``.

    Args:
        base: the prepared base model (its dir is loaded once per source: peft wraps the model in place).
        data: source → its preference pairs.
        data_hashes: source → content hash of its pairs (recorded; compared on resume).
        config: the DPO/LoRA hyper-parameters.
        adapters_dir: ``RUN/adapters``; each source goes to ``adapters_dir/<source>``.
        retrain: retrain stale adapters instead of raising `InputError`.
        progress: progress bars (overall and per source) on stderr (`training_bars`: plain lines at least
            every 30 s when stderr is not a terminal).
        callbacks: extra ``transformers.TrainerCallback`` objects for every trainer (tests use one to
            interrupt a run).
        log: where one-line notes go ("flan_v2_niv2: skipped: up to date"); default: the progress console.
        backend: where the trainings run (`valuation.runtime.backend`). A remote backend trains one adapter
            per task (``callbacks`` stay on the driver and are not used) and each finished adapter is written
            to ``adapters_dir`` as soon as it arrives, so an interrupted run keeps it.

    Returns:
        source → `AdapterRecord` for every source, in the order of ``data``.

    Stale adapters are detected for every source before anything is trained, so a bad input fails fast.
    """
    missing = [s for s in data if s not in data_hashes]
    if missing:
        raise ValueError(f"no data hash for source(s) {missing}")
    adapters_dir = Path(adapters_dir)
    plan = plan_adapters(adapters_dir, {s: data_hashes[s] for s in data}, config, base, retrain=retrain)
    adapters_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(adapters_dir)

    if backend.remote:
        return _train_remote(base, data, data_hashes, config, adapters_dir, plan, backend, progress, log)
    records: dict[str, AdapterRecord] = {}
    bars = training_bars(progress)
    note = log or (lambda msg: bars.console.print(msg, markup=False, highlight=False))  # prints above live bars
    with bars:
        overall = bars.add_task("adapters", total=len(data))
        for source, pairs in data.items():
            if plan.actions[source] == "skip":
                note(f"{source}: skipped: up to date")
                records[source] = load_adapter_record(adapters_dir, source)
                bars.advance(overall)
                continue
            if plan.reasons[source].startswith("retrain"):
                note(f"{source}: {plan.reasons[source]}")
            task = bars.add_task(f"  {source}", total=None)
            manifest = train_one_adapter(
                base,
                source,
                pairs,
                data_hash=data_hashes[source],
                config=config,
                out_dir=adapters_dir / source,
                callbacks=[*callbacks, progress_callback(bars, task)],
            )
            final_loss = manifest["metrics"].get("final_loss", float("nan"))
            bars.update(task, description=f"  {source} (loss {final_loss:.3f})")
            records[source] = AdapterRecord(source, adapters_dir / source, manifest, "trained")
            bars.advance(overall)
    return records


def _train_remote(
    base: BaseModelRef,
    data: Mapping[str, Sequence[PairLike]],
    data_hashes: Mapping[str, str],
    config: TrainingConfig,
    adapters_dir: Path,
    plan: AdapterPlan,
    backend: Backend,
    progress: bool,
    log: Callable[[str], None] | None,
) -> dict[str, AdapterRecord]:
    """`train_adapters` on a remote backend: one task per adapter to train, installed as each arrives."""
    note = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    found: dict[str, AdapterRecord] = {}
    todo: list[str] = []
    for source in data:
        if plan.actions[source] == "skip":
            note(f"{source}: skipped: up to date")
            found[source] = load_adapter_record(adapters_dir, source)
        else:
            if plan.reasons[source].startswith("retrain"):
                note(f"{source}: {plan.reasons[source]}")
            todo.append(source)
    if todo:
        shared = ship_base(backend, base)

        def arrived(i: int, adapter: TrainedAdapter) -> None:
            source = todo[i]
            manifest = install_adapter(adapter, adapters_dir / source, source)
            found[source] = AdapterRecord(source, adapters_dir / source, manifest, "trained")

        jobs = [AdapterJob(s, list(data[s]), data_hashes[s], config) for s in todo]
        backend.map(train_adapter_task, jobs, shared=(shared,), label="training adapters", progress=progress,
                    on_result=arrived)
    return {source: found[source] for source in data}
