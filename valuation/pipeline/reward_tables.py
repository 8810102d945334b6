"""Coalition tables of the ``reward`` utility (``[utility] kind = "reward"``).

u_k(S) is the mean reward, under objective k's scorer, of responses sampled from the coalition's composed
model π_S on the first ``[sampling] prompts_per_objective`` distinct prompts of k's eval set
(`valuation.coalition_utility.reward.reward_coalition_utilities`). With ``[sampling] importance = true``
every coalition is first estimated from one proposal pool by importance sampling and sampled directly only
when its effective sample size is too small. Samples are cached under ``RUN/cache/samples``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valuation.adapters.store import AdapterRecord
from valuation.coalition_utility.reward import ImportanceSettings, RewardObjective, reward_coalition_utilities
from valuation.coalition_utility.scorers import load_reward_scorer
from valuation.composition.arithmetic import coalition_weights
from valuation.decoding.coalition_responses import AdapterSpec, CoalitionSampler
from valuation.decoding.decoder import SamplingParams
from valuation.decoding.importance import proposal_components
from valuation.games.coalitions import coalition_label
from valuation.games.replicates import MAX_ITEM_CELLS, ItemTerms
from valuation.pipeline.config import ValuationConfig
from valuation.pipeline.inputs import PreparedInputs
from valuation.pipeline.tables import CoalitionTable
from valuation.runtime.backend import LOCAL, Backend
from valuation.sources import Prompt


def reward_objectives(config: ValuationConfig, prepared: PreparedInputs) -> list[RewardObjective]:
    """Per objective: the first ``[sampling] prompts_per_objective`` distinct prompts of its eval set and its
    reward scorer (loaded now, so a bad ``[reward]`` entry fails before anything is trained).

    Raises:
        InputError: a scorer that cannot be loaded, naming ``reward.<objective>``.
    """
    specs = config.reward.specs()
    out = []
    for es in prepared.eval_sets:
        seen: dict[str, Prompt] = {}  # prompt as JSON → the prompt (text or chat messages)
        for pair in es.pairs:
            key = json.dumps(pair.prompt, sort_keys=True, ensure_ascii=False)
            if key not in seen:
                seen[key] = pair.prompt
            if len(seen) >= config.sampling.prompts_per_objective:
                break
        scorer = load_reward_scorer(specs[es.objective], file=config.config_path, field=f"reward.{es.objective}")
        out.append(RewardObjective(es.objective, list(seen.values()), scorer))
    return out


def reward_tabulator(
    config: ValuationConfig,
    prepared: PreparedInputs,
    adapters: Mapping[str, AdapterRecord],
    objectives: list[RewardObjective],
    *,
    progress: bool,
    sampling_report: dict[str, dict[str, Any]] | None = None,
    backend: Backend = LOCAL,
) -> Callable[[np.ndarray], CoalitionTable]:
    """``tabulate(masks)`` for the `reward` utility: samples from every coalition's π_S (cached on disk under
    ``RUN/cache/samples``, keyed by base, adapter hashes of S, weights, sampling config and prompts), scores
    them per objective; std errs are those of the mean reward, counts the number of samples (the effective
    sample size for importance-sampled coalitions). ``sampling_report`` (if given) receives, per coalition
    label, how it was estimated (``importance`` / ``direct``) and its ESS per objective. ``backend``: where
    the decoding runs (one task per coalition and one for the proposal pool when remote)."""
    sources = prepared.sources
    sizes = [len(prepared.train[s]) for s in sources]
    sc = config.sampling
    sampler = reward_sampler(
        config, prepared, adapters, cache_dir=prepared.run_dir / "cache" / "samples", backend=backend
    )
    importance = importance_settings(config, prepared)

    def tabulate(masks: np.ndarray) -> CoalitionTable:
        masks = np.asarray(masks, dtype=bool)
        weights = coalition_weights(masks, sc.weighting, sizes)
        found: list[dict[str, Any]] = []
        terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        columns = reward_coalition_utilities(
            sampler, masks, weights, objectives, progress=progress, importance=importance, diagnostics=found,
            items=terms,
        )
        if sampling_report is not None:
            for mask, entry in zip(masks, found, strict=True):
                sampling_report[coalition_label(mask, sources)] = entry
        names = tuple(o.objective for o in objectives)
        return CoalitionTable(
            tuple(sources),
            names,
            masks,
            np.stack([columns[o].values for o in names], axis=1),
            np.stack([columns[o].std_errs for o in names], axis=1),
            np.stack([columns[o].counts for o in names], axis=1),
            _prompt_terms(sources, names, masks, terms),
        )

    return tabulate


def _prompt_terms(
    sources: Sequence[str], objectives: Sequence[str], masks: np.ndarray, terms: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> ItemTerms | None:
    """The per-prompt terms of the table (what the bootstrap resamples), or None when they are too large
    (`valuation.games.replicates.MAX_ITEM_CELLS`) or an objective has no prompt."""
    if not all(0 < terms[o][0].size <= MAX_ITEM_CELLS for o in objectives):
        return None
    return ItemTerms(
        tuple(sources), tuple(objectives), masks, tuple(terms[o][0] for o in objectives),
        tuple(terms[o][1] for o in objectives), unit="prompt",
    )


def reward_sampler(
    config: ValuationConfig,
    prepared: PreparedInputs,
    adapters: Mapping[str, AdapterRecord],
    *,
    cache_dir: Path | None,
    backend: Backend = LOCAL,
) -> CoalitionSampler:
    """The `valuation.decoding.coalition_responses.CoalitionSampler` of the `reward` utility: the base, every source's
    adapter and the ``[sampling]`` settings; samples cached under ``cache_dir`` (None: no cache)."""
    sc = config.sampling
    return CoalitionSampler(
        prepared.base,
        [AdapterSpec(s, adapters[s].path, adapters[s].sha256) for s in prepared.sources],
        params=SamplingParams(
            max_new_tokens=sc.max_new_tokens, temperature=sc.temperature, top_p=sc.top_p, seed=sc.seed
        ),
        samples_per_prompt=sc.samples_per_prompt,
        cache_dir=cache_dir,
        max_batch_rows=sc.max_batch_rows,
        max_prompt_tokens=sc.max_prompt_tokens,
        packed_gemm=sc.packed_gemm,
        backend=backend,
    )


def importance_settings(config: ValuationConfig, prepared: PreparedInputs) -> ImportanceSettings | None:
    """`valuation.coalition_utility.reward.ImportanceSettings` from ``[sampling]`` (None when
    ``importance = false``): the proposal mixture's components
    (`valuation.decoding.importance.proposal_components`) weighted like coalitions."""
    sc = config.sampling
    if not sc.importance:
        return None
    sizes = [len(prepared.train[s]) for s in prepared.sources]
    return ImportanceSettings(
        component_weights=coalition_weights(proposal_components(len(sizes)), sc.weighting, sizes),
        min_ess=sc.min_ess,
        samples_per_prompt=sc.pool_samples_per_prompt or 2 * sc.samples_per_prompt,
    )


__all__ = ["importance_settings", "reward_objectives", "reward_sampler", "reward_tabulator"]
