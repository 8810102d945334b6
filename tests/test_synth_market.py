"""Generated synthetic markets of any size (`data synth --n-sources N`): planted profiles and their manifest."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from market.cli import main
from valuation.errors import InputError
from valuation.pipeline.config import SynthSection
from valuation.pipeline.inputs import synthesise_corpus
from valuation.synth import OBJECTIVES, PAIR_KINDS, SynthConfig, generate_corpus
from valuation.synth.market import GENERATED_RATES, MAX_GENERATED_SOURCES, draw_profiles

SMALL = {"pairs_per_source": 30, "eval_pairs_per_objective": 10}


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode())
        h.update(data)
    return h.hexdigest()


def test_without_n_sources_the_corpus_and_manifest_are_unchanged() -> None:
    config = SynthConfig(seed=3, **SMALL)
    corpus = generate_corpus(config)
    assert "n_sources" not in corpus.manifest["config"] and "generated" not in corpus.manifest
    assert list(corpus.train) == ["flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat", "noisy", "duplicate", "harmful"]
    # adding generated sources leaves every named source's file byte-identical
    mixed = generate_corpus(SynthConfig(seed=3, n_sources=5, sources=config.sources, adversarial=config.adversarial, **SMALL))
    for rel, data in corpus.data_files.items():
        assert mixed.data_files[rel] == data, rel


def test_same_seed_same_bytes_other_seed_other_profiles() -> None:
    a = generate_corpus(SynthConfig(seed=7, n_sources=12, **SMALL))
    b = generate_corpus(SynthConfig(seed=7, n_sources=12, **SMALL))
    c = generate_corpus(SynthConfig(seed=8, n_sources=12, **SMALL))
    assert _digest(a.files()) == _digest(b.files())
    assert [p.mixture for p in a.profiles.values()] != [p.mixture for p in c.profiles.values()]


def test_growing_n_keeps_the_earlier_sources() -> None:
    small = generate_corpus(SynthConfig(seed=2, n_sources=10, **SMALL))
    large = generate_corpus(SynthConfig(seed=2, n_sources=40, **SMALL))
    for name in small.train:
        assert large.data_files[f"train/{name}.jsonl"] == small.data_files[f"train/{name}.jsonl"]
        assert large.manifest["sources"][name] == small.manifest["sources"][name]


def test_64_sources_manifest_lists_every_planted_strength(tmp_path: Path) -> None:
    out = tmp_path / "m64"
    assert main(["data", "synth", "--out", str(out), "--n-sources", "64", "--pairs-per-source", "200",
                 "--eval-pairs", "50"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    names = [f"src{i:02d}" for i in range(64)]
    assert sorted(p.stem for p in (out / "train").iterdir()) == names  # the named kinds are off by default
    assert manifest["config"]["n_sources"] == 64 and manifest["generated"]["sources"] == names
    planted = manifest["generated"]["planted_strength"]
    assert list(planted) == names
    for name in names:
        entry = manifest["sources"][name]
        assert entry["pairs"] == 200 and entry["role"] == "generated"
        assert abs(sum(entry["mixture"].values()) - 1.0) < 1e-9
        for i, obj in enumerate(OBJECTIVES):  # planted strength = Σ fraction · effect, documented formula
            signal = sum(f * PAIR_KINDS[k].effect[i] for k, f in entry["mixture"].items())
            assert abs(planted[name][obj] - signal) < 1e-6
            assert entry["expected"][obj]["signal"] == planted[name][obj]
    classes = Counter(e["class"] for e in manifest["sources"].values())
    assert set(classes) <= set(GENERATED_RATES) and classes["mixture"] > 32
    for entry in manifest["sources"].values():
        if entry["class"] == "noisy":
            assert entry["expected"]["helpfulness"]["sign"] == -1
        if entry["class"] == "harmful":
            assert entry["expected"]["harmlessness"]["sign"] == -1


def test_near_duplicates_copy_an_earlier_source_with_perturbed_pairs() -> None:
    corpus = generate_corpus(SynthConfig(seed=0, n_sources=40, **SMALL))
    dups = [p for p in corpus.profiles.values() if p.draw == "near_duplicate"]
    assert dups
    for dup in dups:
        original = corpus.profiles[dup.duplicate_of]
        assert original.draw != "near_duplicate" and original.name < dup.name
        assert dup.mixture == original.mixture
        ours, theirs = corpus.train[dup.name], corpus.train[original.name]
        assert [p.kind for p in ours] == [p.kind for p in theirs]
        assert all((a.prompt, a.chosen, a.rejected) != (b.prompt, b.chosen, b.rejected) for a, b in zip(ours, theirs, strict=True))
        assert corpus.manifest["sources"][dup.name]["duplicate_of"] == original.name


def test_class_rates_hold_over_many_draws() -> None:
    n = 2000
    profiles = draw_profiles(11, n)
    counts = Counter(p.draw for p in profiles)
    for cls, rate in GENERATED_RATES.items():  # binomial sd at n = 2000: ≤ 1.1 points; allow ~3 sd
        assert abs(counts[cls] / n - rate) < 0.035, (cls, counts[cls])
    noisy = [p.signal()["helpfulness"] for p in profiles if p.draw == "noisy"]
    harmful = [p.signal()["harmlessness"] for p in profiles if p.draw == "harmful"]
    assert all(-0.8 - 1e-9 <= s <= -0.2 + 1e-9 for s in noisy)
    assert all(-1.0 <= s <= -0.6 + 1e-9 for s in harmful)
    mixtures = [p.signal() for p in profiles if p.draw == "mixture"]
    assert all(0 <= m[obj] <= 1 for m in mixtures for obj in OBJECTIVES)
    # the mixtures spread the planted strengths over the range rather than bunching them
    helpful = sorted(m["helpfulness"] for m in mixtures)
    assert helpful[len(helpful) // 10] < 0.2 and helpful[-len(helpful) // 10] > 0.5


@pytest.mark.parametrize("value", ["0", str(MAX_GENERATED_SOURCES + 1)])
def test_cli_n_sources_out_of_range_exits_2(tmp_path: Path, capsys, value: str) -> None:
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n-sources", value]) == 2
    err = capsys.readouterr().err
    assert "--n-sources" in err and f"between 1 and {MAX_GENERATED_SOURCES}" in err and value in err
    assert not (tmp_path / "x").exists()


def test_config_n_sources_validation_and_mixing_named_kinds() -> None:
    for bad in (0, MAX_GENERATED_SOURCES + 1, True, 2.0):
        with pytest.raises(InputError) as err:
            SynthConfig(n_sources=bad)
        assert err.value.field == "n_sources"
    with pytest.raises(InputError):
        SynthConfig(sources=())  # without generated sources a named one is still required
    config = SynthConfig(n_sources=3, sources=("sharegpt",), adversarial=("harmful",), **SMALL)
    assert config.all_sources == ("sharegpt", "harmful", "src00", "src01", "src02")


def test_valuation_config_synth_accepts_n_sources(tmp_path: Path) -> None:
    section = SynthSection(seed=4, n_sources=6, pairs_per_source=12, eval_pairs_per_objective=8)
    corpus_dir = synthesise_corpus(tmp_path / "corpus", section.model_dump(exclude_none=True))
    assert sorted(p.stem for p in (corpus_dir / "train").iterdir()) == [f"src{i:02d}" for i in range(6)]
    with pytest.raises(ValidationError):
        SynthSection(n_sources=MAX_GENERATED_SOURCES + 1)
