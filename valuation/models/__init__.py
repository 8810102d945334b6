"""Base models: the ``tiny`` and ``smollm2`` presets and local Hugging Face model dirs.

Public API::

    PRESETS = ("tiny", "smollm2")
    default_cache_dir() -> Path                      # $PAYOUTSIM_CACHE, else ~/.cache/payoutsim
    BaseModelInfo(name, path, sha256, preset)        # a prepared model dir + its weights checksum
    prepare_base_model(spec, *, cache_dir=None, corpus_dir=None, seed=0, progress=True) -> BaseModelInfo
    load_base_model(info, *, dtype=None) -> (model, tokenizer)   # dtype None = torch.float32
    TinyConfig                                       # sizes and schedule of the tiny preset

Importing this package does not import torch or transformers.
"""

from __future__ import annotations

from valuation.models.cache import BaseModelInfo, default_cache_dir
from valuation.models.loading import Completion, complete_chat, load_base_model
from valuation.models.presets import PRESETS, prepare_base_model
from valuation.models.tiny import TinyConfig

__all__ = [
    "PRESETS",
    "BaseModelInfo",
    "Completion",
    "TinyConfig",
    "complete_chat",
    "default_cache_dir",
    "load_base_model",
    "prepare_base_model",
]
