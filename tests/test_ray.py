"""The Ray backend on the test session's one local Ray instance (`ray_local`, conftest.py), and — last in this
file — a two-node `ray.cluster_utils.Cluster` that loses a node mid-run.

Every comparison with the local backend uses a tolerance: a Ray task trains and scores with one torch thread,
the local run with the machine's default, so sums may round differently (measured: utilities differ by ~1e-8).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_lm import tiny_model_toml

from market.cli import main
from valuation.errors import InputError
from valuation.pipeline.config import load_valuation_config
from valuation.runtime.settings import RuntimeSection
from valuation.synth import SynthConfig, write_corpus

pytest.importorskip("ray")

SOURCES = ["flan_v2_niv2", "sharegpt"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-corpus")
    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=12, eval_pairs_per_objective=8))
    return root / "corpus"


@pytest.fixture(scope="module")
def local_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`payoutsim value` of the two-source config with the local backend: the reference run, whose adapters
    the other tests copy (so they train only what they test)."""
    folder = tmp_path_factory.mktemp("ray-local")
    code, _, err = run_cli("value", str(write_config(folder, corpus, folder / "cache")), "--no-progress")
    assert code == 0, err
    return folder / "run"


def write_config(folder: Path, corpus: Path, cache: Path, *, sources: list[str] = SOURCES, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "valuation.toml"
    path.write_text(
        f'[data]\ncorpus = "{corpus}"\nsources = {json.dumps(sources)}\n{tiny_model_toml(cache)}'
        f'[output]\ndir = "run"\n{extra}',
        encoding="utf-8",
    )
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def game(run_dir: Path) -> np.ndarray:
    import polars as pl

    return pl.read_csv(run_dir / "game.csv").drop("coalition").to_numpy()


# ---------------------------------------------------------------------------------------------------
# the backend itself


def _fail_with_a_data_error(item: str, log: str) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("attempt\n")
    raise InputError("not a preference pair", file=item, row=3, field="chosen")


def _die_once(item: int, marker: str) -> int:
    """Kills its worker process the first time (a lost task), returns ``item * 2`` when run again."""
    if not os.path.exists(marker):
        Path(marker).write_text("died", encoding="utf-8")
        os._exit(1)
    return item * 2


def test_a_data_error_in_a_task_is_raised_once_as_the_local_error(ray_local: Any, tmp_path: Path) -> None:
    from valuation.runtime.backend import LOCAL
    from valuation.runtime.ray_backend import RayBackend

    log = tmp_path / "attempts.txt"
    with pytest.raises(InputError) as local:
        LOCAL.map(_fail_with_a_data_error, ["bad.jsonl"], shared=(str(log),), progress=False)
    backend = RayBackend(RuntimeSection(backend="ray", max_retries=3, device="cpu"), ship_files=False)
    with pytest.raises(InputError) as remote:
        backend.map(_fail_with_a_data_error, ["bad.jsonl"], shared=(str(log),), progress=False)
    assert str(remote.value) == str(local.value) == "bad.jsonl: row 3: field 'chosen': not a preference pair"
    assert type(remote.value) is InputError and remote.value.field == "chosen"
    assert log.read_text().count("attempt") == 2  # once locally, once on Ray: never retried


def test_a_task_whose_worker_dies_is_retried(ray_local: Any, tmp_path: Path) -> None:
    from valuation.runtime.ray_backend import RayBackend

    backend = RayBackend(RuntimeSection(backend="ray", max_retries=2, device="cpu"), ship_files=False)
    arrived: list[int] = []
    out = backend.map(_die_once, [1, 2], shared=(str(tmp_path / "died"),), progress=False,
                      on_result=lambda i, r: arrived.append(i))
    assert out == [2, 4] and sorted(arrived) == [0, 1] and (tmp_path / "died").exists()


# ---------------------------------------------------------------------------------------------------
# the pipeline through Ray


def test_a_bad_source_file_stops_a_ray_run_with_the_local_error(ray_local: Any, tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "source": "s"}\n{oops\n',
                                          encoding="utf-8")
    config = tmp_path / "v.toml"
    config.write_text('[data]\npath = "pairs.jsonl"\n[output]\ndir = "run"\n', encoding="utf-8")
    local = run_cli("train", str(config), "--no-progress")
    remote = run_cli("train", str(config), "--no-progress", "--backend", "ray")
    assert local[0] == remote[0] == 2
    assert remote[2].strip() == local[2].strip() and len(remote[2].strip().splitlines()) == 1
    assert "pairs.jsonl" in remote[2] and "line 2" in remote[2]


def test_value_through_ray_matches_local_and_resumes(
    ray_local: Any, corpus: Path, local_run: Path, tmp_path: Path
) -> None:
    ray_cfg = write_config(tmp_path / "ray", corpus, local_run.parent / "cache")
    code, out, err = run_cli("value", str(ray_cfg), "--no-progress", "--backend", "ray")
    assert code == 0, err
    ray_run = tmp_path / "ray" / "run"
    np.testing.assert_allclose(game(ray_run), game(local_run), rtol=0, atol=1e-6)
    for source in SOURCES:  # returned through the object store, written with a complete manifest
        manifest = json.loads((ray_run / "adapters" / source / "manifest.json").read_text())
        reference = json.loads((local_run / "adapters" / source / "manifest.json").read_text())
        assert manifest["source"] == source and manifest["data_hash"] == reference["data_hash"]
        assert manifest["metrics"]["train_loss"] == pytest.approx(reference["metrics"]["train_loss"], abs=1e-5)
    assert len(list((ray_run / "cache" / "logprobs").glob("*.npz"))) == len(list(
        (local_run / "cache" / "logprobs").glob("*.npz")))
    # resume: a finished adapter is kept when one is missing (an interrupted run), only the missing one trains
    kept = json.loads((ray_run / "adapters" / SOURCES[0] / "manifest.json").read_text())
    shutil.rmtree(ray_run / "adapters" / SOURCES[1])
    code, out, err = run_cli("train", str(ray_cfg), "--no-progress", "--backend", "ray")
    assert code == 0, err
    assert f"{SOURCES[0]}: skipped: up to date" in err and "1 trained, 1 up to date" in out
    assert json.loads((ray_run / "adapters" / SOURCES[0] / "manifest.json").read_text()) == kept


def _no_model_on_the_driver(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the driver loaded a model: decoding did not run as Ray tasks")


def test_reward_utility_decodes_coalitions_as_ray_tasks(
    ray_local: Any, corpus: Path, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct sampling (one task per coalition) and the importance-sampling pool (one task), same tables."""
    from valuation.decoding import coalition_responses
    from valuation.pipeline.run import run_value
    from valuation.runtime.settings import runtime_overrides

    (tmp_path / "toy_rewards.py").write_text(
        "def length(texts, prompts):\n    return [min(len(t), 40) / 40 for t in texts]\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    extra = (
        '[utility]\nkind = "reward"\n[reward]\nhelpfulness = "callable:toy_rewards:length"\n'
        "[sampling]\nprompts_per_objective = 2\nsamples_per_prompt = 2\nmax_new_tokens = 6\nseed = 3\n"
    )
    for importance in (False, True):
        text = extra + f"importance = {str(importance).lower()}\n"
        cache = local_run.parent / "cache"
        local = load_valuation_config(write_config(tmp_path / f"local-{importance}", corpus, cache, extra=text))
        remote = load_valuation_config(write_config(tmp_path / f"ray-{importance}", corpus, cache, extra=text))
        for config in (local, remote):  # the reference run's adapters: only the decoding differs
            shutil.copytree(local_run / "adapters", config.output.dir / "adapters")
        local_value = run_value(local, progress=False, log=lambda _m: None)
        with runtime_overrides(backend="ray"), monkeypatch.context() as patch:
            # the driver decodes nothing itself (n = 2: every coalition is a pool component, no densities)
            patch.setattr(coalition_responses, "load_base_model", _no_model_on_the_driver)
            remote_value = run_value(remote, progress=False, log=lambda _m: None)
        assert all(r.status == "skipped" for r in remote_value.adapters.values())
        np.testing.assert_allclose(remote_value.table.values, local_value.table.values, rtol=0, atol=1e-6)
        names = sorted(p.name for p in (remote_value.run_dir / "cache" / "samples").glob("*.json"))
        assert names == sorted(p.name for p in (local_value.run_dir / "cache" / "samples").glob("*.json"))
        assert any(n.startswith("proposal-") for n in names) is importance


def test_retraining_baseline_through_ray_matches_local(
    ray_local: Any, corpus: Path, local_run: Path, tmp_path: Path
) -> None:
    from valuation.retraining.run import run_retrain
    from valuation.runtime.settings import runtime_overrides

    extra = '[retrain]\norders = 1\nmerge = "none"\n'
    cache = local_run.parent / "cache"
    local = load_valuation_config(write_config(tmp_path / "local", corpus, cache, extra=extra))
    remote = load_valuation_config(write_config(tmp_path / "ray", corpus, cache, extra=extra))
    for config in (local, remote):  # the reference run's per-source adapters: only the retraining differs
        shutil.copytree(local_run / "adapters", config.output.dir / "adapters")
    local_retrain = run_retrain(local, progress=False, log=lambda _m: None)
    with runtime_overrides(backend="ray"):
        remote_run = run_retrain(remote, progress=False, log=lambda _m: None)
    assert set(remote_run.variants) == set(local_retrain.variants) == {"sequential", "union"}
    for name, variant in local_retrain.variants.items():
        np.testing.assert_allclose(remote_run.variants[name].values, variant.values, rtol=0, atol=1e-5)
    for kind in ("sequential", "union"):  # the adapters came back with the local manifest keys
        manifests = [json.loads(p.read_text()) for p in (remote.output.dir / "retrain" / kind).glob("*/manifest.json")]
        assert len(manifests) == 1 and manifests[0]["retrain_kind"] == kind
        assert ("parent_key" in manifests[0]) is (kind == "sequential")
        if kind == "sequential":
            assert manifests[0]["parent"] in {str(remote.output.dir / "adapters" / s) for s in SOURCES}


# ---------------------------------------------------------------------------------------------------
# a node lost mid-run (its own two-node cluster: the session's instance is shut down first, and started
# again by the next test that asks for it)


def test_a_node_lost_mid_training_loses_no_finished_work(corpus: Path, tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from valuation.adapters.dpo import train_adapters
    from valuation.pipeline.inputs import prepare_inputs
    from valuation.runtime.backend import open_backend

    sources = ["flan_v2_niv2", "sharegpt", "evol_instruct"]
    config = load_valuation_config(write_config(tmp_path / "cfg", corpus, tmp_path / "c", sources=sources))
    prepared = prepare_inputs(config, progress=False)
    reference = train_adapters(prepared.base, prepared.train, prepared.data_hashes, config.training,
                               tmp_path / "local", progress=False, log=lambda _m: None)
    if ray.is_initialized():
        ray.shutdown()
    node_args = {"num_cpus": 1, "object_store_memory": 80 * 1024**2, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    worker = cluster.add_node(**{k: v for k, v in node_args.items() if k != "include_dashboard"})
    adapters_dir = tmp_path / "cluster"
    finished_at_kill: list[int] = []

    def kill_after_first_adapter() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(adapters_dir.glob("*/manifest.json")):
            time.sleep(0.1)
        cluster.remove_node(worker, allow_graceful=False)
        finished_at_kill.append(len(list(adapters_dir.glob("*/manifest.json"))))

    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        killer = threading.Thread(target=kill_after_first_adapter, daemon=True)
        killer.start()
        runtime = RuntimeSection(backend="ray", address=cluster.address, device="cpu", max_retries=3)
        with open_backend(runtime) as backend:
            assert backend.ship_files  # a cluster joined by address: the base model travels as bytes
            records = train_adapters(prepared.base, prepared.train, prepared.data_hashes, config.training,
                                     adapters_dir, progress=False, log=lambda _m: None, backend=backend)
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert finished_at_kill and finished_at_kill[0] < len(sources)  # killed mid-run, with work in flight
    assert len(records) == len(sources) and all(r.status == "trained" for r in records.values())
    for source in sources:  # every adapter finished, with the local run's results
        local, remote = reference[source].manifest, records[source].manifest
        assert remote["adapter_sha256"] == records[source].sha256
        assert remote["metrics"]["train_loss"] == pytest.approx(local["metrics"]["train_loss"], abs=1e-5)
