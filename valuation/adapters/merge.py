"""Weight-level merge of per-source adapters (peft ``add_weighted_adapter``): an optional comparison.

Language-model arithmetic combines the adapters' log-probabilities; a weight-level merge instead builds one
adapter whose weight update is a combination of the sources' LoRA updates ΔW_ℓ = s_ℓ B_ℓ A_ℓ
(s_ℓ = α/r) and runs the base with it:

* ``cat`` — concatenates the ranks: A = [s_ℓ A_ℓ]_ℓ stacked, B = [B_ℓ]_ℓ side by side, scaling 1, so
  ΔW_S = Σ_{ℓ∈S} ΔW_ℓ EXACTLY (rank Σ r_ℓ). For S = {ℓ} it is adapter ℓ itself.
* ``svd`` — the same sum truncated to rank max r_ℓ by SVD (an approximation of it).

Summing ΔW inside the network is not the same as summing log-ratios of whole models (the nonlinearities
sit in between), so the merged π_S differs from the arithmetic π_S for |S| ≥ 2; `valuation.retraining.run`
reports by how much. Merged log-probs are cached like any model's (`valuation.composition.logprobs.LogProbCache`),
keyed by (base sha256, the merged adapters' sha256s in order, combination).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from valuation.composition.logprobs import (
    AdapterRef,
    EvalSet,
    LogProbCache,
    ResponseLogProbs,
    score_pairs,
)
from valuation.files import sha256_json
from valuation.models import load_base_model
from valuation.models.cache import BaseModelRef
from valuation.models.quiet import quiet_libraries
from valuation.progress import progress_bar

Combination = Literal["cat", "svd"]
COMBINATIONS: tuple[str, ...] = ("cat", "svd")


def merge_model_key(base_sha256: str, adapter_sha256s: Sequence[str], combination: str) -> str:
    """The log-prob cache's model key of a merged adapter."""
    return sha256_json({"base": base_sha256, "merge": combination, "adapters": list(adapter_sha256s)})


def merged_coalition_logprobs(
    base: BaseModelRef,
    adapters: Mapping[str, AdapterRef],
    coalitions: Sequence[Sequence[str]],
    eval_sets: Sequence[EvalSet],
    *,
    combination: str = "cat",
    cache_dir: Path,
    max_length: int | None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, dict[tuple[str, ...], ResponseLogProbs]]:
    """Response log-probs of the weight-merged model of every (non-empty) coalition on every eval set.

    Args:
        adapters: source → its finished adapter (all LoRA adapters of the same base model).
        coalitions: tuples of source names; the merge weight of every member is 1.
        combination: ``"cat"`` (exact sum of ΔW) or ``"svd"`` (rank-truncated sum).

    Returns:
        objective → coalition tuple → `ResponseLogProbs`. Only cache misses load a model (once, with every
        needed adapter; each merged adapter is built, scored on every eval set and deleted).
    """
    if combination not in COMBINATIONS:
        raise ValueError(
            f"unknown merge combination {combination!r}; expected one of {', '.join(COMBINATIONS)}"
        )
    wanted = [tuple(c) for c in coalitions]
    for c in wanted:
        if not c:
            raise ValueError("the empty coalition has no adapters to merge (it is the base model)")
        unknown = [s for s in c if s not in adapters]
        if unknown:
            raise ValueError(f"no adapter for source {unknown[0]!r}")
    cache = LogProbCache(cache_dir)
    found: dict[str, dict[tuple[str, ...], ResponseLogProbs]] = {es.objective: {} for es in eval_sets}
    todo: list[tuple[tuple[str, ...], EvalSet, str]] = []
    for c in wanted:
        mkey = merge_model_key(base.sha256, [adapters[s].sha256 for s in c], combination)
        for es in eval_sets:
            key = LogProbCache.key(mkey, es.data_hash, max_length)
            hit = cache.load(key)
            if hit is not None and len(hit) == len(es.pairs):
                found[es.objective][c] = hit
            else:
                todo.append((c, es, key))
    if not todo:
        return found

    needed = sorted({s for c, _, _ in todo for s in c})
    names = {s: f"src_{i}" for i, s in enumerate(needed)}  # safe peft module names
    model, tokenizer = _load_with_adapters(base, {names[s]: adapters[s] for s in needed})
    by_coalition: dict[tuple[str, ...], list[tuple[EvalSet, str]]] = {}
    for c, es, key in todo:
        by_coalition.setdefault(c, []).append((es, key))
    total = sum(2 * len(es.pairs) for _, es, _ in todo)
    with progress_bar(f"scoring {combination}-merged coalitions", total, progress) as advance, quiet_libraries():
        for c, jobs in by_coalition.items():
            model.add_weighted_adapter(
                adapters=[names[s] for s in c],
                weights=[1.0] * len(c),
                adapter_name="merged",
                combination_type=combination,
            )
            model.set_adapter("merged")
            for es, key in jobs:
                value = score_pairs(
                    model, tokenizer, es.pairs, max_length=max_length, batch_size=batch_size, on_batch=advance
                )
                cache.save(key, value)
                found[es.objective][c] = value
            model.set_adapter(names[needed[0]])
            model.delete_adapter("merged")
    return found


def _load_with_adapters(base: BaseModelRef, adapters: Mapping[str, AdapterRef]) -> tuple[Any, Any]:
    """The base model with every adapter of ``adapters`` loaded under its key (the first one active), in
    eval mode, and its tokenizer. peft is imported here: it costs seconds (``import transformers, peft`` ≈
    4.8 s measured) and light commands must not pay."""
    from peft import PeftModel

    items = list(adapters.items())
    with quiet_libraries():
        model, tokenizer = load_base_model(base)  # type: ignore[arg-type]
        model = PeftModel.from_pretrained(model, str(items[0][1].path), adapter_name=items[0][0])
        for name, ref in items[1:]:
            model.load_adapter(str(ref.path), adapter_name=name)
    model.eval()
    return model, tokenizer


__all__ = ["COMBINATIONS", "Combination", "merge_model_key", "merged_coalition_logprobs"]
