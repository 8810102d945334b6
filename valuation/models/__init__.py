"""Base models: the ``tiny`` and ``smollm2`` presets and local Hugging Face model dirs.

Public API::

    PRESETS = ("tiny", "smollm2")
    default_cache_dir() -> Path                      # $PAYOUTSIM_CACHE, else ~/.cache/payoutsim
    BaseModelInfo(name, path, sha256, preset)        # a prepared model dir + its weights checksum
    prepare_base_model(spec, *, cache_dir=None, corpus_dir=None, seed=0, progress=True) -> BaseModelInfo
    describe_model(info) -> ModelDescription         # sizes, weights files, parameter count
    prepare_and_describe(spec, ...) -> ModelDescription   # what `payoutsim models prepare` prints
    list_prepared_models(cache_dir) -> ModelListing  # what `payoutsim models list` prints
    load_base_model(info, *, dtype=None) -> (model, tokenizer)   # on the placement of models.devices (CPU, fp32 by default)
    TinyConfig                                       # sizes and schedule of the tiny preset

Importing this package does not import torch or transformers.
"""

from __future__ import annotations

from valuation.models.cache import (
    BaseModelInfo,
    ModelDescription,
    ModelListing,
    default_cache_dir,
    describe_model,
    list_prepared_models,
)
from valuation.models.loading import Completion, complete_chat, load_base_model
from valuation.models.presets import PRESETS, prepare_and_describe, prepare_base_model
from valuation.models.tiny import TinyConfig

__all__ = [
    "PRESETS",
    "BaseModelInfo",
    "Completion",
    "ModelDescription",
    "ModelListing",
    "TinyConfig",
    "complete_chat",
    "default_cache_dir",
    "describe_model",
    "list_prepared_models",
    "load_base_model",
    "prepare_and_describe",
    "prepare_base_model",
]
