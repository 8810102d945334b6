"""Coalition utilities, one number per objective, with the standard error of each.

The ``preference`` utility scores a coalition S on held-out preference pairs E_k of objective k with its
implicit reward relative to the base model (never raw log-probs: those carry a length bias):

    m_S(x, y_w, y_l) = Σ_{ℓ∈S} w_ℓ^S ((log π_ℓ(y_w) − log π₀(y_w)) − (log π_ℓ(y_l) − log π₀(y_l)))

(see `valuation.composition.arithmetic`), and averages a per-pair score over E_k:

* ``accuracy`` — 1 if m > 0, ½ if m = 0, 0 otherwise (ties count ½);
* ``bt``       — the Bradley–Terry win probability σ(β·m): bounded in (0, 1) and smooth (the default);
* ``loglik``   — log σ(β·m): unbounded below, which blows up Shapley magnitudes; allowed only with a warning.

The base model is the reference point: the empty coalition has m = 0 on every pair, so u(∅) = ½ for
``accuracy`` and ``bt`` (log ½ for ``loglik``) and every value measures improvement over the base.
The standard error of u(S) is the standard error of the mean over pairs, sd(scores, ddof=1)/√|E_k|
(0 when |E_k| < 2).

The ``reward`` utility (`reward_coalition_utilities`, ``[utility] kind = "reward"``) is the paper's
u_k(S) = E_{x ∼ prompts_k, y ∼ π_S}[R_k(x, y)]: the mean reward (`valuation.coalition_utility.scorers` scorer of objective k) of
responses sampled from π_S (`valuation.decoding.sampling`, common random numbers across coalitions) on objective k's
eval prompts, with std err sd(rewards, ddof=1)/√N over the N samples. With ``importance`` settings (the
default in the pipeline, ``[sampling] importance``) every coalition is first estimated from ONE proposal
pool by self-normalised importance sampling (`valuation.decoding.importance`); a coalition whose effective sample
size falls below ``min_ess`` × the pool size (for any objective) is sampled directly instead. The count of
an importance-sampled coalition is its effective sample size (rounded down).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, log_expit

from valuation.composition.arithmetic import coalition_margins
from valuation.decoding.importance import importance_estimate

PreferenceMetric = Literal["bt", "accuracy", "loglik"]
PREFERENCE_METRICS: tuple[str, ...] = ("bt", "accuracy", "loglik")

LOGLIK_WARNING = (
    "utility metric 'loglik' (mean log σ(β·margin)) is unbounded below: a few badly ranked pairs dominate "
    "it and Shapley magnitudes blow up; prefer 'bt' (bounded win probability) or 'accuracy'"
)

_BLOCK_ROWS = 4096  # coalitions scored per block, so 2^n × pairs never needs to fit in memory at once


@dataclass(frozen=True)
class UtilityColumn:
    """Utilities of k coalitions for one objective: value, standard error and evaluation count per row."""

    values: NDArray[np.float64]
    std_errs: NDArray[np.float64]
    counts: NDArray[np.int64]


def pair_scores(margins: NDArray[np.floating], metric: str = "bt", beta: float = 0.1) -> NDArray[np.float64]:
    """Per-pair scores of margins (any shape) under ``metric``; see the module docstring for the formulas."""
    m = np.asarray(margins, dtype=np.float64)
    if metric == "accuracy":
        return np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))
    if metric == "bt":
        return expit(beta * m)
    if metric == "loglik":
        return log_expit(beta * m)
    raise ValueError(f"unknown preference metric {metric!r}; expected one of {', '.join(PREFERENCE_METRICS)}")


def preference_utility(
    weights: NDArray[np.floating],
    deltas: NDArray[np.floating],
    *,
    metric: str = "bt",
    beta: float = 0.1,
) -> UtilityColumn:
    """The ``preference`` utility of every coalition for one objective.

    Args:
        weights: w[k, n] from `valuation.composition.arithmetic.coalition_weights` (row k = coalition k).
        deltas: Δ[n, p] from `valuation.composition.arithmetic.preference_deltas` on the objective's eval pairs.
        metric: ``"bt"``, ``"accuracy"`` or ``"loglik"`` (the last one warns, see `LOGLIK_WARNING`).
        beta: the DPO β turning log-ratios into rewards (only ``bt`` and ``loglik`` use it).

    Returns:
        `UtilityColumn` with u(S_k) = mean over pairs of the per-pair score, its standard error and the pair
        count. Computed in blocks of coalitions, so large tables never materialise [2^n, p] at once.
    """
    if metric not in PREFERENCE_METRICS:
        raise ValueError(f"unknown preference metric {metric!r}; expected one of {', '.join(PREFERENCE_METRICS)}")
    if metric == "loglik":
        warnings.warn(LOGLIK_WARNING, UserWarning, stacklevel=2)
    w = np.asarray(weights, dtype=np.float64)
    d = np.asarray(deltas, dtype=np.float64)
    k, p = w.shape[0], d.shape[1]
    values = np.zeros(k, dtype=np.float64)
    std_errs = np.zeros(k, dtype=np.float64)
    if p > 0:
        for start in range(0, k, _BLOCK_ROWS):
            block = pair_scores(coalition_margins(w[start : start + _BLOCK_ROWS], d), metric, beta)
            values[start : start + block.shape[0]] = block.mean(axis=1)
            if p > 1:
                std_errs[start : start + block.shape[0]] = block.std(axis=1, ddof=1) / np.sqrt(p)
    else:
        values[:] = np.nan
    return UtilityColumn(values=values, std_errs=std_errs, counts=np.full(k, p, dtype=np.int64))


# --- the `reward` utility ----------------------------------------------------------------------------
# u_k(S) = E_{x ∼ prompts_k, y ∼ π_S(·|x)}[R_k(x, y)], estimated by the mean reward of the responses sampled from
# π_S (valuation.sampling: token-level LM arithmetic, common random numbers across coalitions) on the first
# prompts of objective k's eval set; std err = sd(rewards, ddof=1)/√N over those N responses.


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
    prompts: Sequence[Any]  # text prompts or chat message lists
    scorer: Any  # valuation.rewards.RewardScorer


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
    sampler: Any,
    coalitions: NDArray[np.bool_],
    weights: NDArray[np.floating],
    objectives: Sequence[RewardObjective],
    *,
    progress: bool = False,
    importance: ImportanceSettings | None = None,
    diagnostics: list[dict[str, Any]] | None = None,
) -> dict[str, UtilityColumn]:
    """The `reward` utility of every coalition (rows of ``coalitions``) for every objective.

    Args:
        sampler: a `valuation.decoding.sampling.CoalitionSampler` over the n sources' adapters (cached on disk).
        coalitions: bool[k, n]; weights: w[k, n] (`valuation.composition.arithmetic.coalition_weights`).
        objectives: prompts and scorer per objective; all objectives' prompts are sampled in one batched
            decode per coalition (CRN stream of a prompt = its position in that concatenated list).
        progress: a rich progress bar over coalitions on stderr.
        importance: estimate from one proposal pool first (see the module docstring); None: direct only.
        diagnostics: if given, one dict per coalition is appended: ``{"method": "importance" | "direct",
            "ess": {objective: ESS}}`` (ESS only when importance sampling ran).

    Returns:
        objective → `UtilityColumn` (values, std errs, sample counts), rows in ``coalitions`` order.
    """
    masks = np.asarray(coalitions, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    prompts: list[Any] = []
    owner: list[int] = []  # prompt position → objective index
    for j, obj in enumerate(objectives):
        prompts.extend(obj.prompts)
        owner.extend([j] * len(obj.prompts))
    k = masks.shape[0]
    estimated: dict[str, UtilityColumn] = {}
    ess = np.zeros((len(objectives), k))
    direct_rows = list(range(k))
    if importance is not None and sampler.params.temperature > 0:
        total = len(prompts) * importance.samples_per_prompt
        with _progress_bar("importance sampling: proposal pool", total, progress) as advance:
            pool = sampler.proposal_samples(importance.component_weights, prompts, importance.samples_per_prompt,
                                            on_chunk=advance)
            log_p, log_q = sampler.pool_log_densities(pool, prompts, w, importance.component_weights)
        pool_owner = np.array([owner[s.prompt_index] for s in pool])
        accept = np.ones(k, dtype=bool)
        for j, obj in enumerate(objectives):
            rows = np.flatnonzero(pool_owner == j)
            scores = _score(obj, [pool[i] for i in rows], prompts)
            est = importance_estimate(log_p[rows], log_q[rows], scores)
            ess[j] = est.ess
            accept &= est.ess >= importance.min_ess * len(rows)
            estimated[obj.objective] = UtilityColumn(est.values, est.std_errs, np.floor(est.ess).astype(np.int64))
        direct_rows = [int(i) for i in np.flatnonzero(~accept)]
    direct = _direct_reward_utilities(sampler, masks[direct_rows], w[direct_rows], objectives, prompts, owner,
                                      progress=progress)
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


def _score(obj: RewardObjective, samples: Sequence[Any], prompts: Sequence[Any]) -> NDArray[np.float64]:
    """Rewards of ``samples`` (their prompts by ``prompt_index``) under the objective's scorer."""
    from valuation.coalition_utility.scorers import prompt_text, score_texts

    texts = [s.text for s in samples]
    return np.asarray(score_texts(obj.scorer, texts, [prompt_text(prompts[s.prompt_index]) for s in samples]),
                      dtype=np.float64)


def _direct_reward_utilities(
    sampler: Any,
    masks: NDArray[np.bool_],
    w: NDArray[np.float64],
    objectives: Sequence[RewardObjective],
    prompts: Sequence[Any],
    owner: Sequence[int],
    *,
    progress: bool,
) -> dict[str, UtilityColumn]:
    """Sample every coalition (row of ``masks``) directly and average its rewards per objective."""
    per_coalition: list[list[list[Any]]] = [[[] for _ in range(masks.shape[0])] for _ in objectives]
    with _progress_bar("sampling coalitions", masks.shape[0], progress) as update:
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
    return out


@contextlib.contextmanager
def _progress_bar(description: str, total: int, enabled: bool) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr (a no-op when not ``enabled``); yields ``update(advance, note="")``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        disable=not enabled,
    ) as bars:
        task = bars.add_task(description, total=total, note="")
        yield lambda advance, note="": bars.update(task, advance=advance, note=note)


# --- end `reward` utility ----------------------------------------------------------------------------
