"""Batched multi-adapter LoRA forward (valuation.composition.multilora) and token-level sampling from π_S
(valuation.decoding.next_token, valuation.decoding.decoder, valuation.decoding.coalition_responses) on a tiny
random Llama with random peft adapters (tests/tiny_lm.py, the `random_adapters` fixture of conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crosspath import assert_same_samples  # noqa: E402
from tiny_lm import VOCAB, TinyTokenizer, tiny_llama  # noqa: E402

from valuation.composition.multilora import MultiLoraModel, read_lora_adapter  # noqa: E402
from valuation.decoding.coalition_responses import AdapterSpec, CoalitionSampler, sample_statistics  # noqa: E402
from valuation.decoding.decoder import SamplingParams, sample_composed  # noqa: E402
from valuation.decoding.next_token import combine_next_token_logprobs, crn_uniforms, draw_tokens  # noqa: E402


def _peft_logits(adapter_dirs: list[Path], ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Logits of the base (index 0) and of each adapter alone (1..n), one separate peft forward each."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_llama(), str(adapter_dirs[0]), adapter_name="a0")
    for i, d in enumerate(adapter_dirs[1:], start=1):
        model.load_adapter(str(d), adapter_name=f"a{i}")
    model.eval()
    out = []
    with torch.no_grad():
        with model.disable_adapter():
            out.append(model(input_ids=ids, attention_mask=mask).logits)
        for i in range(len(adapter_dirs)):
            model.set_adapter(f"a{i}")
            out.append(model(input_ids=ids, attention_mask=mask).logits)
    return out


@pytest.mark.parametrize("members", [(), (0,), (0, 2), (0, 1, 2)])
def test_batched_forward_equals_separate_peft_passes(random_adapters: list[Path], members: tuple[int, ...]) -> None:
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    separate = _peft_logits(random_adapters, ids, mask)
    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    route = [-1, *members]  # rows: base, then each member, for each of the 2 prompts
    batch_ids = ids.repeat_interleave(len(route), dim=0)
    with torch.no_grad(), multi.routing(route * 2):
        batched = model(input_ids=batch_ids, attention_mask=torch.ones_like(batch_ids)).logits
    for p in range(2):
        for j, a in enumerate(route):
            ref = separate[a + 1][p]
            got = batched[p * len(route) + j]
            assert (got - ref).abs().max().item() <= 1e-4
    if members:  # the adapters really change the output (the comparison is not vacuous)
        assert (separate[members[0] + 1] - separate[0]).abs().max().item() > 1e-2
    multi.close()
    with torch.no_grad():  # hooks removed: the plain base again
        plain = model(input_ids=ids, attention_mask=mask).logits
    # the plain model vs peft with its adapters disabled: two code paths, so a tolerance
    assert (plain - separate[0]).abs().max().item() <= 1e-5


def test_batched_forward_with_kv_cache_matches_full_forward(random_adapters: list[Path]) -> None:
    from transformers import DynamicCache

    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    ids = torch.randint(4, VOCAB, (4, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), multi.routing([-1, 0, 1, 2]):
        full = model(input_ids=ids).logits
        cache = DynamicCache()
        model(input_ids=ids[:, :8], cache=cache, use_cache=True)
        steps = [model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(8, 12)]
    for j, t in enumerate(range(8, 12)):
        assert (steps[j][:, 0] - full[:, t]).abs().max().item() <= 1e-4


def test_read_adapter_scaling_and_bad_routing(random_adapters: list[Path]) -> None:
    assert read_lora_adapter(random_adapters[0]).scaling == pytest.approx(8 / 4)
    assert read_lora_adapter(random_adapters[2]).scaling == pytest.approx(4 / np.sqrt(2))  # rsLoRA
    multi = MultiLoraModel.from_adapter_dirs(tiny_llama(), random_adapters)
    with pytest.raises(ValueError, match="out of range"), multi.routing([0, 3]):
        pass


# ---------------------------------------------------------------------------------------------------
# sampling

PROMPTS = ["hello there", "what is two plus two", "name a colour"]
PARAMS = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)


def test_empty_coalition_reproduces_base_samples(random_adapters: list[Path]) -> None:
    tok = TinyTokenizer()
    plain = sample_composed(tiny_llama(), tok, PROMPTS, [], [], samples_per_prompt=2, params=PARAMS)
    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    composed = sample_composed(model, tok, PROMPTS, [], [], samples_per_prompt=2, params=PARAMS, multi=multi,
                               max_batch_rows=4)
    # Two code paths (batched multi-LoRA rows vs the plain model; MKL picks kernels per CPU): equal to float
    # rounding only. 1e-6 (relative) is ~10 float32 ulps of a sequence log-prob summed over 12 tokens; a
    # token may flip where the logits tie to rounding (tests/crosspath.py).
    assert_same_samples(composed, plain, logprob_tol=1e-6)
    assert len({s.token_ids for s in plain}) > 1  # samples differ across prompts / streams
    # the empty coalition's sequence log-prob is the base's own
    assert all(s.logprob == pytest.approx(s.base_logprob) for s in composed)


def test_base_samples_match_a_plain_reference_sampler() -> None:
    """The sampler is ordinary ancestral sampling: each token of each sample is the one a full forward
    (no KV cache, no batch: another code path) draws with the same uniform. Teacher-forced along the
    sample, so a draw that the two paths' float rounding flips is told apart from a wrong one: a token may
    differ from the reference's only when nudging the uniform or top-p by 1e-6 draws it."""
    model, tok = tiny_llama(), TinyTokenizer()
    params = SamplingParams(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=3)
    samples = sample_composed(model, tok, PROMPTS[:2], [], [], samples_per_prompt=1, params=params)
    u = crn_uniforms(3, [0, 1], 1, 6)
    flips = 0
    for i, s in enumerate(samples):
        ids = tok(PROMPTS[i])["input_ids"]
        drawn = [*s.token_ids, s.stop_token] if s.finished else list(s.token_ids)
        assert s.finished or len(drawn) == 6
        for t, token in enumerate(drawn):
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids + drawn[:t]])).logits[:, -1], -1)
            ref = int(draw_tokens(logp, torch.tensor([u[i, 0, t]]), 0.8, 0.9)[0])
            if ref != token:
                flips += 1
                nudged = {int(draw_tokens(logp, torch.tensor([u[i, 0, t] + du]), 0.8, 0.9 + dp)[0])
                          for du in (-1e-6, 0.0, 1e-6) for dp in (-1e-6, 0.0, 1e-6)}
                assert token in nudged, (i, t, token, ref)
    assert flips <= 1


def test_singleton_sum_sequence_logprob_equals_adapter_logprob(random_adapters: list[Path]) -> None:
    """Token-level π_{ℓ} with w = 1 is the adapter model itself: the sample's log-prob is its own."""
    from peft import PeftModel

    model, tok = tiny_llama(), TinyTokenizer()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    samples = sample_composed(model, tok, PROMPTS, [1], [1.0], samples_per_prompt=1, params=PARAMS, multi=multi)
    peft_model = PeftModel.from_pretrained(tiny_llama(), str(random_adapters[1]))
    peft_model.eval()
    for i, s in enumerate(samples):
        prompt = tok(PROMPTS[i])["input_ids"]
        seq = prompt + list(s.token_ids) + ([tok.eos_token_id] if s.finished else [])
        with torch.no_grad():
            logp = torch.log_softmax(peft_model(input_ids=torch.tensor([seq])).logits[0, :-1].double(), -1)
        target = torch.tensor(seq[1:])
        own = logp.gather(-1, target[:, None]).squeeze(-1)[len(prompt) - 1 :].sum().item()
        assert s.logprob == pytest.approx(own, abs=1e-3)


def test_common_random_numbers(random_adapters: list[Path]) -> None:
    model, tok = tiny_llama(), TinyTokenizer()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    a = sample_composed(model, tok, PROMPTS, [0, 2], [0.5, 0.5], samples_per_prompt=2, params=PARAMS, multi=multi)
    b = sample_composed(model, tok, PROMPTS, [0, 2], [0.5, 0.5], samples_per_prompt=2, params=PARAMS, multi=multi,
                        max_batch_rows=3)
    # same seed → the same samples, whatever the batching (other batch shapes: equal up to float rounding)
    assert_same_samples(a, b, logprob_tol=1e-4)
    other = sample_composed(model, tok, PROMPTS, [0, 2], [0.5, 0.5], samples_per_prompt=2,
                            params=SamplingParams(max_new_tokens=12, top_p=0.95, seed=8), multi=multi)
    assert [s.token_ids for s in other] != [s.token_ids for s in a]
    # the uniform stream of (prompt, sample) does not depend on the coalition or on the other prompts
    # (exact: the same seeded generator code draws both, no float arithmetic between two paths)
    assert np.array_equal(crn_uniforms(7, [2], 2, 12)[0], crn_uniforms(7, [0, 1, 2], 2, 12)[2])
    # a coalition whose next-token distribution is (numerically) the base's draws exactly the base's tokens
    zero = sample_composed(model, tok, PROMPTS, [0], [0.0], samples_per_prompt=2, params=PARAMS, multi=multi)
    base = sample_composed(model, tok, PROMPTS, [], [], samples_per_prompt=2, params=PARAMS, multi=multi)
    assert sum(x.token_ids == y.token_ids for x, y in zip(zero, base, strict=True)) >= len(base) - 1


def test_combine_and_draw() -> None:
    logps = torch.log_softmax(torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)), -1)
    combined = combine_next_token_logprobs(logps, torch.tensor([1.0, 0.0]))
    assert torch.allclose(combined, logps[:, 1], atol=1e-6)  # singleton with w = 1 → the adapter itself
    assert torch.allclose(combine_next_token_logprobs(logps[:, :1], torch.tensor([])), logps[:, 0])
    probs = torch.tensor([[0.1, 0.6, 0.3]]).log()
    # inverse CDF in vocabulary order; top-p 0.7 keeps {1, 2} (0.6 + 0.3 ≥ 0.7)
    assert draw_tokens(probs, torch.tensor([0.05]), 1.0, 1.0).item() == 0
    assert draw_tokens(probs, torch.tensor([0.5]), 1.0, 1.0).item() == 1
    assert draw_tokens(probs, torch.tensor([0.05]), 1.0, 0.7).item() == 1
    assert draw_tokens(probs, torch.tensor([0.99]), 1.0, 0.7).item() == 2
    assert draw_tokens(probs, torch.tensor([0.99]), 0.0, 1.0).item() == 1  # greedy


def test_coalition_sampler_caches(random_adapters: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Base:
        sha256 = "b" * 64

    specs = [AdapterSpec(f"s{i}", d, f"{i}" * 64) for i, d in enumerate(random_adapters)]
    sampler = CoalitionSampler(Base(), specs, params=PARAMS, samples_per_prompt=2, cache_dir=tmp_path / "c")
    monkeypatch.setattr(sampler, "models", lambda: (model, TinyTokenizer(), multi))
    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    first = sampler.samples([0, 1], [0.5, 0.5], PROMPTS)
    assert sampler.generated == 1
    again = sampler.samples([0, 1], [0.5, 0.5], PROMPTS)
    assert sampler.cached == 1 and again == first  # exact: the cache returns the stored samples themselves
    assert sampler.key([0, 1], [0.5, 0.5], PROMPTS) != sampler.key([0, 1], [1.0, 1.0], PROMPTS)
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
    stats = sample_statistics(first)
    assert 0 < stats["distinct_token_ratio"] <= 1 and stats["mean_tokens"] > 0
