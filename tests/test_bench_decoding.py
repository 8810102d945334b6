"""Benchmark part (c): batched multi-adapter forward and composed decoding, on a very small tiny config."""

from __future__ import annotations

import json

import pytest

from benchmarks.parts import decoding
from benchmarks.parts.decoding_setup import random_adapters
from benchmarks.timing import Timing, interleaved
from valuation.models import TinyConfig

SMALL = TinyConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def result() -> dict:
    return decoding.run(
        True,
        0,
        presets=["tiny"],
        sizes=(1, 2),
        tiny_config=SMALL,
        forward_batch=2,
        forward_tokens=8,
        max_new_tokens=4,
        single_prompts=2,
        batch_prompts=2,
        samples_per_prompt=2,
        step_context=8,
    )


def test_report_structure(result: dict) -> None:
    json.dumps(result)  # JSON-serialisable, as the report requires
    assert {"title", "tables", "targets", "notes", "params", "presets"} <= set(result)
    assert result["params"]["sizes"] == [1, 2] and result["skipped"] == {}
    tiny = result["presets"]["tiny"]
    assert [r["size"] for r in tiny["forward"]] == [1, 2]
    assert [r["rows"] for r in tiny["forward"]] == [4, 6]  # 2 sequences × (1 + |S|)
    for regime, sequences in (("single", 2), ("batch", 4)):
        rows = tiny["sampling"][regime]
        assert [r["size"] for r in rows] == [0, 1, 2]
        # stop tokens are ignored: every sequence generates exactly max_new_tokens
        assert all(r["generated_tokens"] == sequences * 4 for r in rows)
        # exact: the base row's ratio is its own rate divided by itself
        assert rows[0]["ratio_to_base"] == 1.0 and all(r["tokens_per_s"] > 0 for r in rows)
    assert [r["rows_per_step"] for r in tiny["sampling"]["single"]] == [1, 2, 3]
    assert [s["rows"] for s in tiny["decode_step"]["steps"]] == [2, 3]
    for table in result["tables"]:
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    names = [t["name"] for t in result["targets"]]
    assert any("batched forward faster" in n for n in names)
    assert all(isinstance(t["met"], bool) for t in result["targets"] if "batched" in t["name"])


def test_batched_and_separate_forwards_agree(result: dict) -> None:
    for row in result["presets"]["tiny"]["forward"]:
        assert row["max_abs_logprob_diff"] <= decoding.LOGPROB_TOLERANCE
        assert row["max_adapter_effect"] > 1e-3  # the random adapters really change the log-probs


def test_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match="sizes"):
        decoding.run(True, 0, presets=[], sizes=(0, 5))


def test_interleaved_timing_runs_every_function_per_repeat() -> None:
    calls: list[str] = []
    timings = interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, min_s=0.0
    )
    assert set(timings) == {"a", "b"} and all(
        isinstance(t, Timing) and len(t.runs_s) == 2 for t in timings.values()
    )
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then interleaved repeats
    calls.clear()
    interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, warmup=False)
    assert calls == ["a", "b", "a", "b"]


def test_ignore_stops_hides_eos_only() -> None:
    class Tok:
        eos_token_id = 1
        pad_token_id = 0
        chat_template = None

        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": [len(text)]}

    view = decoding.IgnoreStops(Tok())
    assert view.eos_token_id is None and view.pad_token_id == 0 and view("abc") == {"input_ids": [3]}


def test_fused_experiment_matches_the_production_path() -> None:
    """benchmarks/bench_fused_decoding.py: its fused MKL layer computes the same logits as MultiLoraModel
    (2..8 rows through the packed GEMM, prefill rows through the stock kernel), and `close` restores the model."""
    import importlib.util
    from pathlib import Path

    import torch
    from tiny_lm import tiny_llama

    from valuation.composition.multilora import MultiLoraModel

    if not hasattr(torch.ops.mkl, "_mkl_linear"):
        pytest.skip("this PyTorch build has no MKL packed GEMM")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fused_decoding.py"
    spec = importlib.util.spec_from_file_location("bench_fused_decoding", path)
    assert spec is not None and spec.loader is not None
    fused_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fused_module)
    model = tiny_llama().eval()
    adapters = random_adapters(model, fused_module.SIZE, 0)
    stock = MultiLoraModel(model, adapters)
    expected = fused_module.composed_logits(model, stock, 0)
    stock.close()
    with torch.inference_mode():
        plain = model(input_ids=torch.arange(4, 12)[None]).logits
    fused = fused_module.FusedPackedLora(model, stock)
    got = fused_module.composed_logits(model, fused, 0)
    fused.close()
    assert torch.allclose(got, expected, atol=1e-4)
    assert float((expected[1:] - expected[:1]).abs().max()) > 1e-3  # the adapters change the output
    with torch.inference_mode():
        # exact: the same plain forward runs again (close restored the stock layers)
        assert torch.equal(model(input_ids=torch.arange(4, 12)[None]).logits, plain)
