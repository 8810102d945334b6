"""Fault injection (issue 14): damaged adapter weights, kill -9 during training, torn log-prob cache entries,
disk full while writing a run. Each test breaks something on purpose and checks that payoutsim says so in one
line (exit 2) or repairs it, and never takes a damaged or half-written file as valid. Tiny preset: seconds."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_lm import TINY_PRESET_TOML

from market.cli import main
from valuation.adapters.store import ADAPTER_WEIGHTS, MANIFEST, weights_problem
from valuation.synth import SynthConfig, write_corpus

SOURCES = ["flan_v2_niv2", "sharegpt", "noisy"]


def write_config(folder: Path, shared: Path, *, epochs: int = 1) -> Path:
    """A valuation config on the shared corpus and model cache, output in ``folder/run``."""
    text = f"""
[data]
corpus = "{shared / "corpus"}"
sources = {json.dumps(SOURCES)}
[model]
base = "tiny"
cache_dir = "{shared / "cache"}"
{TINY_PRESET_TOML}
[training]
epochs = {epochs}
batch_size = 8
max_length = 96
[output]
dir = "run"
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(args: list[str]) -> Result:
    """``payoutsim ARGS`` in process; exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return Result(code, out.getvalue(), err.getvalue())


def file_state(path: Path) -> tuple[int, str]:
    """(mtime in ns, sha256) of a file: what "untouched" means."""
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def adapter_states(adapters: Path, sources: list[str]) -> dict[str, dict[str, tuple[int, str]]]:
    return {s: {f.name: file_state(f) for f in sorted((adapters / s).iterdir())} for s in sources}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic corpus and a model cache shared by the tests of this module."""
    root = tmp_path_factory.mktemp("faults")
    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=16, eval_pairs_per_objective=12))
    return root


@pytest.fixture(scope="module")
def trained(shared: Path) -> Path:
    """A folder with a config and its finished adapters (``run/adapters``), trained once for the module."""
    folder = shared / "trained"
    config = write_config(folder, shared)
    result = run_cli(["train", str(config), "--no-progress"])
    assert result.code == 0, result.err
    return folder


def copy_run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained folder (config + run, timestamps kept)."""
    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    write_config(folder, trained.parent)
    return folder


# ---------------------------------------------------------------------------------------------------
# 1. a truncated or corrupted adapter_model.safetensors


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_adapter_weights_exit_2_naming_the_file(trained: Path, tmp_path: Path, damage: str) -> None:
    folder = copy_run(trained, tmp_path)
    weights = folder / "run" / "adapters" / "sharegpt" / ADAPTER_WEIGHTS
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        weights.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    else:
        weights.unlink()
    result = run_cli(["value", str(folder / "valuation.toml"), "--no-progress"])
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    assert str(weights) in lines[0] and "--retrain" in lines[0] and "damaged" in lines[0]
    assert not (folder / "run" / "game.csv").exists()


def test_retrain_replaces_only_the_damaged_adapter(trained: Path, tmp_path: Path) -> None:
    folder = copy_run(trained, tmp_path)
    adapters = folder / "run" / "adapters"
    weights = adapters / "sharegpt" / ADAPTER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    others = ["flan_v2_niv2", "noisy"]
    before = adapter_states(adapters, others)
    result = run_cli(["value", str(folder / "valuation.toml"), "--no-progress", "--retrain"])
    assert result.code == 0, result.err
    assert "sharegpt: retrain: its weights file is damaged" in result.out + result.err
    assert adapter_states(adapters, others) == before  # untouched: same mtime and bytes
    manifest = json.loads((adapters / "sharegpt" / MANIFEST).read_text())
    assert weights_problem(adapters / "sharegpt", manifest) is None
    assert (folder / "run" / "game.csv").is_file()


# ---------------------------------------------------------------------------------------------------
# 2. kill -9 during adapter training


CLI = "import sys; from market.cli import main; sys.exit(main(sys.argv[1:]))"  # `payoutsim` in a subprocess


def finished_adapters(adapters: Path) -> list[str]:
    """Adapter dirs that look finished (no leading dot, a manifest inside)."""
    if not adapters.is_dir():
        return []
    return sorted(p.name for p in adapters.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def test_kill_9_during_training_resumes_only_the_unfinished_adapters(shared: Path, tmp_path: Path) -> None:
    """SIGKILL once the first adapter is finished, before all are: every dir that looks finished is complete
    (weights match its manifest); the re-run trains only the rest and leaves the finished files untouched."""
    config = write_config(tmp_path / "killed", shared, epochs=6)  # a few seconds per adapter: room to kill
    adapters = config.parent / "run" / "adapters"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "train", str(config), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not finished_adapters(adapters) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "train ended before it was killed"
    finished = finished_adapters(adapters)
    assert finished and len(finished) < len(SOURCES), finished
    visible = sorted(p.name for p in adapters.iterdir() if not p.name.startswith("."))
    assert visible == finished  # no half-written dir under a source's name
    for source in finished:  # a dir that looks finished is finished: weights match its manifest
        manifest = json.loads((adapters / source / MANIFEST).read_text())
        assert weights_problem(adapters / source, manifest) is None
    before = adapter_states(adapters, finished)

    result = run_cli(["train", str(config), "--no-progress"])
    assert result.code == 0, result.err
    unfinished = [s for s in SOURCES if s not in finished]
    assert f"{len(unfinished)} trained, {len(finished)} up to date" in result.out, result.out
    assert adapter_states(adapters, finished) == before  # same mtime and bytes
    assert sorted(p.name for p in adapters.iterdir()) == sorted(SOURCES)  # leftovers of the killed run removed
    for source in SOURCES:
        manifest = json.loads((adapters / source / MANIFEST).read_text())
        assert weights_problem(adapters / source, manifest) is None
