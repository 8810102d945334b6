"""Responses sampled from coalition models π_S, cached on disk: what the `reward` utility scores.

`CoalitionSampler` holds the base model and every source's adapter (`AdapterSpec`) and returns, for a
coalition S with weights w^S, its responses to a list of prompts (`valuation.decoding.decoder.sample_composed`),
or the importance-sampling proposal pool (`valuation.decoding.decoder.sample_mixture`) and the pool's
densities (`valuation.decoding.importance`). Every result is cached as one JSON file per coalition (or pool),
keyed by content hashes, so a re-run with the same inputs decodes nothing. "Sampling" here means drawing
RESPONSES (tokens) from a language model; the game engine's sampling of COALITIONS (permutation and Banzhaf
estimators) is `valuation.games.estimators`. `sample_statistics` measures how degenerate a set of responses is.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from valuation.composition.multilora import MultiLoraModel
from valuation.decoding.decoder import PromptLike, Sample, SamplingParams, sample_composed, sample_mixture
from valuation.decoding.importance import pool_log_densities, proposal_log_density
from valuation.files import atomic_write_bytes, atomic_write_text, sha256_json
from valuation.models import BaseModelInfo, load_base_model
from valuation.runtime.backend import LOCAL, Backend
from valuation.runtime.shipping import (
    DirPayload,
    ShippedModel,
    materialise_base_model,
    pack_dir,
    ship_base_model,
    unpack_dir,
)

SAMPLES_FORMAT = "payoutsim-samples/1"
SAMPLER_VERSION = 1
#: ``generate(model, tokenizer, multi)`` → the responses to cache (see `CoalitionSampler._cached`).
Generate = Callable[[Any, Any, MultiLoraModel], list[Sample]]


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter available to coalitions: its source name, peft dir and content hash."""

    source: str
    path: Path
    sha256: str


class CoalitionSampler:
    """Samples responses from π_S for coalitions S of ``adapters``, caching every coalition's samples on disk.

    The base model and ALL adapters are loaded once, lazily (only on a cache miss), into one
    `MultiLoraModel`. The cache file of a coalition is ``cache_dir/<key>.json`` with key = SHA-256 over
    (sampler version, base sha256, the (source, adapter sha256, weight) of each member of S, the sampling
    params, samples per prompt, max prompt tokens and the prompts); a re-run with the same inputs is free.
    ``packed_gemm``: decode steps through `valuation.composition.packed` where it helps (not part of the key: the same
    distribution, equal to float rounding).

    With a remote ``backend`` (`valuation.runtime.backend`), `prefetch` decodes the coalitions missing from the
    cache as one task each, and a missing proposal pool is one task; the base model and every adapter travel
    to the tasks once (`valuation.runtime.shipping`). Teacher-forced pool densities are computed on the driver.
    """

    def __init__(
        self,
        base: BaseModelInfo,
        adapters: Sequence[AdapterSpec],
        *,
        params: SamplingParams,
        samples_per_prompt: int,
        cache_dir: Path | None,
        max_batch_rows: int = 64,
        max_prompt_tokens: int | None = 256,
        packed_gemm: bool = True,
        backend: Backend = LOCAL,
    ) -> None:
        self.base = base
        self.backend = backend
        self._prefetched: dict[str, list[Sample]] = {}
        self._shared: tuple[Any, Any] | None = None
        self.packed_gemm = packed_gemm
        self.adapters = list(adapters)
        self.params = params
        self.samples_per_prompt = samples_per_prompt
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.max_batch_rows = max_batch_rows
        self.max_prompt_tokens = max_prompt_tokens
        self.generated = 0
        self.cached = 0
        self._loaded: tuple[Any, Any, MultiLoraModel] | None = None

    def key(self, members: Sequence[int], weights: Sequence[float], prompts: Sequence[PromptLike]) -> str:
        """The cache key of coalition ``members`` (adapter positions) with ``weights`` on ``prompts``."""
        return self._key(prompts, self.samples_per_prompt, members=[
            [self.adapters[m].source, self.adapters[m].sha256, float(w)] for m, w in zip(members, weights, strict=True)
        ])

    def proposal_key(self, component_weights: np.ndarray, prompts: Sequence[PromptLike], samples_per_prompt: int) -> str:
        """The cache key of a proposal pool: the mixture components' weights over ALL adapters (in order)."""
        return self._key(
            prompts,
            samples_per_prompt,
            adapters=[[a.source, a.sha256] for a in self.adapters],
            proposal=np.asarray(component_weights, dtype=np.float64).round(12).tolist(),
        )

    def _key(self, prompts: Sequence[PromptLike], samples_per_prompt: int, **what: Any) -> str:
        payload = {
            "version": SAMPLER_VERSION,
            "base": self.base.sha256,
            **what,
            "params": asdict(self.params),
            "samples_per_prompt": samples_per_prompt,
            "max_prompt_tokens": self.max_prompt_tokens,
            "prompts": [p if isinstance(p, str) else [dict(m) for m in p] for p in prompts],
        }
        return sha256_json(payload)

    def models(self) -> tuple[Any, Any, MultiLoraModel]:
        """``(model, tokenizer, multi)``: the base model, its tokenizer and the `MultiLoraModel` of all adapters,
        loaded on the first call (a cache hit never calls it) and kept until `close`."""
        if self._loaded is None:
            model, tokenizer = load_base_model(self.base)
            multi = MultiLoraModel.from_adapter_dirs(
                model, [a.path for a in self.adapters], [a.source for a in self.adapters], packed_gemm=self.packed_gemm
            )
            self._loaded = (model, tokenizer, multi)
        return self._loaded

    def share_models(self, loaded: tuple[Any, Any, MultiLoraModel]) -> None:
        """Use models another sampler of the same base and adapters already loaded (`models`' result), so
        several samplers (e.g. one per benchmark repeat, each with a fresh sample cache) load them once."""
        self._loaded = loaded

    def samples(
        self, members: Sequence[int], weights: Sequence[float], prompts: Sequence[PromptLike]
    ) -> list[Sample]:
        """The samples of coalition ``members`` (from the cache, or generated and cached)."""

        def generate(model: Any, tokenizer: Any, multi: MultiLoraModel) -> list[Sample]:
            return sample_composed(
                model, tokenizer, prompts, list(members), list(weights), samples_per_prompt=self.samples_per_prompt,
                params=self.params, multi=multi, max_batch_rows=self.max_batch_rows,
                max_prompt_tokens=self.max_prompt_tokens,
            )

        key = self.key(members, weights, prompts)
        return self._cached(f"{key}.json", len(prompts) * self.samples_per_prompt, generate)

    def proposal_samples(
        self, component_weights: np.ndarray, prompts: Sequence[PromptLike], samples_per_prompt: int,
        *, on_chunk: Callable[[int], None] | None = None,
    ) -> list[Sample]:
        """The proposal pool of importance sampling (`sample_mixture` over the C components whose weights over
        all adapters are ``component_weights`` [C, n]); cached on disk like coalition samples. ``on_chunk``:
        see `sample_mixture` (not called on a cache hit)."""

        def generate(model: Any, tokenizer: Any, multi: MultiLoraModel) -> list[Sample]:
            return sample_mixture(
                model, tokenizer, prompts, component_weights, multi=multi, samples_per_prompt=samples_per_prompt,
                params=self.params, max_batch_rows=self.max_batch_rows, max_prompt_tokens=self.max_prompt_tokens,
                on_chunk=on_chunk,
            )

        key = self.proposal_key(component_weights, prompts, samples_per_prompt)
        name = f"proposal-{key}.json"
        expected = len(prompts) * samples_per_prompt
        if self.backend.remote and not self._in_cache(name, expected):
            job = DecodeJob("pool", [], [], np.asarray(component_weights, dtype=np.float64), list(prompts),
                            samples_per_prompt, self.params, self.max_batch_rows, self.max_prompt_tokens,
                            self.packed_gemm)
            self._decode_remote([(name, job)], "decoding the proposal pool", progress=False)
            if on_chunk is not None:  # the caller's bar: the whole pool at once (one task)
                on_chunk(expected)
        return self._cached(name, expected, generate)

    def prefetch(
        self, coalitions: Sequence[tuple[Sequence[int], Sequence[float]]], prompts: Sequence[PromptLike],
        *, progress: bool = False,
    ) -> None:
        """With a remote backend: decode every coalition ``(members, weights)`` missing from the cache, one
        task each, so the following `samples` calls find them; nothing with the local backend."""
        if not self.backend.remote:
            return
        todo: dict[str, DecodeJob] = {}
        for members, weights in coalitions:
            name = f"{self.key(members, weights, prompts)}.json"
            if name in todo or self._in_cache(name, len(prompts) * self.samples_per_prompt):
                continue
            todo[name] = DecodeJob("coalition", list(members), list(weights), None, list(prompts),
                                   self.samples_per_prompt, self.params, self.max_batch_rows, self.max_prompt_tokens,
                                   self.packed_gemm)
        self._decode_remote(list(todo.items()), "decoding coalitions", progress=progress)

    def _in_cache(self, name: str, expected: int) -> bool:
        if name in self._prefetched:
            return True
        return self.cache_dir is not None and _load_samples(self.cache_dir / name, expected) is not None

    def _decode_remote(self, todo: list[tuple[str, DecodeJob]], label: str, *, progress: bool) -> None:
        """Run the decode jobs ``todo`` ((cache file name, job)) as tasks; keep and cache what arrives."""
        if not todo:
            return
        if self._shared is None:
            base = ship_base_model(self.base, with_files=self.backend.ship_files)
            adapters = {a.source: (a.sha256, pack_dir(a.path)) for a in self.adapters}
            self._shared = (self.backend.share(base), self.backend.share(adapters))

        def arrived(i: int, samples: list[Sample]) -> None:
            name = todo[i][0]
            self._prefetched[name] = samples
            if self.cache_dir is not None:
                _save_samples(self.cache_dir / name, samples)

        self.backend.map(decode_task, [job for _, job in todo], shared=self._shared, label=label,
                         progress=progress, on_result=arrived)

    def _cached(self, name: str, expected: int, generate: Generate) -> list[Sample]:
        """``cache_dir/name`` if it holds ``expected`` samples; else ``generate(model, tokenizer, multi)``,
        saved there atomically. Counts hits (``cached``) and generations (``generated``)."""
        if name in self._prefetched:  # decoded by a remote task (`prefetch`)
            self.generated += 1
            return self._prefetched.pop(name)
        path = None if self.cache_dir is None else self.cache_dir / name
        if path is not None:
            hit = _load_samples(path, expected)
            if hit is not None:
                self.cached += 1
                return hit
        out = generate(*self.models())
        self.generated += 1
        if path is not None:
            _save_samples(path, out)
        return out

    def pool_log_densities(
        self,
        pool: Sequence[Sample],
        prompts: Sequence[PromptLike],
        target_weights: np.ndarray,
        component_weights: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(log_p [R, K], log_q [R])`` of the pool under the K target coalitions (weights over all adapters)
        and under the proposal. Targets that are mixture components come from the pool's own
        ``scored_logprobs``; the others are scored by one teacher-forced pass
        (`valuation.decoding.importance.pool_log_densities`, cached on disk as ``.npz``)."""
        targets = np.atleast_2d(np.asarray(target_weights, dtype=np.float64))
        components = np.atleast_2d(np.asarray(component_weights, dtype=np.float64))
        scored = np.array([s.scored_logprobs for s in pool], dtype=np.float64).reshape(len(pool), -1)
        match = [np.flatnonzero(np.all(np.isclose(components, row, rtol=0, atol=1e-12), axis=1)) for row in targets]
        log_p = np.empty((len(pool), targets.shape[0]))
        missing = [k for k, found in enumerate(match) if found.size == 0]
        for k, found in enumerate(match):
            if found.size:
                log_p[:, k] = scored[:, found[0]]
        if missing:
            log_p[:, missing] = self._teacher_forced(pool, prompts, targets[missing], components)
        return log_p, proposal_log_density(scored)

    def _teacher_forced(self, pool: Sequence[Sample], prompts: Sequence[PromptLike], targets: np.ndarray,
                        components: np.ndarray) -> np.ndarray:
        """``log_p`` [R, K] of the pool under ``targets`` by teacher forcing, cached as ``densities-….npz``."""
        samples_per_prompt = len(pool) // max(1, len(prompts))
        key = self.proposal_key(components, prompts, samples_per_prompt)
        digest = hashlib.sha256(targets.round(12).tobytes() + str(targets.shape).encode()).hexdigest()[:24]
        path = None if self.cache_dir is None else self.cache_dir / f"densities-{key[:40]}-{digest}.npz"
        if path is not None and path.is_file():
            try:
                with np.load(path) as data:
                    if data["log_p"].shape == (len(pool), targets.shape[0]):
                        return np.asarray(data["log_p"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable: recompute
        model, tokenizer, multi = self.models()
        log_p = pool_log_densities(model, tokenizer, multi, prompts, pool, targets, self.params,
                      max_prompt_tokens=self.max_prompt_tokens, max_batch_rows=self.max_batch_rows)
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, log_p=log_p)
            atomic_write_bytes(path, buffer.getvalue())
        return log_p

    def close(self) -> None:
        """Free the loaded model (if any)."""
        if self._loaded is not None:
            self._loaded[2].close()
            self._loaded = None


@dataclass(frozen=True)
class DecodeJob:
    """One decoding task: a coalition's samples (``kind = "coalition"``) or the proposal pool (``"pool"``)."""

    kind: str
    members: list[int]
    weights: list[float]
    component_weights: np.ndarray | None
    prompts: list[PromptLike]
    samples_per_prompt: int
    params: SamplingParams
    max_batch_rows: int
    max_prompt_tokens: int | None
    packed_gemm: bool


def decode_task(job: DecodeJob, base: ShippedModel, adapters: dict[str, tuple[str, DirPayload]]) -> list[Sample]:
    """A task's body: the job decoded by a `CoalitionSampler` without a cache on this node (the adapters
    written to a temp dir)."""
    import tempfile

    info = materialise_base_model(base)
    with tempfile.TemporaryDirectory(prefix="payoutsim-decode-") as tmp:
        specs = [
            AdapterSpec(source, unpack_dir(files, Path(tmp) / f"adapter_{i}"), sha)
            for i, (source, (sha, files)) in enumerate(adapters.items())
        ]
        sampler = CoalitionSampler(
            info, specs, params=job.params, samples_per_prompt=job.samples_per_prompt, cache_dir=None,
            max_batch_rows=job.max_batch_rows, max_prompt_tokens=job.max_prompt_tokens, packed_gemm=job.packed_gemm,
        )
        try:
            if job.kind == "pool":
                assert job.component_weights is not None
                return sampler.proposal_samples(job.component_weights, job.prompts, job.samples_per_prompt)
            return sampler.samples(job.members, job.weights, job.prompts)
        finally:
            sampler.close()


def _load_samples(path: Path, expected: int) -> list[Sample] | None:
    """The samples cached at ``path`` (``SAMPLES_FORMAT``), or None when absent, unreadable or not ``expected`` many."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SAMPLES_FORMAT or len(data["samples"]) != expected:
            return None
        return [
            Sample(
                prompt_index=int(s["prompt_index"]),
                sample_index=int(s["sample_index"]),
                token_ids=tuple(int(t) for t in s["token_ids"]),
                text=str(s["text"]),
                logprob=float(s["logprob"]),
                base_logprob=float(s["base_logprob"]),
                finished=bool(s["finished"]),
                stop_token=None if s.get("stop_token") is None else int(s["stop_token"]),
                scored_logprobs=None if s.get("scored_logprobs") is None
                else tuple(float(x) for x in s["scored_logprobs"]),
            )
            for s in data["samples"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable cache entry counts as absent


def _save_samples(path: Path, samples: Sequence[Sample]) -> None:
    """Write ``samples`` to ``path`` as ``SAMPLES_FORMAT`` JSON, atomically (`valuation.files`)."""
    payload = {"format": SAMPLES_FORMAT, "samples": [asdict(s) | {"token_ids": list(s.token_ids)} for s in samples]}
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False))


def sample_statistics(samples: Sequence[Sample]) -> dict[str, float]:
    """Degeneracy diagnostics of a set of samples (used to measure the ``sum`` overshoot).

    * ``distinct_token_ratio`` — distinct tokens / tokens per sample, averaged over samples;
    * ``repeated_trigram_share`` — share of token trigrams that repeat an earlier trigram of the same sample;
    * ``base_logprob_per_token`` — Σ log π₀(token) / Σ tokens: how (un)likely the base finds the text;
    * ``mean_tokens`` and ``finished_share`` (ended with a stop token).
    """
    ratios, repeats, tokens = [], [], 0
    base_total = 0.0
    for s in samples:
        ids = s.token_ids
        tokens += len(ids)
        base_total += s.base_logprob
        if ids:
            ratios.append(len(set(ids)) / len(ids))
        grams = [tuple(ids[j : j + 3]) for j in range(len(ids) - 2)]
        if grams:
            repeats.append(1 - len(set(grams)) / len(grams))
    n = max(1, len(samples))
    return {
        "distinct_token_ratio": float(np.mean(ratios)) if ratios else 0.0,
        "repeated_trigram_share": float(np.mean(repeats)) if repeats else 0.0,
        "base_logprob_per_token": base_total / max(1, tokens),
        "mean_tokens": tokens / n,
        "finished_share": sum(s.finished for s in samples) / n,
    }


__all__ = [
    "SAMPLER_VERSION",
    "SAMPLES_FORMAT",
    "AdapterSpec",
    "CoalitionSampler",
    "sample_statistics",
]
