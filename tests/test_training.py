"""Per-source DPO adapters (trl + peft): resumable training, manifests, stale-adapter errors, and the
log-prob scorer that must agree with what trl optimised. Uses a very small `tiny` model."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_lm import TINY_PRESET as TINY

from valuation.adapters.config import TrainingConfig
from valuation.adapters.dpo import dpo_arguments, train_adapters, train_one_adapter
from valuation.adapters.store import MANIFEST, AdapterRecord, plan_adapters
from valuation.composition.logprobs import EvalSet, compute_eval_logprobs, score_pairs
from valuation.errors import InputError
from valuation.models import TinyConfig, load_base_model, prepare_base_model
from valuation.sources import load_corpus_eval_sets, load_preferences
from valuation.synth import SynthConfig, write_corpus

SOURCES = ("flan_v2_niv2", "sharegpt", "noisy")
CONFIG = TrainingConfig(epochs=1, batch_size=8, max_length=96, seed=0)


class Interrupt(Exception):
    """Raised by a callback to simulate a run killed in the middle of a source."""


@dataclass
class Env:
    root: Path
    corpus: Path
    base: Any
    data: dict[str, list[Any]]
    hashes: dict[str, str]
    eval_pairs: list[Any]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("training")
    corpus = root / "corpus"
    write_corpus(corpus, SynthConfig(seed=1, pairs_per_source=16, eval_pairs_per_objective=12))
    base = prepare_base_model(
        "tiny", cache_dir=root / "cache", corpus_dir=corpus, tiny_config=TinyConfig(**TINY), progress=False
    )
    pset = load_preferences(corpus)
    data = {s: pset.sources()[s] for s in SOURCES}
    hashes = {s: pset.content_hash(s) for s in SOURCES}
    eval_pairs = list(load_corpus_eval_sets(corpus)["helpfulness"].pairs)
    return Env(root, corpus, base, data, hashes, eval_pairs)


def _callback(on_begin: Any) -> Any:
    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_begin()

    return Hook()


@dataclass
class Resumed:
    adapters: Path
    first_run_dirs: list[str]
    records: dict[str, AdapterRecord]
    trained_on_resume: list[int]


@pytest.fixture(scope="module")
def resumed(env: Env) -> Resumed:
    """Interrupt training during the third source, then re-run: only the third is trained again."""
    adapters = env.root / "run" / "adapters"
    started = []

    def interrupt_third() -> None:
        started.append(1)
        if len(started) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_adapters(
            env.base, env.data, env.hashes, CONFIG, adapters, progress=False, callbacks=[_callback(interrupt_third)]
        )
    first_run_dirs = sorted(p.name for p in adapters.iterdir())
    (adapters / ".tmp-noisy-leftover").mkdir()  # what a SIGKILL would leave behind
    resumed_starts: list[int] = []
    records = train_adapters(
        env.base,
        env.data,
        env.hashes,
        CONFIG,
        adapters,
        progress=False,
        callbacks=[_callback(lambda: resumed_starts.append(1))],
        log=lambda _msg: None,
    )
    return Resumed(adapters, first_run_dirs, records, resumed_starts)


def test_interrupted_run_leaves_only_finished_adapters(resumed: Resumed) -> None:
    assert resumed.first_run_dirs == ["flan_v2_niv2", "sharegpt"]


def test_resume_trains_only_the_unfinished_source(resumed: Resumed) -> None:
    assert len(resumed.trained_on_resume) == 1
    assert {s: r.status for s, r in resumed.records.items()} == {
        "flan_v2_niv2": "skipped",
        "sharegpt": "skipped",
        "noisy": "trained",
    }
    assert sorted(p.name for p in resumed.adapters.iterdir()) == sorted(SOURCES)  # leftover temp dir removed


def test_adapter_dir_is_a_peft_dir_with_a_manifest(resumed: Resumed, env: Env) -> None:
    adapter = resumed.adapters / "noisy"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    manifest = json.loads((adapter / MANIFEST).read_text())
    assert manifest["source"] == "noisy"
    assert manifest["data_hash"] == env.hashes["noisy"]
    assert manifest["config_hash"] == CONFIG.config_hash()
    assert manifest["base_model"]["sha256"] == env.base.sha256
    assert manifest["n_pairs"] == len(env.data["noisy"])
    assert manifest["metrics"]["steps"] == 2
    assert 0 < manifest["metrics"]["train_loss"] < 1.5
    assert manifest["wall_time_s"] > 0
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16


def test_up_to_date_adapters_are_skipped(resumed: Resumed, env: Env) -> None:
    plan = plan_adapters(resumed.adapters, env.hashes, CONFIG, env.base)
    assert set(plan.actions.values()) == {"skip"}
    assert plan.reasons["sharegpt"] == "up to date"


def test_changed_data_is_an_input_error_naming_the_source_unless_retrain(resumed: Resumed, env: Env) -> None:
    changed = dict(env.hashes, sharegpt="0" * 64)
    with pytest.raises(InputError) as err:
        plan_adapters(resumed.adapters, changed, CONFIG, env.base)
    assert "'sharegpt'" in str(err.value) and "data changed" in str(err.value) and "--retrain" in str(err.value)
    assert err.value.field == "data"
    plan = plan_adapters(resumed.adapters, changed, CONFIG, env.base, retrain=True)
    assert plan.actions == {"flan_v2_niv2": "skip", "sharegpt": "train", "noisy": "skip"}


def test_changed_config_or_base_model_is_an_input_error(resumed: Resumed, env: Env) -> None:
    with pytest.raises(InputError) as err:
        plan_adapters(resumed.adapters, env.hashes, CONFIG.model_copy(update={"learning_rate": 5e-4}), env.base)
    assert err.value.field == "training"
    other_base = replace(env.base, sha256="f" * 64)
    with pytest.raises(InputError) as err:
        plan_adapters(resumed.adapters, env.hashes, CONFIG, other_base)
    assert err.value.field == "model.base" and "another base model" in str(err.value)


def test_training_config_rejects_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrainingConfig(learning_rate=0)
    with pytest.raises(ValidationError):
        TrainingConfig(lr=1e-3)  # type: ignore[call-arg]
    assert TrainingConfig().config_hash() == TrainingConfig().config_hash()
    assert TrainingConfig(seed=1).config_hash() != TrainingConfig().config_hash()
    # precomputing reference log-probs changes the cost, not the adapter: not part of the hash
    assert TrainingConfig(precompute_ref_log_probs=False).config_hash() == TrainingConfig().config_hash()
    assert TrainingConfig().precompute_enabled and not TrainingConfig(epochs=1).precompute_enabled
    assert TrainingConfig(epochs=1, precompute_ref_log_probs=True).precompute_enabled


def test_precomputed_reference_log_probs_train_the_same_adapter(env: Env, tmp_path: Path) -> None:
    """trl's ``precompute_ref_log_probs`` (the default at 2 epochs) gives the loss and adapter of the
    per-step reference forward, up to float rounding."""
    from safetensors.numpy import load_file

    pairs = env.data["sharegpt"][:16]
    out = {}
    for precompute in (False, True):
        config = TrainingConfig(epochs=2, batch_size=8, max_length=96, seed=0, precompute_ref_log_probs=precompute)
        assert dpo_arguments(config, tmp_path, 16).precompute_ref_log_probs is precompute
        manifest = train_one_adapter(env.base, "p", pairs, data_hash="x", config=config,
                                     out_dir=tmp_path / f"p{precompute}")
        out[precompute] = (manifest["metrics"], load_file(tmp_path / f"p{precompute}" / "adapter_model.safetensors"))
    assert out[True][0]["train_loss"] == pytest.approx(out[False][0]["train_loss"], rel=1e-6)
    for name, weights in out[False][1].items():
        np.testing.assert_allclose(out[True][1][name], weights, atol=1e-5)
    assert dpo_arguments(TrainingConfig(), tmp_path, 16, precompute=False).precompute_ref_log_probs is False


def test_scorer_agrees_with_trl_on_the_first_step(env: Env, tmp_path: Path) -> None:
    """Before the first update the LoRA adapter is a no-op, so trl's logged mean log-probs of the batch equal
    our base-model scores: the tokenisation (chat template, response start, truncation) matches trl's."""
    from transformers import TrainerCallback

    pairs = env.data["sharegpt"][:8]
    captured: list[dict[str, float]] = []

    class Grab(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            captured.append(dict(logs or {}))

    config = TrainingConfig(epochs=1, batch_size=8, max_length=96, seed=0)
    train_one_adapter(env.base, "probe", pairs, data_hash="x", config=config, out_dir=tmp_path / "probe",
                      callbacks=[Grab()])
    first = next(entry for entry in captured if "logps/chosen" in entry)
    model, tokenizer = load_base_model(env.base)
    scores = score_pairs(model, tokenizer, pairs, max_length=96)
    assert float(first["logps/chosen"]) == pytest.approx(scores.chosen.mean(), rel=1e-4)
    assert float(first["logps/rejected"]) == pytest.approx(scores.rejected.mean(), rel=1e-4)
    assert (scores.chosen_tokens > 0).all()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_multi_adapter_scoring_equals_separate_models_and_is_cached(resumed: Resumed, env: Env) -> None:
    from peft import PeftModel

    eval_set = EvalSet("helpfulness", env.eval_pairs[:6], data_hash="eval-6")
    cache = env.root / "logprob-cache"
    report = compute_eval_logprobs(
        env.base, resumed.records, [eval_set], cache_dir=cache, max_length=96, progress=False
    )
    assert report.computed == len(SOURCES) + 1 and report.cached == 0
    table = report.tables["helpfulness"]

    model, tokenizer = load_base_model(env.base)
    base_alone = score_pairs(model, tokenizer, eval_set.pairs, max_length=96)
    assert np.max(np.abs(base_alone.chosen - table.base.chosen)) <= 1e-4
    single = PeftModel.from_pretrained(model, str(resumed.records["noisy"].path))
    noisy_alone = score_pairs(single, tokenizer, eval_set.pairs, max_length=96)
    assert np.max(np.abs(noisy_alone.chosen - table.models["noisy"].chosen)) <= 1e-4
    assert np.max(np.abs(noisy_alone.rejected - table.models["noisy"].rejected)) <= 1e-4
    assert np.max(np.abs(table.models["noisy"].chosen - table.base.chosen)) > 0  # the adapter does something

    again = compute_eval_logprobs(env.base, resumed.records, [eval_set], cache_dir=cache, max_length=96, progress=False)
    assert again.computed == 0 and again.cached == len(SOURCES) + 1
    assert np.array_equal(again.tables["helpfulness"].base.chosen, table.base.chosen)  # exact: from the cache
