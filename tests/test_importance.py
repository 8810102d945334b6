"""Importance-sampled `reward` utilities (valuation.decoding.importance): the estimator, the pool's densities, and the
estimates against direct sampling on a tiny random Llama with random LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_lm import TinyTokenizer, tiny_llama  # noqa: E402

from valuation.composition.multilora import MultiLoraModel  # noqa: E402
from valuation.decoding.coalition_responses import AdapterSpec, CoalitionSampler  # noqa: E402
from valuation.decoding.decoder import (  # noqa: E402
    SamplingParams,
    mixture_components,
    sample_composed,
    sample_mixture,
)
from valuation.decoding.importance import (  # noqa: E402
    importance_estimate,
    pool_log_densities,
    proposal_components,
    proposal_log_density,
)


def test_estimator_is_the_plain_mean_when_target_equals_proposal() -> None:
    rewards = np.array([1.0, 2.0, 4.0, 5.0])
    logs = np.log([0.1, 0.2, 0.3, 0.4])
    est = importance_estimate(np.stack([logs, logs], axis=1), logs, rewards)
    np.testing.assert_allclose(est.values, [3.0, 3.0])
    np.testing.assert_allclose(est.ess, [4.0, 4.0])
    np.testing.assert_allclose(est.std_errs, np.sqrt(((rewards - 3.0) ** 2).sum()) / 4.0)


def test_estimator_recovers_a_target_mean_from_another_distribution() -> None:
    rng = np.random.default_rng(0)
    q = np.array([0.25, 0.25, 0.25, 0.25])
    p = np.array([0.7, 0.1, 0.1, 0.1])
    reward = np.array([1.0, 0.0, 3.0, -2.0])
    draws = rng.choice(4, size=4_000, p=q)
    est = importance_estimate(np.log(p)[draws][:, None], np.log(q)[draws], reward[draws])
    truth = float(p @ reward)
    assert abs(est.values[0] - truth) <= 4 * est.std_errs[0]
    assert 0.2 * 4_000 < est.ess[0] < 0.8 * 4_000  # p is far from q: fewer effective samples


def test_proposal_components() -> None:
    assert proposal_components(3).shape == (8, 3)
    big = proposal_components(8)
    assert big.shape == (10, 8) and not big[0].any() and big[-1].all() and (big[1:-1].sum(1) == 1).all()


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.8, 0.9)])
def test_pool_densities_match_the_decoder(random_adapters: list[Path], temperature: float, top_p: float) -> None:
    """The densities accumulated while decoding the pool equal teacher-forced ones; under τ = 1, top-p = 1 a
    response's density under its own component is the log-prob the decoder recorded."""
    model, tok = tiny_llama(), TinyTokenizer()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    params = SamplingParams(max_new_tokens=8, temperature=temperature, top_p=top_p, seed=3)
    components = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    prompts = ["hello there", "a longer prompt here"]
    pool = sample_mixture(model, tok, prompts, components, multi=multi, samples_per_prompt=3, params=params)
    scored = np.array([s.scored_logprobs for s in pool])
    forced = pool_log_densities(model, tok, multi, prompts, pool, components, params, max_batch_rows=8)
    np.testing.assert_allclose(forced, scored, atol=2e-4)
    assert np.all(forced <= 0) and np.all(np.isfinite(forced))
    np.testing.assert_allclose(proposal_log_density(scored), np.log(np.exp(scored).mean(axis=1)), atol=1e-9)
    chosen = mixture_components(params.seed, range(2), 3, len(components)).reshape(-1)
    assert len(set(chosen.tolist())) > 1  # the pool really mixes components
    assert any(s.stop_token is not None for s in pool) or all(len(s.token_ids) == 8 for s in pool)
    if temperature == 1.0 and top_p == 1.0:
        np.testing.assert_allclose(scored[np.arange(len(pool)), chosen], [s.logprob for s in pool], atol=1e-6)
        direct = sample_composed(model, tok, prompts, [0, 1], [0.5, 0.5], samples_per_prompt=2, params=params,
                                 multi=multi)
        lp = pool_log_densities(model, tok, multi, prompts, direct, np.array([[0.5, 0.5, 0.0]]), params)
        np.testing.assert_allclose(lp[:, 0], [s.logprob for s in direct], atol=2e-4)
    multi.close()


def test_importance_estimates_agree_with_direct_sampling(random_adapters: list[Path]) -> None:
    """The mean of a sequence statistic under every coalition of 3 adapters: SNIS from one pool vs direct
    sampling, independent draws, within 3 combined standard errors."""
    model, tok = tiny_llama(), TinyTokenizer()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    masks = proposal_components(3)
    weights = masks / np.maximum(masks.sum(1, keepdims=True), 1)  # "mean" weighting
    prompts = ["abc", "hello", "xyz q"]

    def reward(sample) -> float:  # share of even token ids: depends on the coalition
        return float(np.mean([t % 2 == 0 for t in sample.token_ids])) if sample.token_ids else 0.0

    pool = sample_mixture(model, tok, prompts, weights, multi=multi, samples_per_prompt=60, params=params)
    scored = np.array([s.scored_logprobs for s in pool])
    est = importance_estimate(scored, proposal_log_density(scored), np.array([reward(s) for s in pool]))
    assert np.all(est.ess > 0.3 * len(pool))
    for k, row in enumerate(weights):
        members = [int(i) for i in np.flatnonzero(row)]
        direct = sample_composed(model, tok, prompts, members, [float(row[i]) for i in members],
                                 samples_per_prompt=60, params=SamplingParams(max_new_tokens=6, seed=11),
                                 multi=multi)
        r = np.array([reward(s) for s in direct])
        se = np.hypot(est.std_errs[k], r.std(ddof=1) / np.sqrt(r.size))
        assert abs(est.values[k] - r.mean()) <= 3 * se, (k, est.values[k], r.mean(), se)
    multi.close()


def test_sampler_scores_targets_outside_the_mixture_by_teacher_forcing(
    random_adapters: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With n > 6 the mixture is ∅ + singletons + N; other coalitions are scored by one forward pass (cached)."""
    class Base:
        sha256 = "b" * 64

    params = SamplingParams(max_new_tokens=6, seed=2)
    specs = [AdapterSpec(f"s{i}", d, f"{i}" * 64) for i, d in enumerate(random_adapters)]
    sampler = CoalitionSampler(Base(), specs, params=params, samples_per_prompt=2, cache_dir=tmp_path / "c")
    model = tiny_llama()
    multi = MultiLoraModel.from_adapter_dirs(model, random_adapters)
    monkeypatch.setattr(sampler, "models", lambda: (model, TinyTokenizer(), multi))
    components = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    prompts = ["abc", "hello"]
    chunks: list[int] = []
    pool = sampler.proposal_samples(components, prompts, 3, on_chunk=chunks.append)
    assert sum(chunks) == len(pool) == 6  # progress: every decoded response reported once
    assert sampler.proposal_samples(components, prompts, 3, on_chunk=chunks.append) == pool  # exact: from the cache
    assert sampler.cached == 1 and sum(chunks) == 6  # a cache hit decodes nothing
    targets = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    log_p, log_q = sampler.pool_log_densities(pool, prompts, targets, components)
    scored = np.array([s.scored_logprobs for s in pool])
    np.testing.assert_allclose(log_p[:, [0, 2]], scored[:, [1, 0]])  # components: from the decode
    forced = pool_log_densities(model, TinyTokenizer(), multi, prompts, pool, targets[1:2], params)
    # the pair {s0, s1}: teacher-forced (the same function, batch rows and prompts as the sampler's; rtol 1e-7)
    np.testing.assert_allclose(log_p[:, 1], forced[:, 0])
    np.testing.assert_allclose(log_q, proposal_log_density(scored))
    assert len(list((tmp_path / "c").glob("densities-*.npz"))) == 1
    again, _ = sampler.pool_log_densities(pool, prompts, targets, components)  # from the .npz cache
    np.testing.assert_array_equal(again, log_p)  # exact: the stored array itself, nothing recomputed
    multi.close()
