"""The ``reward`` coalition utility: the mean reward of responses sampled from each coalition's model.

The ``reward`` utility (`reward_coalition_utilities`, ``[utility] kind = "reward"``) is the paper's
u_k(S) = E_{x ∼ prompts_k, y ∼ π_S}[R_k(x, y)]: the mean reward (`valuation.coalition_utility.scorers` scorer of
objective k) of responses sampled from π_S (`valuation.decoding.coalition_responses`, common random numbers across
coalitions) on objective k's eval prompts, with std err sd(rewards, ddof=1)/√N over the N samples. With
``importance`` settings (the default in the pipeline, ``[sampling] importance``) every coalition is first
estimated from ONE proposal pool by self-normalised importance sampling (`valuation.decoding.importance`); a
coalition whose effective sample size falls below ``min_ess`` × the pool size (for any objective) is sampled
directly instead. The count of an importance-sampled coalition is its effective sample size (rounded down).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from valuation.coalition_utility.preference import UtilityColumn
from valuation.coalition_utility.scorers import RewardScorer, prompt_text, score_texts
from valuation.decoding.coalition_responses import CoalitionSampler
from valuation.decoding.decoder import PromptLike, Sample
from valuation.decoding.importance import importance_estimate
from valuation.progress import progress_bar


def reward_utility(rewards: Sequence[NDArray[np.floating]]) -> UtilityColumn:
    """Mean reward per coalition (row k = the rewards of coalition k's samples), its std err and count."""
    k = len(rewards)
    values = np.full(k, np.nan, dtype=np.float64)
    std_errs = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for i, row in enumerate(rewards):
        r = np.asarray(row, dtype=np.float64)
        counts[i] = r.size
        if r.size:
            values[i] = r.mean()
        if r.size > 1:
            std_errs[i] = r.std(ddof=1) / np.sqrt(r.size)
    return UtilityColumn(values=values, std_errs=std_errs, counts=counts)


@dataclass(frozen=True)
class RewardObjective:
    """One objective of the `reward` utility: its evaluation prompts and its reward scorer."""

    objective: str
    prompts: Sequence[PromptLike]  # text prompts or chat message lists
    scorer: RewardScorer


@dataclass(frozen=True)
class ImportanceSettings:
    """Importance sampling for the `reward` utility (`valuation.decoding.importance`).

    Attributes:
        component_weights: w[C, n], the proposal mixture's component coalitions' weights over all n sources.
        min_ess: accept a coalition's importance estimate when its ESS ≥ min_ess × the pool size of every
            objective; otherwise sample it directly.
        samples_per_prompt: pool responses per prompt.
    """

    component_weights: NDArray[np.floating]
    min_ess: float = 0.15
    samples_per_prompt: int = 2


def reward_coalition_utilities(
    sampler: CoalitionSampler,
    coalitions: NDArray[np.bool_],
    weights: NDArray[np.floating],
    objectives: Sequence[RewardObjective],
    *,
    progress: bool = False,
    importance: ImportanceSettings | None = None,
    diagnostics: list[dict[str, Any]] | None = None,
    items: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] | None = None,
) -> dict[str, UtilityColumn]:
    """The `reward` utility of every coalition (rows of ``coalitions``) for every objective.

    Args:
        sampler: a `CoalitionSampler` over the n sources' adapters (cached on disk).
        coalitions: bool[k, n]; weights: w[k, n] (`valuation.composition.arithmetic.coalition_weights`).
        objectives: prompts and scorer per objective; all objectives' prompts are sampled in one batched
            decode per coalition (CRN stream of a prompt = its position in that concatenated list).
        progress: a rich progress bar over coalitions on stderr.
        importance: estimate from one proposal pool first (see the module docstring); None: direct only.
        diagnostics: if given, one dict per coalition is appended: ``{"method": "importance" | "direct",
            "ess": {objective: ESS}}`` (ESS only when importance sampling ran).
        items: if given, receives per objective the per-prompt terms ``(N, D)``, each ``float[k, prompts]``,
            with u(S) = Σ_q N[S, q] / Σ_q D[S, q] (`valuation.games.replicates.ItemTerms`): for a directly
            sampled coalition the sum and the number of prompt q's rewards, for an importance-sampled one
            the sums of its normalised weights times rewards and of its weights over prompt q's pool samples.

    Returns:
        objective → `UtilityColumn` (values, std errs, sample counts), rows in ``coalitions`` order.
    """
    masks = np.asarray(coalitions, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    prompts: list[PromptLike] = []
    owner: list[int] = []  # prompt position → objective index
    offsets: list[int] = []  # objective → position of its first prompt
    for j, obj in enumerate(objectives):
        offsets.append(len(prompts))
        prompts.extend(obj.prompts)
        owner.extend([j] * len(obj.prompts))
    k = masks.shape[0]
    terms = [(np.zeros((k, len(o.prompts))), np.zeros((k, len(o.prompts)))) for o in objectives]
    estimated: dict[str, UtilityColumn] = {}
    ess = np.zeros((len(objectives), k))
    direct_rows = list(range(k))
    if importance is not None and sampler.params.temperature > 0:
        total = len(prompts) * importance.samples_per_prompt
        with progress_bar("importance sampling: proposal pool", total, progress) as advance:
            pool = sampler.proposal_samples(importance.component_weights, prompts, importance.samples_per_prompt,
                                            on_chunk=advance)
            log_p, log_q = sampler.pool_log_densities(pool, prompts, w, importance.component_weights)
        pool_owner = np.array([owner[s.prompt_index] for s in pool])
        accept = np.ones(k, dtype=bool)
        for j, obj in enumerate(objectives):
            rows = np.flatnonzero(pool_owner == j)
            scores = _score(obj, [pool[i] for i in rows], prompts)
            est = importance_estimate(log_p[rows], log_q[rows], scores)
            local = np.array([pool[i].prompt_index - offsets[j] for i in rows], dtype=np.int64)
            _add_importance_terms(terms[j], log_p[rows], log_q[rows], scores, local)
            ess[j] = est.ess
            accept &= est.ess >= importance.min_ess * len(rows)
            estimated[obj.objective] = UtilityColumn(est.values, est.std_errs, np.floor(est.ess).astype(np.int64))
        direct_rows = [int(i) for i in np.flatnonzero(~accept)]
    direct_terms = [(np.zeros((len(direct_rows), len(o.prompts))), np.zeros((len(direct_rows), len(o.prompts))))
                    for o in objectives]
    direct = _direct_reward_utilities(sampler, masks[direct_rows], w[direct_rows], objectives, prompts, owner,
                                      progress=progress, terms=direct_terms, offsets=offsets)
    for j in range(len(objectives)):
        for part in (0, 1):
            terms[j][part][direct_rows] = direct_terms[j][part]
    if items is not None:
        for j, obj in enumerate(objectives):
            items[obj.objective] = terms[j]
    out: dict[str, UtilityColumn] = {}
    for obj in objectives:
        column = estimated.get(obj.objective) or UtilityColumn(
            np.full(k, np.nan), np.zeros(k), np.zeros(k, dtype=np.int64)
        )
        values, std_errs, counts = column.values.copy(), column.std_errs.copy(), column.counts.copy()
        values[direct_rows] = direct[obj.objective].values
        std_errs[direct_rows] = direct[obj.objective].std_errs
        counts[direct_rows] = direct[obj.objective].counts
        out[obj.objective] = UtilityColumn(values, std_errs, counts)
    if diagnostics is not None:
        direct_set = set(direct_rows)
        for row in range(k):
            entry: dict[str, Any] = {"method": "direct" if row in direct_set else "importance"}
            if estimated:
                entry["ess"] = {obj.objective: float(ess[j, row]) for j, obj in enumerate(objectives)}
            diagnostics.append(entry)
    return out


def _score(obj: RewardObjective, samples: Sequence[Sample], prompts: Sequence[PromptLike]) -> NDArray[np.float64]:
    """Rewards of ``samples`` (their prompts by ``prompt_index``) under the objective's scorer."""
    texts = [s.text for s in samples]
    return np.asarray(score_texts(obj.scorer, texts, [prompt_text(prompts[s.prompt_index]) for s in samples]),
                      dtype=np.float64)


def _direct_reward_utilities(
    sampler: CoalitionSampler,
    masks: NDArray[np.bool_],
    w: NDArray[np.float64],
    objectives: Sequence[RewardObjective],
    prompts: Sequence[PromptLike],
    owner: Sequence[int],
    *,
    progress: bool,
    terms: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]],
    offsets: Sequence[int],
) -> dict[str, UtilityColumn]:
    """Sample every coalition (row of ``masks``) directly and average its rewards per objective; fill
    ``terms[j]`` (N, D: ``[rows, prompts of objective j]``) with each prompt's reward sum and count."""
    per_coalition: list[list[list[Sample]]] = [[[] for _ in range(masks.shape[0])] for _ in objectives]
    sampler.prefetch(  # a remote backend decodes the coalitions as parallel tasks first (cached on the driver)
        [([int(i) for i in np.flatnonzero(mask)], [float(w[row, i]) for i in np.flatnonzero(mask)])
         for row, mask in enumerate(masks)],
        prompts,
        progress=progress,
    )
    with progress_bar("sampling coalitions", masks.shape[0], progress) as update:
        for row, mask in enumerate(masks):
            members = [int(i) for i in np.flatnonzero(mask)]
            for sample in sampler.samples(members, [float(w[row, i]) for i in members], prompts):
                per_coalition[owner[sample.prompt_index]][row].append(sample)
            update(1, f"generated {sampler.generated}, cached {sampler.cached}")
    out: dict[str, UtilityColumn] = {}
    for j, obj in enumerate(objectives):
        flat = [s for row in per_coalition[j] for s in row]
        scores = _score(obj, flat, prompts) if flat else np.zeros(0)
        bounds = np.cumsum([0] + [len(row) for row in per_coalition[j]])
        out[obj.objective] = reward_utility([scores[bounds[i] : bounds[i + 1]] for i in range(masks.shape[0])])
        num, den = terms[j]
        for i in range(masks.shape[0]):
            local = np.array([s.prompt_index - offsets[j] for s in per_coalition[j][i]], dtype=np.int64)
            np.add.at(num[i], local, scores[bounds[i] : bounds[i + 1]])
            np.add.at(den[i], local, 1.0)
    return out


def _add_importance_terms(
    terms: tuple[NDArray[np.float64], NDArray[np.float64]],
    log_p: NDArray[np.floating],
    log_q: NDArray[np.floating],
    rewards: NDArray[np.floating],
    prompt: NDArray[np.int64],
) -> None:
    """Per-prompt terms of the self-normalised estimate (`importance_estimate`): with w̄[i, S] the weights
    normalised per coalition, N[S, q] = Σ_{i of prompt q} w̄[i, S] r_i and D[S, q] = Σ_{i of prompt q} w̄[i, S]
    (so Σ_q N / Σ_q D is the estimate itself)."""
    log_w = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)[:, None]
    w = np.exp(log_w - log_w.max(axis=0, keepdims=True))
    w_bar = w / w.sum(axis=0, keepdims=True)  # [R, K]
    num, den = terms
    np.add.at(num.T, prompt, w_bar * np.asarray(rewards, dtype=np.float64)[:, None])
    np.add.at(den.T, prompt, w_bar)


__all__ = [
    "ImportanceSettings",
    "RewardObjective",
    "reward_coalition_utilities",
    "reward_utility",
]
