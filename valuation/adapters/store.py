"""The adapters folder on disk: manifests, the resume plan, atomic replacement, leftovers.

``ADAPTERS/<source>/`` is a standard peft adapter dir (``adapter_config.json`` + ``adapter_model.safetensors``)
plus ``manifest.json`` (`new_manifest`: source, data hash, training config + its hash, base model
name/sha256, adapter sha256, final metrics, wall time, library versions). An adapter is built in hidden
temp dirs (`staging_dirs`) and renamed into place only once it is complete (`swap_into_place`), so an
interrupted run never leaves a finished-looking adapter behind; `remove_leftovers` deletes what such a run
left.

Resume rules (`plan_adapters`): a finished adapter whose data hash, config hash and base model match is
skipped ("up to date"); one that differs in any of these raises `InputError` naming what changed, unless
``retrain=True``, which retrains it. Sources with no finished adapter are trained. A finished adapter whose
``adapter_model.safetensors`` is missing or no longer matches the ``adapter_sha256`` its manifest recorded
(truncated, corrupted, replaced) is damaged: `InputError` (exit 2) naming the file and saying that
``--retrain`` retrains it; with ``retrain=True`` only that adapter is retrained (`weights_problem`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from valuation.adapters.config import TrainingConfig
from valuation.errors import InputError
from valuation.files import sha256_file
from valuation.models.cache import BaseModelRef

MANIFEST = "manifest.json"
ADAPTER_FORMAT = "payoutsim-adapter/1"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LEFTOVER_PREFIXES = (".tmp-", ".trainer-", ".old-")  # hidden dirs of unfinished or replaced adapters


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
    """What `valuation.adapters.dpo.train_adapters` will do per source: ``"train"`` (missing or ``retrain``)
    or ``"skip"``."""

    actions: dict[str, Literal["train", "skip"]]
    reasons: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# manifests and the resume plan


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


def new_manifest(
    *,
    source: str,
    n_pairs: int,
    data_hash: str | None,
    config: TrainingConfig,
    base: BaseModelRef,
    adapter_dir: Path,
    metrics: Mapping[str, Any],
    started: float,
) -> dict[str, Any]:
    """The manifest of an adapter just saved to ``adapter_dir`` (its weights are hashed here).

    ``started`` is the ``time.perf_counter()`` reading when its training began (→ ``wall_time_s``).
    """
    return {
        "format": ADAPTER_FORMAT,
        "source": source,
        "n_pairs": n_pairs,
        "data_hash": data_hash,
        "config_hash": config.config_hash(),
        "training": config.model_dump(mode="json"),
        "base_model": {"name": base.name, "sha256": base.sha256, "preset": getattr(base, "preset", None)},
        "adapter_sha256": sha256_file(adapter_dir / ADAPTER_WEIGHTS),
        "metrics": dict(metrics),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }


def library_versions() -> dict[str, str]:
    """Installed versions of torch, transformers, trl and peft (``"missing"`` when one is not installed),
    recorded in every adapter manifest. Reads package metadata only: imports none of them."""
    out: dict[str, str] = {}
    for pkg in ("torch", "transformers", "trl", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def weights_problem(adapter_dir: Path, manifest: Mapping[str, Any]) -> str | None:
    """Why the weights file of a finished adapter cannot be used (missing, unreadable, or its sha256 differs
    from the manifest's ``adapter_sha256``: truncated or corrupted), or ``None`` when it is intact."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not path.is_file():
        return f"{ADAPTER_WEIGHTS} is missing"
    try:
        digest = sha256_file(path)
    except OSError as err:
        return f"{ADAPTER_WEIGHTS} cannot be read ({err.strerror or type(err).__name__})"
    if digest != manifest.get("adapter_sha256"):
        return (
            f"its sha256 ({digest[:12]}…) differs from the one recorded in {MANIFEST} "
            f"({str(manifest.get('adapter_sha256'))[:12]}…): the file is truncated or was changed"
        )
    return None


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
        damaged = weights_problem(adapter_dir, manifest)
        if damaged is not None:
            if not retrain:
                raise InputError(
                    f"adapter weights of source {source!r} are damaged: {damaged}. "
                    "Re-run with --retrain to retrain this adapter",
                    file=adapter_dir / ADAPTER_WEIGHTS,
                )
            actions[source], reasons[source] = "train", f"retrain: its weights file is damaged ({damaged})"
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
# building an adapter dir atomically


@contextlib.contextmanager
def staging_dirs(out_dir: Path, label: str) -> Iterator[tuple[Path, Path]]:
    """Two hidden temp dirs next to ``out_dir``: ``(.tmp-<label>-…, .trainer-<label>-…)``, for the adapter
    being built and for the trainer's scratch output. Both are removed on exit (the first is already gone
    when `swap_into_place` moved it to ``out_dir``)."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_adapter = Path(tempfile.mkdtemp(prefix=f".tmp-{label}-", dir=parent))
    tmp_trainer = Path(tempfile.mkdtemp(prefix=f".trainer-{label}-", dir=parent))
    try:
        yield tmp_adapter, tmp_trainer
    finally:
        shutil.rmtree(tmp_trainer, ignore_errors=True)
        shutil.rmtree(tmp_adapter, ignore_errors=True)


def swap_into_place(tmp_dir: Path, final_dir: Path) -> None:
    """Rename the finished ``tmp_dir`` to ``final_dir``.

    An existing ``final_dir`` is first renamed to a hidden ``.old-<name>-<ms>`` dir and removed only after
    the rename, so at every moment ``final_dir`` is either the old complete adapter or the new one.
    """
    old: Path | None = None
    if final_dir.exists():
        old = final_dir.with_name(f".old-{final_dir.name}-{int(time.time() * 1000)}")
        final_dir.rename(old)
    tmp_dir.rename(final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(adapters_dir: Path) -> None:
    """Delete the hidden temp dirs (``.tmp-*``, ``.trainer-*``, ``.old-*``) an interrupted run left in
    ``adapters_dir``; a finished adapter (no leading dot) is never touched."""
    for child in adapters_dir.iterdir():
        if child.is_dir() and child.name.startswith(LEFTOVER_PREFIXES):
            shutil.rmtree(child, ignore_errors=True)
