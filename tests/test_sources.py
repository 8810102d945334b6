"""Loading preference data: formats, sources, duplicates, hashing, containers (files, folders, HF, corpus)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuation.errors import InputError
from valuation.sources import (
    FORMATS,
    PreferencePair,
    PreferenceSet,
    load_corpus_eval_sets,
    load_preferences,
    summarize,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def pair(prompt: str = "Say hi.", chosen: str = "Hi!", rejected: str = "No.", **extra: object) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


# ---------------------------------------------------------------- formats


def test_columns_jsonl_sources_labels_and_duplicates() -> None:
    pset = load_preferences(FIXTURES / "columns.jsonl")
    assert pset.formats == {str(FIXTURES / "columns.jsonl"): "columns"}
    assert [p.source for p in pset.pairs] == ["alpha", "beta", "alpha", "alpha"]
    assert list(pset.sources()) == ["alpha", "beta"]  # order of first appearance
    beta = pset.sources()["beta"][0]
    assert beta.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert beta.prompt_kind == "chat"
    assert pset.pairs[0].labels == {"helpfulness": 1.0}
    assert pset.pairs[3].labels == {"harmlessness": 1.0}  # flat label_<objective> column
    assert pset.pairs[0].origin == "columns.jsonl:line 1"
    assert pset.pairs[2].origin == "columns.jsonl:line 4"  # blank line 3 skipped, numbering kept
    # the repeat is kept, and reported with both locations
    [dup] = pset.findings
    assert dup.kind == "duplicate" and dup.source == "alpha"
    assert dup.locations == ("columns.jsonl:line 1", "columns.jsonl:line 4")


def test_drop_duplicates_keeps_first_and_reports_the_drop() -> None:
    pset = load_preferences(FIXTURES / "columns.jsonl", drop_duplicates=True)
    assert [p.origin for p in pset.pairs] == ["columns.jsonl:line 1", "columns.jsonl:line 2", "columns.jsonl:line 5"]
    [dup] = pset.findings
    assert dup.kind == "duplicate-dropped"
    assert dup.locations == ("columns.jsonl:line 1", "columns.jsonl:line 4")
    [alpha, _beta] = summarize(pset)
    assert (alpha.pairs, alpha.duplicates, alpha.dropped_duplicates) == (2, 0, 1)


def test_same_pair_in_two_sources_is_not_a_duplicate(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [pair(source="a"), pair(source="b")])
    pset = load_preferences(tmp_path / "d.jsonl", drop_duplicates=True)
    assert len(pset) == 2 and pset.findings == []


def test_ultrafeedback_prompt_is_shared_prefix_response_is_last_assistant_message() -> None:
    pset = load_preferences(FIXTURES / "ultrafeedback.jsonl")
    assert set(pset.formats.values()) == {"ultrafeedback"}
    assert list(pset.sources()) == ["sharegpt", "ultrachat"]
    first = pset.pairs[0]
    assert first.prompt == [{"role": "user", "content": "Say hi."}]
    assert (first.chosen, first.rejected) == ("Hi!", "No.")


def test_ultrafeedback_with_response_only_lists_uses_prompt_field(tmp_path: Path) -> None:
    rec = {"prompt": "Say hi.", "chosen": [{"role": "assistant", "content": "Hi!"}],
           "rejected": [{"role": "assistant", "content": "No."}]}
    pset = load_preferences(write_jsonl(tmp_path / "u.jsonl", [rec]))
    assert pset.pairs[0].prompt == [{"role": "user", "content": "Say hi."}]


def test_hh_rlhf_splits_at_last_assistant_turn() -> None:
    pset = load_preferences(FIXTURES / "hh.jsonl")
    assert set(pset.formats.values()) == {"hh-rlhf"}
    assert list(pset.sources()) == ["hh"]  # file stem
    first, second = pset.pairs
    assert first.prompt == [
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "I can't help with that."},
        {"role": "user", "content": "Please?"},
    ]
    assert first.chosen == "Call a locksmith instead."
    assert first.rejected == "Use a bobby pin and a tension wrench."
    assert second.rejected == "No."  # stripped
    assert pset.findings == []


def test_hh_rlhf_real_data_quirks_are_repaired_and_reported(tmp_path: Path) -> None:
    shared = "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2"
    diverging = {"chosen": shared + "\n\nAssistant: good  Human: Q3\n\nAssistant: more",
                 "rejected": shared + "\n\nAssistant: bad"}
    empty_turn = {"chosen": "\n\nHuman: Steal a puppy?\n\nAssistant:", "rejected": "\n\nHuman: Steal a puppy?\n\nAssistant: Sure."}
    pset = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [diverging, empty_turn]))
    first, second = pset.pairs
    assert first.prompt[-1] == {"role": "user", "content": "Q2"}
    assert first.chosen == "good  Human: Q3\n\nAssistant: more"
    assert first.rejected == "bad"
    assert (second.chosen, second.rejected) == ("", "Sure.")
    assert [(f.kind, f.locations) for f in pset.findings] == [
        ("hh-prefix", ("hh.jsonl:line 1",)), ("empty-turn", ("hh.jsonl:line 2",))
    ]


def test_sharegpt_json_list_with_record_lines() -> None:
    pset = load_preferences(FIXTURES / "sharegpt.json")
    assert set(pset.formats.values()) == {"sharegpt"}
    first, second = pset.pairs
    assert first.prompt == [{"role": "system", "content": "You are helpful."},
                            {"role": "user", "content": "Translate 'cat' to French."}]
    assert (first.chosen, first.rejected) == ("chat", "Katze")
    assert [m["role"] for m in second.prompt] == ["user", "assistant", "user"]
    assert first.origin == "sharegpt.json:record 1 (line 2)"
    assert second.origin == "sharegpt.json:record 2 (line 10)"


def test_csv_cells_are_text_and_labels_are_parsed() -> None:
    pset = load_preferences(FIXTURES / "pairs.csv")
    assert list(pset.sources()) == ["gamma", "delta"]
    assert [p.labels for p in pset.pairs] == [{"helpfulness": 1.0}, None, {"helpfulness": 0.5}]
    assert pset.pairs[1].origin == "pairs.csv:row 2"


def test_format_can_be_forced_and_unknown_format_is_rejected() -> None:
    assert len(load_preferences(FIXTURES / "hh.jsonl", format="hh-rlhf")) == 2
    with pytest.raises(InputError) as err:
        load_preferences(FIXTURES / "hh.jsonl", format="alpaca")
    assert all(f in str(err.value) for f in FORMATS)
    with pytest.raises(InputError, match=r"line 1: field 'conversations': missing field"):
        load_preferences(FIXTURES / "hh.jsonl", format="sharegpt")


def test_source_override_and_custom_source_column(tmp_path: Path) -> None:
    assert list(load_preferences(FIXTURES / "columns.jsonl", source="pool").sources()) == ["pool"]
    write_jsonl(tmp_path / "o.jsonl", [pair(owner="x"), pair(chosen="Hello!", owner="y")])
    assert list(load_preferences(tmp_path / "o.jsonl", source_column="owner").sources()) == ["x", "y"]
    with pytest.raises(InputError, match=r"line 1: field 'vendor': missing source column"):
        load_preferences(tmp_path / "o.jsonl", source_column="vendor")


# ---------------------------------------------------------------- containers


def test_gzip_jsonl_equals_plain(tmp_path: Path) -> None:
    gz = tmp_path / "hh.jsonl.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "hh.jsonl").read_bytes()))
    plain, packed = load_preferences(FIXTURES / "hh.jsonl"), load_preferences(gz)
    assert list(packed.sources()) == ["hh"]
    assert packed.content_hash() == plain.content_hash()


def test_folder_is_one_source_per_file_unless_a_source_column_exists(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "hh.jsonl", tmp_path / "zeta.jsonl")
    shutil.copy(FIXTURES / "sharegpt.json", tmp_path / "eta.json")
    shutil.copy(FIXTURES / "pairs.csv", tmp_path / "pairs.csv")
    (tmp_path / "README.md").write_text("not data")
    pset = load_preferences(tmp_path)
    assert list(pset.sources()) == ["eta", "gamma", "delta", "zeta"]  # files in name order
    assert sorted(pset.formats.values()) == ["columns", "hh-rlhf", "sharegpt"]


def test_parquet_with_nested_message_lists(tmp_path: Path) -> None:
    import polars as pl

    records = [json.loads(line) for line in (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()]
    pl.DataFrame(records).write_parquet(tmp_path / "uf.parquet")
    pset = load_preferences(tmp_path / "uf.parquet")
    assert pset.content_hash() == load_preferences(FIXTURES / "ultrafeedback.jsonl").content_hash()
    assert pset.pairs[1].origin == "uf.parquet:row 2"


def test_hugging_face_dataset_folder(tmp_path: Path) -> None:
    import datasets

    records = [json.loads(line) for line in (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "uf"))
    pset = load_preferences(tmp_path / "uf")
    assert list(pset.sources()) == ["sharegpt", "ultrachat"]
    assert pset.content_hash() == load_preferences(FIXTURES / "ultrafeedback.jsonl").content_hash()
    plain = [{k: r[k] for k in ("chosen", "rejected")} for r in
             (json.loads(line) for line in (FIXTURES / "hh.jsonl").read_text().splitlines())]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(plain)}).save_to_disk(str(tmp_path / "hh_dd"))
    dd = load_preferences(tmp_path / "hh_dd", format="hf-dataset")
    assert list(dd.sources()) == ["hh_dd"] and dd.pairs[1].origin == "hh_dd:split 'test' row 2"
    with pytest.raises(InputError, match="not a Hugging Face datasets folder"):
        load_preferences(FIXTURES, format="hf-dataset")


def make_corpus(root: Path, objective_in_eval: str = "helpfulness") -> Path:
    (root / "train").mkdir(parents=True)
    (root / "eval").mkdir()
    (root / "manifest.json").write_text(json.dumps({"seed": 1}))
    write_jsonl(root / "train" / "sharegpt.jsonl", [pair(source="sharegpt"), pair(chosen="Hello!", source="sharegpt")])
    write_jsonl(root / "train" / "ultrachat.jsonl", [pair(rejected="Go away.", source="ultrachat")])
    write_jsonl(root / "eval" / "helpfulness.jsonl",
                [pair(prompt="Add 1 and 1.", chosen="2", rejected="3", source="eval", objective=objective_in_eval)])
    write_jsonl(root / "eval" / "harmlessness.jsonl",
                [pair(prompt="Insult me.", chosen="I'd rather not.", rejected="You fool.", source="eval",
                      objective="harmlessness")])
    return root


def test_corpus_train_sources_and_eval_sets(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    pset = load_preferences(corpus)
    assert {k: len(v) for k, v in pset.sources().items()} == {"sharegpt": 2, "ultrachat": 1}
    evals = load_corpus_eval_sets(corpus)
    assert list(evals) == ["harmlessness", "helpfulness"]
    assert evals["helpfulness"].pairs[0].chosen == "2"


def test_corpus_eval_objective_must_match_file(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", objective_in_eval="harmlessness")
    with pytest.raises(InputError, match=r"helpfulness\.jsonl: line 1: field 'objective'"):
        load_corpus_eval_sets(corpus)
    with pytest.raises(InputError, match=r"no manifest\.json"):
        load_corpus_eval_sets(tmp_path)


# ---------------------------------------------------------------- schema


def test_content_hash_ignores_origin_and_depends_on_content() -> None:
    a = PreferencePair("s", "p", "c", "r", origin="a.jsonl:line 1")
    b = PreferencePair("s", "p", "c", "r", origin="b.jsonl:line 9")
    c = PreferencePair("s", "p", "c", "r2")
    assert PreferenceSet([a]).content_hash() == PreferenceSet([b]).content_hash()
    assert PreferenceSet([a]).content_hash() != PreferenceSet([c]).content_hash()
    labelled = PreferencePair("s", "p", "c", "r", labels={"helpfulness": 1})
    assert PreferenceSet([labelled]).content_hash() != PreferenceSet([a]).content_hash()
    pset = PreferenceSet([a, PreferencePair("t", [{"role": "user", "content": "p"}], "c", "r")])
    assert pset.content_hash("s") == PreferenceSet([a]).content_hash()
    with pytest.raises(InputError, match="unknown source 'u'"):
        pset.content_hash("u")


def test_to_polars_columns() -> None:
    frame = load_preferences(FIXTURES / "columns.jsonl").to_polars()
    assert frame.columns == ["source", "prompt_kind", "prompt", "chosen", "rejected", "origin",
                             "label_harmlessness", "label_helpfulness"]
    assert frame["prompt_kind"].to_list() == ["text", "chat", "text", "text"]
    assert json.loads(frame["prompt"][1])[1] == {"role": "user", "content": "What is 2 + 2?"}
    assert frame["label_helpfulness"].to_list() == [1.0, None, 1.0, None]


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s.strip() != ""
)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=5))
def test_jsonl_and_json_round_trip_any_text(tmp_path_factory: pytest.TempPathFactory,
                                             rows: list[tuple[str, str, str]]) -> None:
    rows = [r for r in rows if r[1].strip() != r[2].strip()]
    if not rows:
        return
    folder = tmp_path_factory.mktemp("rt")
    records = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows]
    write_jsonl(folder / "a.jsonl", records)
    (folder / "b.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    for name in ("a.jsonl", "b.json"):
        pset = load_preferences(folder / name)
        assert [(p.prompt, p.chosen, p.rejected) for p in pset.pairs] == rows
