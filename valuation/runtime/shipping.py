"""Folders as bytes: what travels through Ray's object store instead of a shared filesystem.

* `DirPayload` — the files of a folder (paths relative to it → bytes); `pack_dir` reads one, `unpack_dir`
  writes one. Adapters are small (a LoRA adapter of the tiny preset is ≈ 0.35 MB, of SmolLM2-135M ≈ 10 MB):
  a worker returns the adapter it trained as a `DirPayload`, and the driver writes it into ``RUN/adapters``
  atomically; scoring and decoding tasks receive the adapters they need the same way.
* `ShippedModel` — the prepared base model as a task sees it. It is prepared ONCE, on the driver
  (`valuation.models.prepare_base_model`, which may pre-train the tiny preset or read a GGUF). A task first
  looks for the driver's model dir at the same path (a local Ray instance, or a cluster on one shared
  filesystem) and uses it when its weights checksum matches. Otherwise it writes the shipped files, once per
  node, into that node's model cache (``$PAYOUTSIM_CACHE/models/shipped-<sha256[:16]>``) and loads them from
  there. The files are put in the object store only when the run joins an existing cluster (``address`` set),
  once per run (`valuation.runtime.backend.Backend.share`), so each node fetches them at most once.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from valuation.models.cache import BaseModelInfo, checksum_weights, models_dir


@dataclass(frozen=True)
class DirPayload:
    """The regular files under a folder: relative POSIX path → content."""

    files: dict[str, bytes]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def pack_dir(path: Path, *, skip: tuple[str, ...] = ()) -> DirPayload:
    """Every regular file under ``path`` (recursively), except those whose top-level name is in ``skip``."""
    path = Path(path)
    files = {}
    for child in sorted(path.rglob("*")):
        rel = child.relative_to(path)
        if child.is_file() and rel.parts[0] not in skip:
            files[rel.as_posix()] = child.read_bytes()
    return DirPayload(files)


def unpack_dir(payload: DirPayload, path: Path) -> Path:
    """Write ``payload``'s files under ``path`` (created; existing files are overwritten)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for rel, data in payload.files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return path


@dataclass(frozen=True)
class ShippedModel:
    """The base model for tasks: its identity, the driver's path, and (joining a cluster) its files."""

    name: str
    path: str
    sha256: str
    preset: str | None
    files: DirPayload | None = None


def ship_base_model(info: BaseModelInfo, *, with_files: bool) -> ShippedModel:
    """What a task needs to load ``info`` (its files only ``with_files``: see the module docstring)."""
    files = pack_dir(info.path) if with_files else None
    return ShippedModel(info.name, str(info.path), info.sha256, info.preset, files)


def materialise_base_model(shipped: ShippedModel) -> BaseModelInfo:
    """The base model as a `BaseModelInfo` on this node: the driver's dir when it is here with the same
    weights, else the shipped files in this node's model cache (written once, renamed into place).

    Raises:
        FileNotFoundError: neither the driver's dir nor shipped files are available on this node.
    """
    here = Path(shipped.path)
    if _same_weights(str(here), shipped.sha256):
        return BaseModelInfo(shipped.name, here, shipped.sha256, shipped.preset)
    target = models_dir(None) / f"shipped-{shipped.sha256[:16]}"
    if not _same_weights(str(target), shipped.sha256):
        if shipped.files is None:
            raise FileNotFoundError(
                f"the base model {shipped.name!r} is not at {here} on this node and was not shipped"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".shipped-", dir=target.parent))
        try:
            unpack_dir(shipped.files, tmp)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _same_weights.cache_clear()
    return BaseModelInfo(shipped.name, target, shipped.sha256, shipped.preset)


@functools.cache
def _same_weights(path: str, sha256: str) -> bool:
    """Whether ``path`` is a model dir whose weights hash to ``sha256`` (checked once per process)."""
    folder = Path(path)
    if not (folder / "config.json").is_file() or not folder.is_dir():
        return False
    try:
        return checksum_weights(folder)[0] == sha256
    except OSError:
        return False


__all__ = [
    "DirPayload",
    "ShippedModel",
    "materialise_base_model",
    "pack_dir",
    "ship_base_model",
    "unpack_dir",
]
