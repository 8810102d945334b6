"""Packed GEMM for decode steps (valuation.composition.packed): same results as F.linear, only where it is switched on."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from crosspath import assert_same_samples  # noqa: E402
from tiny_lm import TinyTokenizer, tiny_llama  # noqa: E402

from valuation.composition.multilora import MultiLoraModel  # noqa: E402
from valuation.composition.packed import (  # noqa: E402
    PackedLinears,
    packed_gemm_available,
    packed_gemm_useful,
)
from valuation.decoding.decoder import SamplingParams, sample_composed  # noqa: E402

needs_mkl = pytest.mark.skipif(not packed_gemm_available(), reason="this PyTorch build has no MKL packed GEMM")


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.fixture
def stock_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``F.linear`` calls (the dispatcher's stock path) in ``calls[0]``."""
    calls = [0]
    linear = torch.nn.functional.linear

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        return linear(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "linear", counted)
    return calls


def _n_linear(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@needs_mkl
def test_packed_forward_equals_the_stock_forward_with_lora_rows(random_adapters: list[Path],
                                                               stock_calls: list[int]) -> None:
    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    gen = torch.Generator().manual_seed(0)
    packed = PackedLinears(model, sizes=(4, 8, 16))
    for rows in (3, 5, 8, 12):
        ids = torch.randint(3, 60, (rows, 1), generator=gen)
        route = [i % 4 - 1 for i in range(rows)]  # the base and each of the 3 adapters in turn
        with multi.routing(route):
            stock = _logits(model, ids)
            stock_calls[0] = 0
            with packed.rows(rows):
                fast = _logits(model, ids)
            assert stock_calls[0] == 0  # every linear layer ran packed
        assert torch.allclose(fast, stock, atol=1e-5), rows
    packed.close()
    multi.close()


@needs_mkl
def test_packed_only_inside_the_block_for_its_sizes_and_close_restores(stock_calls: list[int]) -> None:
    model = tiny_llama()
    ids5, ids9 = torch.arange(3, 8)[:, None], torch.arange(3, 12)[:, None]
    packed = PackedLinears(model, sizes=(8, 64))
    assert [packed.size_for(m) for m in (1, 3, 4, 8, 9, 31, 32, 64, 65)] == [None, None, 8, 8, None, None, 64, 64, None]
    assert [PackedLinears.size_for(PackedLinears(tiny_llama()), m) for m in (3, 4, 9, 17, 33, 65)] == [
        None, 8, 16, 32, 64, None]  # the default sizes serve 4..64 rows
    layers = _n_linear(model)

    def stock_share(ids: torch.Tensor) -> int:
        stock_calls[0] = 0
        _logits(model, ids)
        return stock_calls[0]

    assert stock_share(ids5) == layers  # no block: F.linear
    with packed.rows(3):  # no size serves 3 rows: F.linear
        assert stock_share(ids5[:3]) == layers
    assert packed._packs == {}
    with packed.rows(5):  # packed for 8 rows
        assert stock_share(ids5) == 0
        assert stock_share(ids9) == layers  # more rows than packed for: F.linear
        with torch.enable_grad():  # autograd: always F.linear
            stock_calls[0] = 0
            model(input_ids=ids5)
            assert stock_calls[0] == layers
    first = packed._packs[8]
    with packed.rows(40), packed.rows(6):
        pass
    assert sorted(packed._packs) == [8, 64] and packed._packs[8] is first  # packed once per size
    with pytest.raises(ValueError, match="sizes"):
        PackedLinears(model, sizes=())
    packed.close()
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert stock_share(ids5) == layers


@needs_mkl
def test_packed_forward_keeps_biases_and_batch_shapes() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(40, 30)  # with a bias (Qwen-style q/k/v projections have one)
    x = torch.randn(2, 3, 40)  # 6 rows in a [batch, tokens, features] layout
    with torch.inference_mode():
        stock = layer(x)
        packed = PackedLinears(layer, sizes=(8,))
        with packed.rows(6):
            fast = layer(x)
        packed.close()
    assert fast.shape == (2, 3, 30)
    assert torch.allclose(fast, stock, atol=1e-5)


@needs_mkl
def test_sampling_with_packed_decode_steps_gives_the_same_samples(random_adapters: list[Path],
                                                                 stock_calls: list[int]) -> None:
    """The decoder packs its decode steps (not the prefill) when the MultiLoraModel has ``packed``."""
    model, tok = tiny_llama(), TinyTokenizer()
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=2)
    prompts = ["hello there", "a longer prompt here", "xyz"]

    def draw(packed: bool) -> list:
        multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
        if packed:  # the tiny model is below packed_gemm_useful's size: switch it on by hand, for 18 rows
            multi.packed = PackedLinears(model, sizes=(32,))
        out = sample_composed(model, tok, prompts, [0, 2], [0.5, 0.5], samples_per_prompt=2, params=params,
                              multi=multi)
        multi.close()
        return out

    stock_calls[0] = 0
    plain = draw(False)
    plain_calls, stock_calls[0] = stock_calls[0], 0
    fast = draw(True)
    assert stock_calls[0] == _n_linear(model)  # one chunk: only its prefill ran F.linear
    assert plain_calls > 5 * stock_calls[0]
    # packed GEMM vs F.linear: two code paths, equal to float rounding (a token may flip, tests/crosspath.py)
    assert_same_samples(fast, plain, logprob_tol=1e-4)


@needs_mkl
def test_packed_gemm_useful_only_for_fp32_cpu_weights_in_the_size_window(monkeypatch: pytest.MonkeyPatch) -> None:
    import valuation.composition.packed as packed_module

    assert not packed_gemm_useful(tiny_llama())  # a few hundred KB: stays in cache
    assert packed_module.MIN_WEIGHT_BYTES < packed_module.MAX_WEIGHT_BYTES
    monkeypatch.setattr(packed_module, "MIN_WEIGHT_BYTES", 4_000)
    monkeypatch.setattr(packed_module, "MAX_WEIGHT_BYTES", 12_000)
    middle = torch.nn.Sequential(torch.nn.Linear(50, 40, bias=False))  # 8,000 bytes
    assert packed_gemm_useful(middle)
    assert not packed_gemm_useful(middle.double())
    assert not packed_gemm_useful(torch.nn.Sequential(torch.nn.Linear(10, 10)))  # 400 bytes
    assert not packed_gemm_useful(torch.nn.Sequential(torch.nn.Linear(100, 100)))  # 40,000 bytes
    assert not packed_gemm_useful(torch.nn.Sequential(torch.nn.ReLU()))
    multi = MultiLoraModel(tiny_llama(), [], packed_gemm=True)
    assert multi.packed is None  # the gate said no


def test_config_switch() -> None:
    """On by default; the paper config turns it off (its committed example must reproduce token for token)."""
    from valuation.pipeline.config import SamplingSection, load_valuation_config

    assert SamplingSection().packed_gemm is True
    paper = Path(__file__).resolve().parents[1] / "data" / "configs" / "paper.toml"
    assert load_valuation_config(paper).sampling.packed_gemm is False


@pytest.mark.slow
@needs_mkl
def test_smollm2_decodes_the_same_with_packed_matmuls(stock_calls: list[int]) -> None:
    """The real base model (opt-in): packed_gemm_useful says yes, and greedy decoding through the packed
    decode steps writes the same text as F.linear (greedy flips where two logits tie to float rounding:
    one of the two prompts may differ); one 5-row step's logits agree to float rounding and ran packed."""
    from valuation.models import load_base_model, prepare_base_model

    model, tokenizer = load_base_model(prepare_base_model("smollm2", progress=False))
    assert packed_gemm_useful(model)
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    prompts = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": "Give me one tip for staying healthy."}]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        texts = {}
        for packed in (False, True):
            multi = MultiLoraModel(model, [], packed_gemm=packed)
            assert (multi.packed is not None) is packed
            samples = sample_composed(model, tokenizer, prompts, [], [], samples_per_prompt=3, params=params,
                                      multi=multi)  # 6 rows: packed for 8
            texts[packed] = [[s.text for s in samples if s.prompt_index == p] for p in range(2)]
            multi.close()
        ids = torch.randint(4, model.config.vocab_size, (5, 12), generator=torch.Generator().manual_seed(0))
        stock = _logits(model, ids[:, -1:])
        packed_linears = PackedLinears(model)
        stock_calls[0] = 0
        with packed_linears.rows(5):
            fast = _logits(model, ids[:, -1:])
        assert stock_calls[0] == 0  # every linear layer ran packed (the comparison below is not vacuous)
        packed_linears.close()
    finally:
        torch.set_num_threads(threads)
    assert sum(texts[True][p] != texts[False][p] for p in range(2)) <= 1, texts
    assert "Paris" in texts[True][0][0] or "Paris" in texts[False][0][0]
    assert torch.allclose(fast, stock, atol=1e-3)
