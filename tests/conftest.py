"""Shared test setup: offline hub, deterministic seeds, paths to the shared real data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------------------------------
# Ray: one local instance for the whole test session (started by the first test that asks for it)

RAY_TEST_INIT = {
    "num_cpus": 2,
    "include_dashboard": False,
    "object_store_memory": 100 * 1024**2,  # Ray's minimum is 75 MiB; adapters of the tiny preset are kilobytes
    "log_to_driver": False,
    "logging_level": "ERROR",
}


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Shuts down the session's Ray instance (if one was started) at the end of the test session."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_local(_ray_session: None) -> Any:
    """The session's local Ray instance (2 CPUs, no dashboard, a 100 MiB object store), started on first use
    (again after a test that needed its own cluster shut it down). Workers import the project and the test
    helpers through PYTHONPATH, which they inherit from this process."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        paths = [str(REPO_ROOT), str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        ray.init(**RAY_TEST_INIT)
    return ray


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped on a machine where torch sees no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="no CUDA device: the GPU path is checked on a machine with one")
        for item in gpu_items:
            item.add_marker(skip)
