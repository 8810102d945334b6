"""Shared test setup: offline hub, deterministic seeds, paths to the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or skip: a user's fresh clone does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real evaluation data not present at {SHARED_DATA} (only in the project workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def random_adapters(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three random LoRA adapter dirs for the tiny random Llama of `tiny_lm` (built once per session)."""
    import tiny_lm

    return tiny_lm.write_random_adapters(tmp_path_factory.mktemp("adapters"))
