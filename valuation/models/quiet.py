"""Quiet Hugging Face libraries while payoutsim loads, trains or scores models.

`quiet_libraries` silences datasets' and transformers' progress bars, transformers' info logs, tqdm bars
(``TQDM_DISABLE``) and known-harmless ``FutureWarning``s for the duration of a ``with`` block, then restores
every setting it changed. Every room that runs model code (adapter training, log-prob scoring, weight
merges, reward scorers, benchmarks) uses it, so payoutsim shows only its own progress.

datasets and transformers are imported inside the function: importing them costs seconds (measured:
``import transformers, peft`` ≈ 4.8 s), and light commands must not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator


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
