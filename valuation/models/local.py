"""A user's local Hugging Face model directory as a base model: validated and checksummed, never copied.

A valid directory holds ``config.json`` (a JSON object whose ``model_type`` transformers knows without
``trust_remote_code``), safetensors weights (``*.safetensors``; when sharded, every shard named by
``model.safetensors.index.json``), and a tokenizer (``tokenizer.json``, or ``tokenizer.model``, or
``vocab.json`` + ``merges.txt``). Pickle-based weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``,
``*.pkl``) are refused: loading them can run arbitrary code.

The checksum record (:mod:`valuation.models.cache` manifest format, plus each weights file's size and
mtime) is kept in ``cache_dir/models/local/<name>-<key>.json``, key = SHA-256 of the resolved path, so the
user's directory is never written to and a second call re-hashes nothing while the files are unchanged.

transformers is imported inside :func:`validate_model_dir` (`import transformers, peft` ≈ 4.8 s), so
importing this module stays light.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from valuation.errors import InputError
from valuation.models.cache import (
    MANIFEST_VERSION,
    BaseModelInfo,
    checksum_weights,
    count_parameters,
    models_dir,
    weight_files,
    write_json_atomic,
)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


def validate_model_dir(model_dir: Path) -> dict[str, Any]:
    """Check that ``model_dir`` is a loadable, safe Hugging Face causal-LM dir. Returns its config.

    Raises:
        InputError: naming the directory (or file) and what is missing or refused.
    """
    if not model_dir.exists():
        raise InputError(
            "model directory not found (expected 'tiny', 'smollm2' or a local model dir)", file=model_dir
        )
    if not model_dir.is_dir():
        raise InputError("not a directory (expected 'tiny', 'smollm2' or a local model dir)", file=model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise InputError("missing config.json", file=model_dir, field="config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"not valid JSON ({err})", file=config_path) from err
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(
            "expected a JSON object with a string 'model_type'", file=config_path, field="model_type"
        )
    from transformers import CONFIG_MAPPING

    if config["model_type"] not in CONFIG_MAPPING:
        raise InputError(
            f"unknown model_type {config['model_type']!r}: it would need trust_remote_code, which payoutsim refuses",
            file=config_path,
            field="model_type",
        )

    weights = weight_files(model_dir)
    if not weights:
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(
                f"only pickle weights ({', '.join(pickles)}); payoutsim loads safetensors only "
                "(convert them with save_pretrained, which writes model.safetensors)",
                file=model_dir,
                field="weights",
            )
        raise InputError("no *.safetensors weights", file=model_dir, field="weights")
    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            shards = set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"unreadable shard index ({err})", file=index_path, field="weight_map") from err
        missing = sorted(s for s in shards if not (model_dir / s).is_file())
        if missing:
            raise InputError(
                f"missing weight shards: {', '.join(missing)}", file=index_path, field="weight_map"
            )

    if not any(all((model_dir / f).is_file() for f in files) for files in TOKENIZER_FILE_SETS):
        raise InputError(
            "missing tokenizer (expected tokenizer.json, tokenizer.model, or vocab.json + merges.txt)",
            file=model_dir,
            field="tokenizer",
        )
    return config


def _fingerprint(model_dir: Path) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in weight_files(model_dir)}


def record_path(model_dir: Path, cache_dir: Path | None) -> Path:
    """Where the checksum record of a local dir lives in the cache."""
    resolved = model_dir.resolve()
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return models_dir(cache_dir) / "local" / f"{resolved.name}-{key}.json"


def prepare_local(model_dir: Path, *, cache_dir: Path | None = None) -> BaseModelInfo:
    """Validate a local model dir and return its info; the weights checksum is cached while the weights
    files keep their sizes and modification times."""
    model_dir = Path(model_dir).expanduser()
    validate_model_dir(model_dir)
    resolved = model_dir.resolve()
    record = record_path(resolved, cache_dir)
    fingerprint = _fingerprint(resolved)
    try:
        cached = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = None
    if not (
        isinstance(cached, dict)
        and cached.get("manifest_version") == MANIFEST_VERSION
        and cached.get("fingerprint") == fingerprint
        and cached.get("path") == str(resolved)
    ):
        sha, files = checksum_weights(resolved)
        cached = {
            "manifest_version": MANIFEST_VERSION,
            "name": resolved.name,
            "preset": None,
            "path": str(resolved),
            "sha256": sha,
            "weights": files,
            "num_parameters": count_parameters(resolved),
            "fingerprint": fingerprint,
        }
        write_json_atomic(record, cached)
    return BaseModelInfo(name=resolved.name, path=resolved, sha256=str(cached["sha256"]), preset=None)
