"""One LoRA adapter per data source, trained with DPO (trl ``DPOTrainer`` + peft), resumable.

For source ℓ with pairs D_ℓ, DPO fits π_ℓ = base + LoRA adapter against the reference π₀ = the same base
with the adapter disabled (trl does that when given ``peft_config``), minimising

    −log σ(β · ((log π_ℓ(y_w|x) − log π₀(y_w|x)) − (log π_ℓ(y_l|x) − log π₀(y_l|x))))

so the adapter's implicit reward is r_ℓ(x, y) = β log(π_ℓ(y|x)/π₀(y|x)). Paper defaults: LoRA r=8, α=16 on
every linear layer, β=0.1. Pairs are fed to trl in its conversational format (user prompt, assistant
response) when the tokenizer has a chat template, as plain text otherwise (`valuation.composition.logprobs.to_trl_example`,
the same formatting the log-prob scorer uses).

On disk, ``ADAPTERS/<source>/`` is a standard peft adapter dir (``adapter_config.json`` +
``adapter_model.safetensors``) plus ``manifest.json`` (source, data hash, training config + its hash, base
model name/sha256, adapter sha256, final metrics, wall time, library versions). An adapter is built in a
hidden temp dir and renamed into place only once it is complete, so an interrupted run never leaves a
finished-looking adapter behind.

Resume rules (`plan_adapters`): a finished adapter whose data hash, config hash and base model match is
skipped ("up to date"); one that differs in any of these raises `InputError` naming what changed, unless
``retrain=True``, which retrains it. Sources with no finished adapter are trained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from valuation.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

MANIFEST = "manifest.json"
ADAPTER_FORMAT = "payoutsim-adapter/1"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class TrainingConfig(BaseModel):
    """DPO + LoRA hyper-parameters of every source's adapter (the ``[training]`` table of a valuation config).

    Defaults follow the paper (r=8, α=16, β=0.1) and the design card's tiny-preset prototype (lr 1e-3,
    2 epochs, batch 16). trl's own default lr (1e-6) is far too low for short runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (linear decay, no warm-up).")
    epochs: float = Field(2.0, gt=0, description="Passes over each source's pairs.")
    batch_size: int = Field(16, ge=1, description="Pairs per optimiser step.")
    max_length: int = Field(256, ge=8, description="Max tokens of prompt + response (truncated at the end).")
    beta: float = Field(0.1, gt=0, description="DPO β (also the default β of the Bradley–Terry utility).")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(16, gt=0, description="LoRA α (scaling α/r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    seed: int = Field(0, ge=0, description="Seeds the adapter initialisation and the batch order.")
    precompute_ref_log_probs: bool | None = Field(
        None,
        description="Compute the reference (base) log-probs once before training instead of at every step "
        "(trl precompute_ref_log_probs). None = auto: on when epochs > 1, where it saves a forward pass per "
        "step (measured -29% wall time at 2 epochs on the tiny preset, same loss to 1e-8). Not part of the "
        "config hash: it changes the cost, not the adapter (beyond float rounding).",
    )

    @property
    def precompute_enabled(self) -> bool:
        """Whether the reference log-probs are precomputed (``precompute_ref_log_probs``, auto: epochs > 1)."""
        if self.precompute_ref_log_probs is None:
            return self.epochs > 1
        return self.precompute_ref_log_probs

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of every field that shapes the adapter (all but
        ``precompute_ref_log_probs``): an adapter trained with another config differs."""
        return sha256_json(self.model_dump(mode="json", exclude={"precompute_ref_log_probs"}))


class BaseModelRef(Protocol):
    """What training needs to know about the base model (`valuation.models.BaseModelInfo` fits)."""

    name: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class AdapterRecord:
    """A finished adapter: where it is, what it was trained from, and whether this run trained it."""

    source: str
    path: Path
    manifest: dict[str, Any]
    status: Literal["trained", "skipped"]

    @property
    def sha256(self) -> str:
        """SHA-256 of ``adapter_model.safetensors``."""
        return str(self.manifest["adapter_sha256"])


@dataclass(frozen=True)
class AdapterPlan:
    """What `train_adapters` will do per source: ``"train"`` (missing or ``retrain``) or ``"skip"``."""

    actions: dict[str, Literal["train", "skip"]]
    reasons: dict[str, str] = field(default_factory=dict)


class PairLike(Protocol):
    """A preference pair (`valuation.sources.PreferencePair` fits)."""

    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str


# ---------------------------------------------------------------------------------------------------
# hashing and manifests


def sha256_json(data: Any) -> str:
    """SHA-256 hex of ``json.dumps(data, sort_keys=True)`` (compact separators, UTF-8)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_adapter_manifest(adapter_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished adapter dir, or ``None`` when the dir or its manifest is missing."""
    path = Path(adapter_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable adapter manifest ({err})", file=path) from err
    if not isinstance(manifest, dict) or manifest.get("format") != ADAPTER_FORMAT:
        raise InputError(f"not a payoutsim adapter manifest (expected format {ADAPTER_FORMAT!r})", file=path)
    return manifest


def load_adapter_record(adapters_dir: Path, source: str) -> AdapterRecord:
    """The finished adapter of ``source`` under ``adapters_dir``; `InputError` if it was never trained."""
    path = Path(adapters_dir) / source
    manifest = read_adapter_manifest(path)
    if manifest is None:
        raise InputError(f"no finished adapter for source {source!r}; run `payoutsim train` first", file=path)
    return AdapterRecord(source=source, path=path, manifest=manifest, status="skipped")


def plan_adapters(
    adapters_dir: Path,
    data_hashes: Mapping[str, str],
    config: TrainingConfig,
    base: BaseModelRef,
    *,
    retrain: bool = False,
) -> AdapterPlan:
    """Decide per source whether to train or skip; raise `InputError` for stale adapters unless ``retrain``.

    A finished adapter is stale when its base model sha256, data hash or config hash differs from now.
    The error names the source and what changed, and says that ``--retrain`` retrains it.
    """
    actions: dict[str, Literal["train", "skip"]] = {}
    reasons: dict[str, str] = {}
    config_hash = config.config_hash()
    for source, data_hash in data_hashes.items():
        adapter_dir = Path(adapters_dir) / source
        manifest = read_adapter_manifest(adapter_dir)
        if manifest is None:
            actions[source], reasons[source] = "train", "not trained yet"
            continue
        problems: list[tuple[str, str]] = []  # (config field, what changed)
        trained_base = manifest.get("base_model", {})
        if trained_base.get("sha256") != base.sha256:
            problems.append(
                (
                    "model.base",
                    f"it was trained on another base model ({trained_base.get('name')!r}, sha256 "
                    f"{str(trained_base.get('sha256'))[:12]}…; now {base.name!r}, {base.sha256[:12]}…)",
                )
            )
        if manifest.get("data_hash") != data_hash:
            problems.append(("data", "its training data changed since it was trained"))
        if manifest.get("config_hash") != config_hash:
            problems.append(("training", "the [training] config changed since it was trained"))
        if not problems:
            actions[source], reasons[source] = "skip", "up to date"
        elif retrain:
            actions[source] = "train"
            reasons[source] = "retrain: " + "; ".join(text for _, text in problems)
        else:
            raise InputError(
                f"adapter of source {source!r} is stale: {'; '.join(text for _, text in problems)}. "
                "Re-run with --retrain to retrain it, or restore the original inputs",
                file=adapter_dir / MANIFEST,
                field=problems[0][0],
            )
    return AdapterPlan(actions=actions, reasons=reasons)


# ---------------------------------------------------------------------------------------------------
# training


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
) -> dict[str, AdapterRecord]:
    """Train (or skip when up to date) one adapter per source, in the order of ``data``.

    Args:
        base: the prepared base model (its dir is loaded once per source: peft wraps the model in place).
        data: source → its preference pairs.
        data_hashes: source → content hash of its pairs (recorded; compared on resume).
        config: the DPO/LoRA hyper-parameters.
        adapters_dir: ``RUN/adapters``; each source goes to ``adapters_dir/<source>``.
        retrain: retrain stale adapters instead of raising `InputError`.
        progress: rich progress bars (overall and per source) on stderr.
        callbacks: extra ``transformers.TrainerCallback`` objects for every trainer (tests use one to
            interrupt a run).
        log: where one-line notes go ("flan_v2_niv2: skipped: up to date"); default: the progress console.

    Returns:
        source → `AdapterRecord` for every source, in the order of ``data``.

    Stale adapters are detected for every source before anything is trained, so a bad input fails fast.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    missing = [s for s in data if s not in data_hashes]
    if missing:
        raise ValueError(f"no data hash for source(s) {missing}")
    adapters_dir = Path(adapters_dir)
    plan = plan_adapters(adapters_dir, {s: data_hashes[s] for s in data}, config, base, retrain=retrain)
    adapters_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(adapters_dir)

    console = Console(stderr=True)
    records: dict[str, AdapterRecord] = {}
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    note = log or (lambda msg: bars.console.print(msg, highlight=False))  # prints above live bars
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
                callbacks=[*callbacks, _progress_callback(bars, task)],
            )
            final_loss = manifest["metrics"].get("final_loss", float("nan"))
            bars.update(task, description=f"  {source} (loss {final_loss:.3f})")
            records[source] = AdapterRecord(source, adapters_dir / source, manifest, "trained")
            bars.advance(overall)
    return records


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
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp_adapter = Path(tempfile.mkdtemp(prefix=f".tmp-{source}-", dir=parent))
    tmp_trainer = Path(tempfile.mkdtemp(prefix=f".trainer-{source}-", dir=parent))
    try:
        model, tokenizer = _load_base(base)
        peft_model, metrics = _run_dpo(model, tokenizer, pairs, config, tmp_trainer, callbacks)
        peft_model.save_pretrained(tmp_adapter)
        manifest = {
            "format": ADAPTER_FORMAT,
            "source": source,
            "n_pairs": len(pairs),
            "data_hash": data_hash,
            "config_hash": config.config_hash(),
            "training": config.model_dump(mode="json"),
            "base_model": {
                "name": base.name,
                "sha256": base.sha256,
                "preset": getattr(base, "preset", None),
            },
            "adapter_sha256": sha256_file(tmp_adapter / ADAPTER_WEIGHTS),
            "metrics": metrics,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
        }
        (tmp_adapter / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp_adapter.chmod(0o755)  # mkdtemp makes it private; a finished adapter is an ordinary folder
        _swap_into_place(tmp_adapter, out_dir)
        return manifest
    finally:
        shutil.rmtree(tmp_trainer, ignore_errors=True)
        shutil.rmtree(tmp_adapter, ignore_errors=True)


def _load_base(base: BaseModelRef) -> tuple[Any, Any]:
    from valuation.models import load_base_model

    with quiet_libraries():
        return load_base_model(base)


def dpo_arguments(config: TrainingConfig, trainer_dir: Path, n_pairs: int, *, precompute: bool | None = None) -> Any:
    """trl ``DPOConfig`` for one LoRA-DPO run on the CPU (every adapter and retraining stage uses it).

    CPU-safe settings measured on this project's machines: fp32, no activation checkpointing, no
    checkpoints saved by trl, no tqdm of trl's own (payoutsim shows its own progress). ``precompute``
    overrides ``config.precompute_enabled`` (the retraining's continued stages must not precompute: trl would
    take the reference from the previous stage's adapter before payoutsim removes it).
    """
    from trl import DPOConfig

    steps_per_epoch = max(1, -(-n_pairs // config.batch_size))
    return DPOConfig(
        output_dir=str(trainer_dir),
        use_cpu=True,
        bf16=False,
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


def _run_dpo(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PairLike],
    config: TrainingConfig,
    trainer_dir: Path,
    callbacks: Sequence[Any],
) -> tuple[Any, dict[str, Any]]:
    """Fit a fresh LoRA adapter on ``model``; return the trained ``PeftModel`` and the final metrics."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    from valuation.composition.logprobs import has_chat_template, to_trl_example

    chat = has_chat_template(tokenizer)
    dataset = Dataset.from_list([to_trl_example(p, chat=chat) for p in pairs])
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
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logs[-1] if logs else {}
    metrics: dict[str, Any] = {
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "epochs": float(config.epochs),
    }
    for key, name in (
        ("loss", "final_loss"),
        ("rewards/accuracies", "final_reward_accuracy"),
        ("rewards/margins", "final_reward_margin"),
    ):
        if key in last:
            metrics[name] = float(last[key])
    return trainer.model, metrics


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence datasets' progress bars, transformers' info logs and known-harmless warnings while training."""
    import datasets.utils.logging as ds_logging
    import transformers

    ds_bars = ds_logging.is_progress_bar_enabled()
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    verbosity = transformers.logging.get_verbosity()
    tqdm_env = os.environ.get("TQDM_DISABLE")
    ds_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    os.environ["TQDM_DISABLE"] = "1"  # trl's reference-log-prob precompute has its own tqdm bar
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        if tqdm_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_env
        transformers.logging.set_verbosity(verbosity)
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()
        if ds_bars:
            ds_logging.enable_progress_bar()


def _progress_callback_class() -> type:
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

    return ProgressCallback


def _progress_callback(bars: Progress, task: TaskID) -> Any:
    return _progress_callback_class()(bars, task)


def _swap_into_place(tmp_dir: Path, final_dir: Path) -> None:
    """Rename the finished ``tmp_dir`` to ``final_dir``; an existing ``final_dir`` is removed only after."""
    old: Path | None = None
    if final_dir.exists():
        old = final_dir.with_name(f".old-{final_dir.name}-{int(time.time() * 1000)}")
        final_dir.rename(old)
    tmp_dir.rename(final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(adapters_dir: Path) -> None:
    """Delete hidden temp dirs an interrupted run left behind (never a finished adapter)."""
    for child in adapters_dir.iterdir():
        if child.is_dir() and child.name.startswith((".tmp-", ".trainer-", ".old-")):
            shutil.rmtree(child, ignore_errors=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("torch", "transformers", "trl", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out
