"""Base models: the tiny preset (built, deterministic, cached, writes corpus-like text), local model dirs
(validated, checksummed, bad ones rejected with exit code 2) and the `payoutsim models` commands.

The tiny builds here use a small TinyConfig on a small hand-made corpus; the default config on the
default synthetic corpus and the real SmolLM2 model are exercised in test_models_slow.py.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from market.cli import main
from valuation.errors import InputError
from valuation.files import sha256_file
from valuation.models import (
    PRESETS,
    BaseModelInfo,
    TinyConfig,
    complete_chat,
    default_cache_dir,
    describe_model,
    list_prepared_models,
    load_base_model,
    prepare_base_model,
)
from valuation.models import local as local_mod
from valuation.models import tiny as tiny_mod
from valuation.models.cache import read_manifest

SMALL = TinyConfig(
    vocab_size=400,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    max_position_embeddings=256,
    max_length=64,
    steps=150,
    batch_size=8,
    lr=5e-3,
    warmup_steps=10,
)

TOPICS = ["apples", "rivers", "bicycles", "volcanoes", "gardens", "libraries", "trains", "honey bees"]
ASKS = ["Explain {t} in a few sentences.", "Tell me about {t}.", "Describe {t} for a child."]
GOOD = [
    "Here is a clear answer about {t}. First, learn the basics of {t}. Then, practice with simple examples.",
    "Sure. {t} are interesting because they connect many parts of daily life.",
]
BAD = ["I do not know anything about {t}.", "Figure out {t} yourself, that is not my problem."]


def write_corpus(root: Path, pairs_per_source: int = 60, seed: int = 0) -> Path:
    """A small payoutsim-style corpus: train/{alpha,beta}.jsonl and eval/helpfulness.jsonl."""
    rng = random.Random(seed)
    for split, count in (("train", pairs_per_source), ("eval", pairs_per_source // 4)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for source in ("alpha", "beta") if split == "train" else ("helpfulness",):
            lines = []
            for _ in range(count):
                topic = rng.choice(TOPICS)
                record = {
                    "source": source,
                    "prompt": rng.choice(ASKS).format(t=topic),
                    "chosen": rng.choice(GOOD).format(t=topic),
                    "rejected": rng.choice(BAD).format(t=topic),
                }
                lines.append(json.dumps(record))
            (root / split / f"{source}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny_info(cache_dir: Path, corpus_dir: Path) -> BaseModelInfo:
    return prepare_base_model(
        "tiny", cache_dir=cache_dir, corpus_dir=corpus_dir, seed=0, progress=False, tiny_config=SMALL
    )


# ---------------------------------------------------------------------------------------------- helpers


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def corpus_likeness(text: str, answers: list[str]) -> tuple[float, int]:
    """(share of the text's words that occur in the answers, number of word trigrams shared with them)."""
    vocab = {w for a in answers for w in _words(a)}
    grams = set().union(*(_trigrams(_words(a)) for a in answers))
    words = _words(text)
    if not words:
        return 0.0, 0
    return sum(w in vocab for w in words) / len(words), len(_trigrams(words) & grams)


def is_corpus_like(text: str, answers: list[str]) -> bool:
    share, shared = corpus_likeness(text, answers)
    return len(_words(text)) >= 4 and share >= 0.8 and shared >= 2


def corpus_answers(corpus_dir: Path) -> list[str]:
    corpus = tiny_mod.read_corpus(corpus_dir)
    return [t for p in corpus.train for t in (p.chosen, p.rejected)]


# ------------------------------------------------------------------------------------------- tiny preset


def test_public_names() -> None:
    assert PRESETS == ("tiny", "smollm2")


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAYOUTSIM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PAYOUTSIM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "payoutsim"


def test_tiny_is_a_plain_hf_model_dir(tiny_info: BaseModelInfo, cache_dir: Path) -> None:
    assert tiny_info.name == "tiny" and tiny_info.preset == "tiny"
    assert tiny_info.path.parent == cache_dir / "models" and tiny_info.path.name.startswith("tiny-")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (tiny_info.path / name).is_file(), name
    assert not list(tiny_info.path.glob("*.bin"))
    manifest = read_manifest(tiny_info.path)
    assert manifest is not None
    assert manifest["sha256"] == tiny_info.sha256 == sha256_file(tiny_info.path / "model.safetensors")

    model, tokenizer = load_base_model(tiny_info)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (
        model.config.hidden_size == SMALL.hidden_size and model.config.num_hidden_layers == SMALL.num_layers
    )
    assert manifest["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert len(tokenizer) <= SMALL.vocab_size
    assert tokenizer.pad_token == tiny_mod.PAD and tokenizer.pad_token != tokenizer.eos_token
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about rivers."}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nTell me about rivers.<|im_end|>\n<|im_start|>assistant\n"
    # Byte-level BPE: any text round-trips, even characters the corpus never had.
    assert tokenizer.decode(tokenizer("Grüße, 東京!")["input_ids"]) == "Grüße, 東京!"


def test_tiny_pretrains_on_train_only(tiny_info: BaseModelInfo, corpus_dir: Path) -> None:
    manifest = read_manifest(tiny_info.path)
    assert manifest is not None
    corpus = tiny_mod.read_corpus(corpus_dir)
    n_train = sum(1 for f in (corpus_dir / "train").glob("*.jsonl") for _ in f.read_text().splitlines())
    n_eval = sum(1 for f in (corpus_dir / "eval").glob("*.jsonl") for _ in f.read_text().splitlines())
    assert len(corpus.train) == n_train and n_eval > 0
    assert manifest["pretraining"]["sequences"] == 2 * n_train  # prompt+chosen and prompt+rejected
    assert len(corpus.texts) == 3 * (n_train + n_eval)  # the tokenizer sees eval texts too
    assert manifest["pretraining"]["final_loss"] < manifest["pretraining"]["first_loss"] / 3


def test_tiny_second_call_is_a_no_op(
    tiny_info: BaseModelInfo, cache_dir: Path, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny_mod, "pretrain", boom)
    monkeypatch.setattr(tiny_mod, "train_tokenizer", boom)
    weights = tiny_info.path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = prepare_base_model(
        "tiny", cache_dir=cache_dir, corpus_dir=corpus_dir, seed=0, progress=False, tiny_config=SMALL
    )
    assert again == tiny_info
    assert weights.stat().st_mtime_ns == before


def test_tiny_is_deterministic_and_seeded(tiny_info: BaseModelInfo, corpus_dir: Path, tmp_path: Path) -> None:
    same = prepare_base_model(
        "tiny", cache_dir=tmp_path / "a", corpus_dir=corpus_dir, seed=0, progress=False, tiny_config=SMALL
    )
    assert same.path != tiny_info.path and same.path.name == tiny_info.path.name
    assert same.sha256 == tiny_info.sha256  # exact: the same seeded build runs twice (same code path)
    other = prepare_base_model(
        "tiny", cache_dir=tmp_path / "a", corpus_dir=corpus_dir, seed=1, progress=False, tiny_config=SMALL
    )
    assert other.sha256 != tiny_info.sha256 and other.path != same.path


def test_cache_key_covers_corpus_config_and_seed(corpus_dir: Path, tmp_path: Path) -> None:
    corpus = tiny_mod.read_corpus(corpus_dir)
    key = tiny_mod.cache_key(corpus, SMALL, 0)
    assert key == tiny_mod.cache_key(tiny_mod.read_corpus(corpus_dir), SMALL, 0)
    assert key != tiny_mod.cache_key(corpus, SMALL, 1)
    assert key != tiny_mod.cache_key(corpus, TinyConfig(), 0)
    changed = write_corpus(tmp_path / "c2")
    (changed / "eval" / "helpfulness.jsonl").write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8"
    )
    assert key != tiny_mod.cache_key(tiny_mod.read_corpus(changed), SMALL, 0)


def test_tiny_writes_corpus_like_text_and_an_untrained_model_does_not(
    tiny_info: BaseModelInfo, corpus_dir: Path
) -> None:
    answers = corpus_answers(corpus_dir)
    prompts = ["Tell me about rivers.", "Explain gardens in a few sentences.", "Describe trains for a child."]
    model, tokenizer = load_base_model(tiny_info)
    trained = [
        complete_chat(model, tokenizer, p, max_new_tokens=40, do_sample=True, seed=i).text
        for i, p in enumerate(prompts)
    ]
    assert sum(is_corpus_like(t, answers) for t in trained) >= 2, trained

    untrained_model = tiny_mod.build_model(tokenizer, SMALL, seed=0)
    untrained = [
        complete_chat(untrained_model, tokenizer, p, max_new_tokens=40, do_sample=True, seed=i).text
        for i, p in enumerate(prompts)
    ]
    assert not any(is_corpus_like(t, answers) for t in untrained), untrained


def test_default_corpus_is_the_synthetic_one() -> None:
    synth = pytest.importorskip("valuation.synth")
    corpus = tiny_mod.default_corpus()
    assert len(corpus.train) >= 4 * synth.SynthConfig().pairs_per_source
    assert len(corpus.texts) > 3 * len(corpus.train)  # eval texts are included for the tokenizer


@pytest.mark.parametrize(
    ("content", "where", "fragment"),
    [
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"\n',
            "line 2",
            "malformed JSON",
        ),
        ('{"prompt": "p", "chosen": "a"}\n', "field 'rejected'", "missing field"),
        ('{"prompt": "p", "chosen": "  ", "rejected": "b"}\n', "field 'chosen'", "non-empty string"),
        ('{"prompt": 3, "chosen": "a", "rejected": "b"}\n', "field 'prompt'", "string or a list"),
        ("[1, 2]\n", "line 1", "JSON object"),
    ],
)
def test_bad_corpus_lines_name_file_line_and_field(
    tmp_path: Path, content: str, where: str, fragment: str, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train").mkdir()
    bad = tmp_path / "train" / "x.jsonl"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        tiny_mod.read_corpus(tmp_path)
    assert str(bad) in str(err.value) and where in str(err.value) and fragment in str(err.value)
    code = main(
        ["models", "prepare", "tiny", "--corpus", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "-q"]
    )
    assert code == 2
    stderr = capfd.readouterr().err
    assert stderr.startswith("error: ") and str(bad) in stderr and where in stderr


def test_missing_corpus_dir_or_train_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="corpus directory not found"):
        tiny_mod.read_corpus(tmp_path / "nope")
    (tmp_path / "eval").mkdir()
    with pytest.raises(InputError, match=r"no train/\*\.jsonl"):
        tiny_mod.read_corpus(tmp_path)


# ------------------------------------------------------------------------------------ local model dirs


@pytest.fixture
def local_dir(tiny_info: BaseModelInfo, tmp_path: Path) -> Path:
    """A user's local model dir: a copy of the tiny model without our manifest."""
    target = tmp_path / "my-model"
    shutil.copytree(tiny_info.path, target)
    (target / "manifest.json").unlink()
    return target


def test_local_dir_is_validated_checksummed_and_left_untouched(
    local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files_before = sorted(p.name for p in local_dir.iterdir())
    info = prepare_base_model(str(local_dir), cache_dir=tmp_path / "cache", progress=False)
    assert info == BaseModelInfo(
        name="my-model",
        path=local_dir.resolve(),
        sha256=sha256_file(local_dir / "model.safetensors"),
        preset=None,
    )
    assert sorted(p.name for p in local_dir.iterdir()) == files_before
    model, tokenizer = load_base_model(info)
    assert model.config.model_type == "llama" and tokenizer.pad_token is not None

    # Second call: the recorded checksum is reused while the weights file is unchanged ...
    def boom(*args: object) -> None:
        raise AssertionError("re-hashed unchanged weights")

    monkeypatch.setattr(local_mod, "checksum_weights", boom)
    assert prepare_base_model(str(local_dir), cache_dir=tmp_path / "cache", progress=False) == info
    monkeypatch.undo()
    # ... and recomputed when the weights change.
    model.model.norm.weight.data.add_(1.0)
    model.save_pretrained(local_dir)
    changed = prepare_base_model(str(local_dir), cache_dir=tmp_path / "cache", progress=False)
    assert changed.sha256 == sha256_file(local_dir / "model.safetensors") != info.sha256


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _bad_json_config(d: Path) -> None:
    (d / "config.json").write_text("{not json", encoding="utf-8")


def _remote_code_config(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "my_custom_llm"
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.MyModel"}
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").rename(d / "pytorch_model.bin")


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _no_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").unlink()


def _missing_shard(d: Path) -> None:
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model.safetensors"},
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        (_no_config, "field 'config.json': missing config.json"),
        (_bad_json_config, "config.json: not valid JSON"),
        (_remote_code_config, "trust_remote_code"),
        (_pickle_only, "only pickle weights (pytorch_model.bin)"),
        (_no_weights, "no *.safetensors weights"),
        (_no_tokenizer, "field 'tokenizer': missing tokenizer"),
        (_missing_shard, "missing weight shards: model-00001-of-00002.safetensors"),
    ],
)
def test_bad_local_dirs_are_refused_with_exit_code_2(
    local_dir: Path, tmp_path: Path, breakage, fragment: str, capfd: pytest.CaptureFixture[str]
) -> None:
    breakage(local_dir)
    with pytest.raises(InputError):
        prepare_base_model(str(local_dir), cache_dir=tmp_path / "cache", progress=False)
    code = main(["models", "prepare", str(local_dir), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    stderr = capfd.readouterr().err
    assert stderr.startswith(f"error: {local_dir}") and fragment in stderr, stderr


def test_missing_dir_and_file_instead_of_dir(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "prepare", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path)]) == 2
    assert f"error: {tmp_path / 'nowhere'}: model directory not found" in capfd.readouterr().err
    (tmp_path / "file.txt").write_text("x")
    assert main(["models", "prepare", str(tmp_path / "file.txt"), "--cache-dir", str(tmp_path)]) == 2
    assert "not a directory" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_prepare_tiny_prints_path_size_params_and_checksum(
    tiny_info: BaseModelInfo,
    cache_dir: Path,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(tiny_mod, "TinyConfig", lambda: SMALL)  # the CLI uses the default config
    code = main(
        ["models", "prepare", "tiny", "--corpus", str(corpus_dir), "--cache-dir", str(cache_dir), "-q"]
    )
    assert code == 0
    out = capsys.readouterr().out
    manifest = read_manifest(tiny_info.path)
    assert manifest is not None
    assert f"path:       {tiny_info.path}" in out
    assert f"sha256:     {tiny_info.sha256}" in out
    assert f"parameters: {manifest['num_parameters']:,}" in out
    assert re.search(r"size: +[\d.]+ [KMG]?B \(weights", out)


def test_cli_list_shows_cached_models(
    tiny_info: BaseModelInfo, cache_dir: Path, local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "prepare", str(local_dir), "--cache-dir", str(cache_dir)]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--cache-dir", str(cache_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["tiny"]["sha256"] == tiny_info.sha256 and by_name["tiny"]["preset"] == "tiny"
    assert by_name["my-model"]["preset"] is None and by_name["my-model"]["path"] == str(local_dir.resolve())
    assert main(["models", "list", "--cache-dir", str(cache_dir)]) == 0
    assert tiny_info.sha256[:16] in capsys.readouterr().out


def test_cli_list_empty_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "no prepared models" in capsys.readouterr().out


def test_describe_and_list_read_the_model_dirs(tiny_info: BaseModelInfo, cache_dir: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_info.path)
    assert manifest is not None
    described = describe_model(tiny_info)
    assert described.info == tiny_info and described.num_parameters == manifest["num_parameters"]
    assert described.weights == {name: rec["bytes"] for name, rec in manifest["weights"].items()}
    assert described.dir_bytes > sum(described.weights.values())  # config, tokenizer and manifest too
    listing = list_prepared_models(cache_dir)
    assert listing.root == cache_dir / "models"
    [row] = [row for row in listing.models if row["path"] == str(tiny_info.path)]
    assert (row["sha256"], row["weights_bytes"]) == (tiny_info.sha256, sum(described.weights.values()))
    empty = list_prepared_models(tmp_path / "nothing")
    assert (empty.root, empty.models) == (tmp_path / "nothing" / "models", [])


def test_gguf_conversion_check_accepts_float_rounding_and_rejects_real_differences() -> None:
    """The smollm2 conversion compares the rebuilt model's logits with the GGUF-loaded model's: two model
    objects (another CPU may pick other kernels), so rounding-level differences pass (`torch.equal` refused
    them) while a wrong weight, a shape change or a NaN fails."""
    import torch

    from valuation.models.smollm2 import LOGIT_TOLERANCE, logits_match

    logits = 10 * torch.randn(1, 7, 50, generator=torch.Generator().manual_seed(0))
    rounding = logits * (1 + 4e-7 * torch.sign(torch.randn(1, 7, 50, generator=torch.Generator().manual_seed(1))))
    assert not torch.equal(rounding, logits) and logits_match(rounding, logits)
    wrong = logits.clone()
    wrong[0, 3, 17] += 10 * LOGIT_TOLERANCE
    assert not logits_match(wrong, logits)
    assert not logits_match(logits[:, :6], logits)
    broken = logits.clone()
    broken[0, 0, 0] = float("nan")
    assert not logits_match(broken, broken)
