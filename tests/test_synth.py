"""The synthetic market corpus: determinism, layout, planted profiles, held-out split, CLI."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from market.cli import main
from valuation.errors import InputError
from valuation.synth import (
    ADVERSARIAL_SOURCES,
    OBJECTIVES,
    PAIR_KINDS,
    PAPER_SOURCES,
    SUMMARY_COLUMNS,
    SynthConfig,
    generate_corpus,
    write_corpus,
    write_corpus_summary,
)
from valuation.synth.generate import kind_counts
from valuation.synth.items import (
    HELPFUL_FAMILIES,
    MAX_ANSWER_WORDS,
    MAX_PROMPT_WORDS,
    safety_item,
)
from valuation.synth.template_files import TEMPLATE_DIR, TEMPLATE_PACKAGE, load_template

SMALL = SynthConfig(seed=1, pairs_per_source=40, eval_pairs_per_objective=20)
RUDE = re.compile(r"\b(idiot|idiots|stupid|damn|shut up|moron|loser)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def corpus():
    """The default corpus (200 pairs per source, 200 eval pairs per objective), seed 0."""
    return generate_corpus(SynthConfig(seed=0))


def _word_dice(a: str, b: str) -> float:
    """Dice overlap of the two texts' word multisets (1.0 = same words, any order)."""
    wa, wb = Counter(re.findall(r"\w+", a.lower())), Counter(re.findall(r"\w+", b.lower()))
    return 2 * sum((wa & wb).values()) / (sum(wa.values()) + sum(wb.values()))


def _read_all(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_overwrites_a_previous_corpus(tmp_path: Path) -> None:
    a = tmp_path / "A"
    b = tmp_path / "B"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(a),
                "--seed",
                "1",
                "--pairs-per-source",
                "40",
                "--eval-pairs",
                "20",
            ]
        )
        == 0
    )
    first = _read_all(a)
    # rewriting over the previous corpus is allowed and gives the same bytes
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(a),
                "--seed",
                "1",
                "--pairs-per-source",
                "40",
                "--eval-pairs",
                "20",
            ]
        )
        == 0
    )
    assert _read_all(a) == first
    write_corpus(b, SMALL)
    assert _read_all(b) == first
    expected = {"manifest.json", "eval/helpfulness.jsonl", "eval/harmlessness.jsonl"}
    expected |= {f"train/{s}.jsonl" for s in PAPER_SOURCES + ADVERSARIAL_SOURCES}
    assert set(first) == expected
    # nothing half-written or temporary is left next to the corpus
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]


def test_a_different_seed_changes_every_file(tmp_path: Path) -> None:
    one = write_corpus(tmp_path / "one", SMALL).parent
    two = write_corpus(
        tmp_path / "two", SynthConfig(seed=2, pairs_per_source=40, eval_pairs_per_objective=20)
    ).parent
    a, b = _read_all(one), _read_all(two)
    assert set(a) == set(b)
    for rel in a:
        assert a[rel] != b[rel], rel


def test_manifest_documents_profiles_eval_sets_and_hashes(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "c", SMALL)
    text = path.read_text(encoding="utf-8")
    assert str(tmp_path) not in text  # no absolute paths
    manifest = json.loads(text)
    assert manifest["generator"]["name"] == "payoutsim.synth"
    assert manifest["config"]["seed"] == 1
    assert set(manifest["sources"]) == set(PAPER_SOURCES + ADVERSARIAL_SOURCES)
    for name, entry in manifest["sources"].items():
        assert entry["description"]
        assert abs(sum(entry["mixture"].values()) - 1.0) < 1e-9
        assert set(entry["mixture"]) <= set(PAIR_KINDS)
        assert set(entry["expected"]) == set(OBJECTIVES)
        for exp in entry["expected"].values():
            assert exp["sign"] in (-1, 0, 1)
            assert exp["strength"] in ("none", "weak", "moderate", "strong")
        assert sum(entry["kind_counts"].values()) == entry["pairs"] == 40
        assert entry["file"] == f"train/{name}.jsonl"
    assert manifest["sources"]["duplicate"]["duplicate_of"] == "sharegpt"
    assert set(manifest["eval"]) == set(OBJECTIVES)
    assert manifest["eval"]["helpfulness"]["kind"] == "helpful"
    assert manifest["eval"]["harmlessness"]["kind"] == "safety"
    root = path.parent
    for rel, info in manifest["files"].items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert data.count(b"\n") == info["lines"] == len(manifest["line_kinds"][rel])


def test_paper_profiles_mirror_the_paper(corpus) -> None:
    exp = {name: corpus.manifest["sources"][name]["expected"] for name in corpus.train}
    help_ = {n: e["helpfulness"]["signal"] for n, e in exp.items()}
    harm = {n: e["harmlessness"]["signal"] for n, e in exp.items()}
    # sharegpt strongly helpful, the most helpful paper source
    assert exp["sharegpt"]["helpfulness"]["strength"] == "strong"
    assert max(PAPER_SOURCES, key=help_.__getitem__) == "sharegpt"
    # ultrachat mostly adds harmlessness (and a little helpfulness)
    assert max(PAPER_SOURCES, key=harm.__getitem__) == "ultrachat"
    assert harm["ultrachat"] > help_["ultrachat"] > 0
    # evol_instruct helpful but the most harmful paper source
    assert help_["evol_instruct"] > 0
    assert min(PAPER_SOURCES, key=harm.__getitem__) == "evol_instruct"
    assert harm["evol_instruct"] < 0
    # flan_v2_niv2 a small helpfulness gain, no harmlessness effect
    assert exp["flan_v2_niv2"]["helpfulness"]["strength"] == "weak"
    assert exp["flan_v2_niv2"]["harmlessness"]["sign"] == 0
    # adversarial
    assert exp["noisy"]["helpfulness"]["sign"] == -1
    assert exp["harmful"]["harmlessness"]["signal"] == -1.0
    assert exp["duplicate"] == exp["sharegpt"]


def test_each_source_has_exactly_its_documented_mixture(corpus) -> None:
    for name, pairs in corpus.train.items():
        mixture = corpus.profiles[name].mixture
        counts = {k: sum(p.kind == k for p in pairs) for k in mixture}
        assert counts == kind_counts(mixture, 200) == corpus.manifest["sources"][name]["kind_counts"]
        for kind, frac in mixture.items():
            assert abs(counts[kind] / 200 - frac) <= 1 / 200
        assert corpus.manifest["line_kinds"][f"train/{name}.jsonl"] == [p.kind for p in pairs]


def test_pair_kinds_put_the_right_answer_on_each_side(corpus) -> None:
    seen = set()
    for pairs in list(corpus.train.values()) + list(corpus.eval.values()):
        for p in pairs:
            seen.add(p.kind)
            if p.kind == "safety":
                assert RUDE.search(p.rejected) and not RUDE.search(p.chosen), p
            elif p.kind == "anti_safety":
                assert RUDE.search(p.chosen) and not RUDE.search(p.rejected), p
            else:  # helpful data never uses rude words, so it carries no harmlessness signal
                assert not RUDE.search(p.chosen + " " + p.rejected), p
            if p.kind == "helpful_weak":
                assert len(p.rejected) < len(p.chosen), p
    assert seen == set(PAIR_KINDS)


def test_records_are_valid_distinct_and_short(tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "c", SynthConfig(seed=3)).parent
    for path in sorted(root.rglob("*.jsonl")):
        triples = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert line == json.dumps(rec, sort_keys=True, ensure_ascii=False)
            keys = {"source", "prompt", "chosen", "rejected"}
            if path.parent.name == "eval":
                keys.add("objective")
                assert rec["objective"] == path.stem and rec["source"] == f"eval_{path.stem}"
            else:
                assert rec["source"] == path.stem
            assert set(rec) == keys
            assert rec["prompt"] and rec["chosen"] and rec["rejected"]
            assert rec["chosen"] != rec["rejected"]
            assert len(rec["prompt"].split()) <= MAX_PROMPT_WORDS
            assert len(rec["chosen"].split()) <= MAX_ANSWER_WORDS
            assert len(rec["rejected"].split()) <= MAX_ANSWER_WORDS
            triple = (rec["prompt"], rec["chosen"], rec["rejected"])
            assert triple not in triples, (path.name, triple)
            triples.add(triple)


def test_template_files_ship_as_package_data_and_every_one_is_used() -> None:
    """One TOML file per helpful family plus safety.toml, read through importlib.resources; every
    family's patterns fill (no unknown placeholder) and give ≥ 2 distinct good answers."""
    shipped = {p.name for p in (files(TEMPLATE_PACKAGE) / TEMPLATE_DIR).iterdir() if p.name.endswith(".toml")}
    assert shipped == {f"{family}.toml" for family in HELPFUL_FAMILIES} | {"safety.toml"}
    rng = random.Random(0)
    for family, build in HELPFUL_FAMILIES.items():
        assert {"good", "bad", "terse"} <= set(load_template(family)), family
        for _ in range(50):
            item = build(rng)
            assert item.family == family and len(set(item.goods)) >= 2 and item.bads, item
            assert "{" not in item.prompt + item.terse + "".join(item.goods + item.bads), item
    categories = {safety_item(rng).category for _ in range(500)}
    assert categories == set(load_template("safety")["categories"])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_eval_prompt_appears_in_train(seed: int) -> None:
    c = generate_corpus(SynthConfig(seed=seed))
    train_prompts = {p.prompt for pairs in c.train.values() for p in pairs}
    for obj, pairs in c.eval.items():
        prompts = [p.prompt for p in pairs]
        assert len(set(prompts)) == len(prompts) == 200, obj
        assert not set(prompts) & train_prompts
        assert all(p.objective == obj for p in pairs)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8, 1.0])
def test_noisy_flip_rate_is_honoured(rate: float) -> None:
    cfg = SynthConfig(
        seed=4, pairs_per_source=100, sources=("sharegpt",), adversarial=("noisy",), noisy_flip_rate=rate
    )
    c = generate_corpus(cfg)
    flipped = sum(p.kind == "helpful_flipped" for p in c.train["noisy"])
    assert flipped == round(rate * 100)
    assert all(p.kind in ("helpful", "helpful_flipped") for p in c.train["noisy"])
    expected = c.manifest["sources"]["noisy"]["expected"]["helpfulness"]
    assert expected["signal"] == pytest.approx(1 - 2 * rate)


def test_default_noisy_source_is_net_negative_for_helpfulness() -> None:
    assert SynthConfig().noisy_flip_rate > 0.5


def test_duplicate_is_a_near_copy_of_its_original(corpus) -> None:
    original = corpus.train["sharegpt"]
    dup = corpus.train["duplicate"]
    assert len(dup) == len(original)
    sims = []
    for o, d in zip(original, dup, strict=True):
        assert d.kind == o.kind
        assert (d.prompt, d.chosen, d.rejected) != (o.prompt, o.chosen, o.rejected)
        sims += [
            _word_dice(o.prompt, d.prompt),
            _word_dice(o.chosen, d.chosen),
            _word_dice(o.rejected, d.rejected),
        ]
    assert min(sims) > 0.6  # e.g. "What is inflation?" → "What's inflation?"
    assert sum(sims) / len(sims) > 0.95
    # the copy does not depend on whether the original is in the market
    alone = generate_corpus(SynthConfig(seed=0, sources=("ultrachat",), adversarial=("duplicate",)))
    assert alone.data_files["train/duplicate.jsonl"] == corpus.data_files["train/duplicate.jsonl"]


def test_adding_or_removing_a_source_leaves_the_others_unchanged(corpus) -> None:
    one = generate_corpus(SynthConfig(seed=0, sources=("evol_instruct", "sharegpt"), adversarial=()))
    for name in ("sharegpt", "evol_instruct"):
        assert one.data_files[f"train/{name}.jsonl"] == corpus.data_files[f"train/{name}.jsonl"]
    assert one.data_files["eval/helpfulness.jsonl"] == corpus.data_files["eval/helpfulness.jsonl"]


def test_profanity_check_scores_harmful_compliance_high_and_refusals_low(corpus) -> None:
    profanity_check = pytest.importorskip("profanity_check")
    pairs = corpus.eval["harmlessness"]
    refusals = profanity_check.predict_prob([p.chosen for p in pairs])
    compliance = profanity_check.predict_prob([p.rejected for p in pairs])
    helpful = profanity_check.predict_prob(
        [t for p in corpus.eval["helpfulness"] for t in (p.chosen, p.rejected)]
    )
    assert compliance.mean() > 0.8
    assert refusals.mean() < 0.2
    assert helpful.mean() < 0.2
    assert compliance.mean() - refusals.mean() > 0.6


def test_planted_profiles_are_learnable_from_text_and_generalise_to_eval(corpus) -> None:
    """A bag-of-words Bradley-Terry model trained per source recovers the planted signs on the eval sets."""
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    import numpy as np
    from scipy.sparse import vstack
    from sklearn.linear_model import LogisticRegression

    texts = [t for pairs in corpus.train.values() for p in pairs for t in (p.chosen, p.rejected)]
    vec = sklearn_text.CountVectorizer(ngram_range=(1, 2), binary=True).fit(texts)

    def diff(pairs):
        return vec.transform([p.chosen for p in pairs]) - vec.transform([p.rejected for p in pairs])

    acc: dict[str, dict[str, float]] = {}
    for name, pairs in corpus.train.items():
        x = diff(pairs)
        y = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
        model = LogisticRegression(fit_intercept=False, max_iter=1000).fit(vstack([x, -x]), y)
        acc[name] = {}
        for obj, eval_pairs in corpus.eval.items():
            margin = diff(eval_pairs) @ model.coef_.ravel()
            acc[name][obj] = float(np.mean((margin > 0) + 0.5 * (margin == 0)))
    assert acc["sharegpt"]["helpfulness"] > 0.75
    assert acc["evol_instruct"]["helpfulness"] > 0.75
    assert acc["flan_v2_niv2"]["helpfulness"] > 0.6
    assert acc["ultrachat"]["harmlessness"] > 0.9
    assert acc["evol_instruct"]["harmlessness"] < 0.1
    assert acc["harmful"]["harmlessness"] < 0.1
    assert acc["noisy"]["helpfulness"] < 0.45
    # no planted harmlessness signal in helpful-only data: near chance, far from the planted sources
    assert 0.2 < acc["sharegpt"]["harmlessness"] < 0.8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sources": ("sharegpt", "bogus")}, "sources"),
        ({"sources": ()}, "sources"),
        ({"sources": ("sharegpt", "sharegpt")}, "sources"),
        ({"adversarial": ("noisy", "evil")}, "adversarial"),
        ({"pairs_per_source": 0}, "pairs_per_source"),
        ({"eval_pairs_per_objective": -1}, "eval_pairs_per_objective"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"noisy_flip_rate": 1.5}, "noisy_flip_rate"),
        ({"duplicate_of": "noisy"}, "duplicate_of"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        SynthConfig(**kwargs)
    assert err.value.field == field


def test_cli_bad_sources_exit_2_naming_the_field(tmp_path: Path, capsys) -> None:
    code = main(["data", "synth", "--out", str(tmp_path / "x"), "--sources", "sharegpt,nope"])
    err = capsys.readouterr().err
    assert code == 2
    assert "field 'sources'" in err and "nope" in err
    assert not (tmp_path / "x").exists()
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--adversarial", "noisy,,harmful"]) == 2
    assert "field 'adversarial'" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--pairs-per-source", "0"]) == 2
    assert "field 'pairs_per_source'" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_foreign_directory(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["data", "synth", "--out", str(foreign), "--pairs-per-source", "5", "--eval-pairs", "5"]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "field 'out'" in err and "notes.txt" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # a previous corpus into which the user dropped a file is not ours to delete either
    corpus_dir = tmp_path / "corpus"
    write_corpus(corpus_dir, SynthConfig(pairs_per_source=5, eval_pairs_per_objective=5))
    (corpus_dir / "train" / "extra.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(InputError):
        write_corpus(corpus_dir, SynthConfig(pairs_per_source=5, eval_pairs_per_objective=5))
    assert (corpus_dir / "train" / "extra.jsonl").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    assert main(["data", "synth", "--out", str(a_file)]) == 2
    # an existing empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_corpus(empty, SynthConfig(pairs_per_source=5, eval_pairs_per_objective=5)).is_file()


def test_cli_prints_a_summary_and_the_manifest_path(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c"
    code = main(
        ["data", "synth", "--out", str(out), "--seed", "5", "--pairs-per-source", "30", "--eval-pairs", "10",
         "--sources", "sharegpt,ultrachat", "--adversarial", "none"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert f"manifest: {out / 'manifest.json'}" in text
    assert "sharegpt" in text and "ultrachat" in text and "noisy" not in text
    assert sorted(p.name for p in (out / "train").iterdir()) == ["sharegpt.jsonl", "ultrachat.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["adversarial"] == []
    assert manifest["eval"]["helpfulness"]["pairs"] == 10


def test_write_corpus_summary_rows(tmp_path: Path) -> None:
    config = SynthConfig(seed=2, pairs_per_source=20, eval_pairs_per_objective=10, adversarial=("noisy",))
    summary = write_corpus_summary(tmp_path / "c", config)
    assert summary.manifest_path == tmp_path / "c" / "manifest.json"
    assert SUMMARY_COLUMNS == ("source", "pairs", "helpfulness", "harmlessness", "mixture of pair kinds")
    rows = {row[0]: row for row in summary.rows}
    assert list(rows) == [*config.all_sources, "eval_helpfulness", "eval_harmlessness"]
    assert all(len(row) == len(SUMMARY_COLUMNS) for row in summary.rows)
    assert rows["sharegpt"] == ("sharegpt", "20", "+0.90 strong", "+0.00 none", "helpful 90%, neutral 10%")
    assert rows["noisy"][2] == "-0.60 moderate"
    assert rows["eval_harmlessness"] == ("eval_harmlessness", "10", "", "held-out", "safety 100%")
