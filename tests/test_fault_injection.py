"""Fault injection (issue 14): damaged adapter weights, kill -9 during training, torn log-prob cache entries,
disk full while writing a run. Each test breaks something on purpose and checks that payoutsim says so in one
line (exit 2) or repairs it, and never takes a damaged or half-written file as valid. Tiny preset: seconds."""

from __future__ import annotations

import contextlib
import errno
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

import numpy as np
import pytest
from tiny_lm import TINY_PRESET_TOML

from market.cli import main
from valuation.adapters.store import ADAPTER_WEIGHTS, MANIFEST, weights_problem
from valuation.composition.logprobs import LogProbCache
from valuation.errors import OutputError
from valuation.files import atomic_path
from valuation.pipeline.outputs import RUN_FILES
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
    return sorted(
        p.name for p in adapters.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


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
    assert sorted(p.name for p in adapters.iterdir()) == sorted(
        SOURCES
    )  # leftovers of the killed run removed
    for source in SOURCES:
        manifest = json.loads((adapters / source / MANIFEST).read_text())
        assert weights_problem(adapters / source, manifest) is None


# ---------------------------------------------------------------------------------------------------
# 3. torn or corrupted log-prob cache entries


def damage_entry(path: Path, how: str) -> None:
    """Truncate an entry, flip one byte of its array data, or rewrite it as a valid ``.npz`` whose arrays were
    changed after the checksum was taken (what a torn write of a non-atomic writer could leave)."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        at = data.index(b"\x93NUMPY") + 200  # inside the first array's data
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :])
    else:
        with np.load(path) as npz:
            arrays = {name: np.array(npz[name]) for name in npz.files}
        arrays["chosen"] = arrays["chosen"] + 0.5
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)


@pytest.fixture(scope="module")
def valued(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained folder valued once, clean: its log-prob cache and game.csv."""
    folder = copy_run(trained, tmp_path_factory.mktemp("valued"))
    result = run_cli(["value", str(folder / "valuation.toml"), "--no-progress"])
    assert result.code == 0, result.err
    return folder


@pytest.mark.parametrize("how", ["truncate", "flip", "stale-checksum"])
def test_damaged_logprob_cache_entry_is_recomputed(valued: Path, tmp_path: Path, how: str) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(valued, folder)
    cache = LogProbCache(folder / "run" / "cache" / "logprobs")
    entries = sorted(cache.directory.glob("*.npz"))
    assert len(entries) == 2 * (len(SOURCES) + 1)  # base + each adapter, two objectives
    clean = {p.name: {n: np.array(v) for n, v in np.load(p).items()} for p in entries}
    victim = entries[3]
    untouched = {p.name: p.stat().st_mtime_ns for p in entries if p != victim}
    damage_entry(victim, how)
    with pytest.warns(UserWarning, match=r"log-prob cache entry .*" + victim.name + " is damaged"):
        assert cache.load(victim.stem) is None  # never read as valid
    with pytest.warns(UserWarning, match="is damaged"):
        result = run_cli(["value", str(folder / "valuation.toml"), "--no-progress"])
    assert result.code == 0, result.err
    assert {
        p.name: p.stat().st_mtime_ns for p in entries if p != victim
    } == untouched  # only the victim rewritten
    for entry in entries:
        now = np.load(entry)
        assert sorted(now.files) == sorted(clean[entry.name])
        for name, array in clean[entry.name].items():
            if entry == victim and name in ("chosen", "rejected"):
                # recomputed with only this model's adapter loaded (the clean run loaded all three): same batch
                # shapes and kernels, but not the same code path, so a float32-rounding tolerance
                np.testing.assert_allclose(now[name], array, rtol=1e-6, atol=1e-5)
            elif entry != victim:
                np.testing.assert_array_equal(now[name], array)  # untouched entries: the same bytes
    game_clean = (valued / "run" / "game.csv").read_text().splitlines()
    game_now = (folder / "run" / "game.csv").read_text().splitlines()
    assert game_now[0] == game_clean[0] and len(game_now) == len(game_clean)
    for row_now, row_clean in zip(game_now[1:], game_clean[1:], strict=True):
        now_cells, clean_cells = row_now.split(","), row_clean.split(",")
        assert now_cells[0] == clean_cells[0]  # the coalition
        np.testing.assert_allclose(
            [float(c) for c in now_cells[1:]], [float(c) for c in clean_cells[1:]], atol=1e-6
        )


# ---------------------------------------------------------------------------------------------------
# 4. disk full while writing a run


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of `atomic_path` (``.<name>.*.tmp``) anywhere under ``folder``."""
    return sorted(folder.rglob(".*.tmp"))


def test_disk_full_partway_through_a_file_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old\n")
    match = r"cannot write .*out\.json: No space left on device \[ENOSPC\]; the file was left as it was$"
    with pytest.raises(OutputError, match=match), atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(b"half of the new con")  # the disk fills up partway through the file
        fh.flush()
        raise no_space()
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="Disk quota exceeded"), atomic_path(tmp_path / "new.json"):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with (
        pytest.raises(FileNotFoundError),
        atomic_path(tmp_path / "other.json"),
    ):  # other errors stay as they are
        raise FileNotFoundError(errno.ENOENT, "gone")


def test_disk_full_while_writing_a_run_exits_with_one_line_and_leaves_no_outputs(
    valued: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the third output file of `payoutsim value` (game.csv and game.parquet already replaced):
    one line, exit 1, no temp file, no output file of the run left (run.json, the completion mark, included);
    adapters and the log-prob cache are kept, and the re-run writes what the clean run wrote."""
    folder = tmp_path / "copy"
    shutil.copytree(valued, folder)
    run_dir = folder / "run"
    real_replace = os.replace
    calls: list[Path] = []

    def replace_filling_the_disk(src: str | Path, dst: str | Path) -> None:
        if Path(dst).parent == run_dir:
            calls.append(Path(dst))
            if len(calls) == 3:
                with open(src, "r+b") as fh:  # the file was half written when the disk filled up
                    fh.truncate(max(1, Path(src).stat().st_size // 2))
                raise no_space()
        real_replace(src, dst)

    kept = {
        p: file_state(p)
        for p in sorted((run_dir / "adapters").rglob("*")) + sorted((run_dir / "cache").rglob("*"))
        if p.is_file()
    }
    monkeypatch.setattr(os, "replace", replace_filling_the_disk)
    result = run_cli(["value", str(folder / "valuation.toml"), "--no-progress"])
    monkeypatch.setattr(os, "replace", real_replace)
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and result.err.rstrip().endswith(lines[0]), result.err  # one line, the last
    assert lines[0].startswith(f"error: cannot write {calls[2]}: No space left on device [ENOSPC]; ")
    assert "output files in" in lines[0] and "were removed" in lines[0]
    assert [p.name for p in calls] == ["game.csv", "game.parquet", "items.npz"]
    assert leftovers(folder) == []
    assert not any((run_dir / name).exists() for name in RUN_FILES)
    assert {p: file_state(p) for p in kept} == kept  # adapters and cache untouched

    again = run_cli(["value", str(folder / "valuation.toml"), "--no-progress"])
    assert again.code == 0, again.err
    for name in ("game.csv", "values.json"):  # the same code path on the same cached log-probs: exact
        assert (run_dir / name).read_text() == (valued / "run" / name).read_text()
    assert (run_dir / "run.json").is_file()


def _file_size_limit(limit: int):
    """A ``preexec_fn`` capping the size of any file the child writes (RLIMIT_FSIZE): a write past it fails
    with EFBIG, as on a full or quota-limited disk (SIGXFSZ ignored so the write returns the error)."""

    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_real_size_limited_file_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """Not a monkeypatch: the operating system refuses the write (RLIMIT_FSIZE of 64 bytes) while
    `payoutsim shapley --out` writes its JSON; one line, exit 1, no output file and no temp file left."""
    game = Path(__file__).resolve().parents[1] / "data" / "examples" / "games" / "glove.csv"
    out = tmp_path / "out" / "values.json"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "import sys; from market.cli import main; sys.exit(main(sys.argv[1:]))",
           "shapley", "--utilities", str(game), "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=_file_size_limit(64), check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], done.stderr
    assert "EFBIG" in lines[0] or "too large" in lines[0].lower(), lines[0]
    assert list(out.parent.iterdir()) == []  # neither the output nor a temp file
    # without the limit the same command writes the file (the failure above was the limit's)
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["method"] == "exact"


def test_a_ledger_that_cannot_be_written_says_so_in_one_line_and_leaves_no_stub(tmp_path: Path) -> None:
    """Disk full while creating the ledger (RLIMIT_FSIZE of 4 KiB in a subprocess): DuckDB's write error is one
    line, exit 1, "nothing was recorded"; the half-created ledger file is removed, so no damaged stub remains."""
    scenario = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "example.toml"
    ledger = tmp_path / "ledger.duckdb"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "import sys; from market.cli import main; sys.exit(main(sys.argv[1:]))",
           "payout", str(scenario), "--ledger", str(ledger), "--receipt", str(tmp_path / "receipt.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180,
                          preexec_fn=_file_size_limit(4096), check=False)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot write the ledger {ledger}" in errors[0] and "nothing was recorded" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ledger stub, no WAL, no receipt
