"""The GPU path against the CPU path (marked ``gpu``: skipped where torch sees no CUDA device, see conftest.py).

Tolerances: float32 on the GPU differs from float32 on the CPU by kernel order only (log-probs of a tiny model:
≤ 1e-3 per sequence); bfloat16 keeps 8 bits of mantissa (summed log-probs: ≤ 5 % relative).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_lm import VOCAB, TinyTokenizer, tiny_llama  # noqa: E402

from valuation.composition.logprobs import sequence_logprobs  # noqa: E402
from valuation.composition.multilora import MultiLoraModel  # noqa: E402
from valuation.decoding.decoder import SamplingParams, sample_composed  # noqa: E402
from valuation.decoding.importance import pool_log_densities  # noqa: E402
from valuation.models.devices import Placement, resolve_placement, use_placement  # noqa: E402

pytestmark = pytest.mark.gpu

PROMPTS = ["hello there", "what is two plus two", "name a colour"]
PARAMS = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)


def _sequences(n: int = 6) -> list[tuple[list[int], int]]:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randint(4, VOCAB, (8 + i,), generator=gen).tolist(), 4) for i in range(n)]


def test_auto_resolves_to_the_gpu_with_its_dtype_policy() -> None:
    placement = resolve_placement("auto", "auto")
    assert placement.device == "cuda:0"
    assert placement.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    assert resolve_placement("cuda", "float32") == Placement("cuda:0", "float32")


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_scoring_on_the_gpu_matches_the_cpu(dtype: torch.dtype, rel: float) -> None:
    seqs = _sequences()
    cpu, counts = sequence_logprobs(tiny_llama(), seqs, pad_token_id=0, batch_size=4)
    gpu, gpu_counts = sequence_logprobs(tiny_llama().to("cuda", dtype), seqs, pad_token_id=0, batch_size=4)
    assert (counts == gpu_counts).all()
    np.testing.assert_allclose(gpu, cpu, rtol=rel, atol=1e-3)


def test_batched_multi_lora_forward_on_the_gpu_matches_the_cpu(random_adapters: list[Path]) -> None:
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    route = [-1, 0, 2] * 2
    batch = ids.repeat_interleave(3, dim=0)
    out = []
    for device in ("cpu", "cuda"):
        model = tiny_llama().to(device)
        multi = MultiLoraModel.from_adapter_dirs(model, random_adapters, packed_gemm=True)
        assert multi.packed is None  # the packed GEMM path is CPU-only (and unused for the tiny model)
        with torch.no_grad(), multi.routing(route):
            out.append(model(input_ids=batch.to(device), attention_mask=torch.ones_like(batch).to(device)).logits.cpu())
        multi.close()
    assert (out[0] - out[1]).abs().max().item() <= 1e-4


def test_composed_decoding_and_pool_densities_on_the_gpu_match_the_cpu(random_adapters: list[Path]) -> None:
    """Same CRN uniforms: the same tokens (a draw flips only at a CDF boundary, far rarer than these 9 rows),
    log-probs within 1e-3, and the teacher-forced densities of the CPU's samples within 1e-3."""
    tok = TinyTokenizer()
    runs = {}
    for device in ("cpu", "cuda"):
        model = tiny_llama().to(device)
        multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
        samples = sample_composed(model, tok, PROMPTS, [0, 2], [0.5, 0.5], samples_per_prompt=3, params=PARAMS,
                                  multi=multi)
        runs[device] = (model, multi, samples)
    cpu_samples, gpu_samples = runs["cpu"][2], runs["cuda"][2]
    same = [a.token_ids == b.token_ids for a, b in zip(cpu_samples, gpu_samples, strict=True)]
    assert sum(same) >= len(same) - 1
    for a, b, ok in zip(cpu_samples, gpu_samples, same, strict=True):
        if ok:
            assert b.logprob == pytest.approx(a.logprob, abs=1e-3)
    targets = np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    dens = [pool_log_densities(runs[d][0], tok, runs[d][1], PROMPTS, cpu_samples, targets, PARAMS)
            for d in ("cpu", "cuda")]
    np.testing.assert_allclose(dens[1], dens[0], rtol=0, atol=1e-3)


def test_dpo_training_on_the_gpu_matches_the_cpu_loss(tmp_path: Path) -> None:
    """One DPO adapter of the tiny preset trained on the CPU and on the GPU (float32: same loss within 1e-3;
    the bf16 policy trains with mixed precision and is only checked to finish)."""
    from valuation.adapters.config import TrainingConfig
    from valuation.adapters.dpo import train_one_adapter
    from valuation.models import TinyConfig, prepare_base_model
    from valuation.sources import load_preferences
    from valuation.synth import SynthConfig, write_corpus

    write_corpus(tmp_path / "corpus", SynthConfig(seed=1, pairs_per_source=16, eval_pairs_per_objective=8))
    base = prepare_base_model("tiny", cache_dir=tmp_path / "cache", corpus_dir=tmp_path / "corpus", progress=False,
                              tiny_config=TinyConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                                                     intermediate_size=64, steps=20, batch_size=16))
    pairs = load_preferences(tmp_path / "corpus" / "train" / "sharegpt.jsonl").pairs
    config = TrainingConfig(epochs=1, batch_size=8, max_length=96)
    losses = {}
    for name, placement in (("cpu", Placement()), ("gpu", Placement("cuda:0", "float32")),
                            ("bf16", Placement("cuda:0", "bfloat16"))):
        with use_placement(placement):
            manifest = train_one_adapter(base, "sharegpt", pairs, data_hash="x", config=config,
                                         out_dir=tmp_path / name)
        losses[name] = manifest["metrics"]["train_loss"]
    assert losses["gpu"] == pytest.approx(losses["cpu"], abs=1e-3)
    assert np.isfinite(losses["bf16"])
