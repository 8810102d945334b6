"""`[runtime]` without Ray: the section, device placement and its errors, the local backend, the shipping of
folders, and `--backend`/`--address` overriding the config."""

from __future__ import annotations

import contextlib
import io
import operator
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from market.cli import main
from valuation.errors import InputError
from valuation.models.cache import BaseModelInfo, checksum_weights
from valuation.models.devices import CPU, Placement, current_placement, resolve_placement, use_placement
from valuation.pipeline.config import parse_valuation_config
from valuation.runtime.backend import LOCAL, open_backend
from valuation.runtime.settings import RuntimeSection, effective_runtime, runtime_overrides
from valuation.runtime.shipping import materialise_base_model, pack_dir, ship_base_model, unpack_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = False
with contextlib.suppress(Exception):
    import torch

    HAS_CUDA = torch.cuda.is_available()


def _config(tmp_path: Path, runtime: str = "") -> dict:
    import tomllib

    text = f'[data]\npath = "pairs.jsonl"\n[output]\ndir = "run"\n{runtime}'
    return parse_valuation_config(tomllib.loads(text), base_dir=tmp_path).model_dump()


def test_runtime_section_defaults_and_is_left_out_of_dumps_and_hashes(tmp_path: Path) -> None:
    import tomllib

    base = '[data]\npath = "pairs.jsonl"\n[output]\ndir = "run"\n'
    plain = parse_valuation_config(tomllib.loads(base), base_dir=tmp_path)
    ray = parse_valuation_config(
        tomllib.loads(base + '[runtime]\nbackend = "ray"\naddress = "auto"\nnum_gpus = 0.5\n'), base_dir=tmp_path
    )
    assert plain.runtime == RuntimeSection() and plain.runtime.device == "auto" and plain.runtime.backend == "local"
    assert ray.runtime.backend == "ray" and ray.runtime.num_gpus == 0.5  # fractional GPUs are allowed
    assert "runtime" not in ray.model_dump() and plain.model_dump() == ray.model_dump()  # where != what


@pytest.mark.parametrize(
    ("runtime", "field"),
    [
        ('device = "gpu"', "runtime.device"),
        ('device = "cuda:x"', "runtime.device"),
        ('backend = "dask"', "runtime.backend"),
        ('dtype = "float16"', "runtime.dtype"),
        ("num_cpus = 0", "runtime.num_cpus"),
        ('address = "a b"', "runtime.address"),
        ("workers = 2", "runtime.workers"),
    ],
)
def test_bad_runtime_keys_name_the_field(tmp_path: Path, runtime: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        _config(tmp_path, f"[runtime]\n{runtime}\n")
    assert info.value.field == field


def test_placement_defaults_to_the_cpu_in_float32_and_is_restored() -> None:
    assert current_placement() == CPU == Placement("cpu", "float32")
    assert resolve_placement("cpu", "auto") == CPU
    if not HAS_CUDA:
        assert resolve_placement("auto", "auto") == CPU  # auto: the CPU path, bit-for-bit as before
    with use_placement(Placement("cpu", "bfloat16")):
        assert current_placement().dtype == "bfloat16"
    assert current_placement() == CPU


@pytest.mark.skipif(HAS_CUDA, reason="checks the error of a machine without CUDA")
def test_cuda_without_cuda_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InputError) as info:
        resolve_placement("cuda:1")
    assert info.value.field == "runtime.device" and "no CUDA device" in info.value.message
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    config = tmp_path / "v.toml"
    config.write_text('[data]\npath = "pairs.jsonl"\n[output]\ndir = "run"\n[runtime]\ndevice = "cuda"\n')
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "field 'runtime.device'" in err and str(config) in err
    assert not (tmp_path / "run" / "adapters").exists()  # nothing trained


def test_local_backend_maps_in_order_and_reports_each_result() -> None:
    seen: list[tuple[int, int]] = []
    out = LOCAL.map(operator.add, [1, 2, 3], shared=(10,), progress=False, on_result=lambda i, r: seen.append((i, r)))
    assert out == [11, 12, 13] and seen == [(0, 11), (1, 12), (2, 13)]
    assert LOCAL.share(obj := object()) is obj
    with open_backend(RuntimeSection(device="cpu")) as backend:
        assert backend is LOCAL and current_placement() == CPU


def test_overrides_replace_only_the_given_keys() -> None:
    section = RuntimeSection(device="cpu", address="auto")
    with runtime_overrides(backend="ray", address=None):
        assert effective_runtime(section) == RuntimeSection(device="cpu", address="auto", backend="ray")
        with runtime_overrides(address="ray://head:10001"):
            assert effective_runtime(section).address == "ray://head:10001"
    assert effective_runtime(section) is section


def test_folders_travel_as_bytes_and_the_base_model_is_found_or_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "driver" / "tiny-x"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "sub" / "extra.txt").write_text("x")
    payload = pack_dir(model)
    assert set(payload.files) == {"config.json", "model.safetensors", "sub/extra.txt"} and payload.nbytes == 10
    copy = unpack_dir(payload, tmp_path / "copy")
    assert pack_dir(copy) == payload
    sha = checksum_weights(model)[0]
    info = BaseModelInfo("tiny", model, sha, "tiny")
    assert materialise_base_model(ship_base_model(info, with_files=False)).path == model  # same node: used in place
    monkeypatch.setenv("PAYOUTSIM_CACHE", str(tmp_path / "node-cache"))
    moved = ship_base_model(info, with_files=True)
    moved = type(moved)(moved.name, str(tmp_path / "elsewhere"), moved.sha256, moved.preset, moved.files)
    here = materialise_base_model(moved)  # another node: written into its cache by sha256
    assert here.path == tmp_path / "node-cache" / "models" / f"shipped-{sha[:16]}" and here.sha256 == sha
    assert (here.path / "model.safetensors").read_bytes() == b"weights"
    assert materialise_base_model(moved).path == here.path  # once per node
    with pytest.raises(FileNotFoundError, match="was not shipped"):
        materialise_base_model(type(moved)(moved.name, str(tmp_path / "nowhere"), "0" * 64, None, None))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "no-port"])
def test_an_unreachable_or_malformed_address_is_one_line_and_exit_2_within_seconds(
    tmp_path: Path, address: str
) -> None:
    """A fresh process (no Ray yet), as a user runs it: refused at once instead of Ray's minute-long retries."""
    pytest.importorskip("ray")
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    config = tmp_path / "v.toml"
    config.write_text('[data]\npath = "pairs.jsonl"\n[output]\ndir = "run"\n')
    address = address.format(port=_free_port())
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from market.cli import main; sys.exit(main(sys.argv[1:]))",
         "train", str(config), "--no-progress", "--backend", "ray", "--address", address],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert time.perf_counter() - started < 30
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: field '--address'") and address in lines[0]
    assert not (tmp_path / "run" / "adapters").exists()


def test_light_commands_do_not_import_ray() -> None:
    code = "import sys; from market.cli import main; main(['--help']); print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_train_help_lists_the_runtime_flags() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["train", "--help"])
    assert "--backend" in out.getvalue() and "--address" in out.getvalue()
