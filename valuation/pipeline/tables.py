"""Coalition tables: the utility of every evaluated coalition, per objective, with its uncertainty.

`CoalitionTable` is the seam between the language-model side and the game engine: rows are coalitions
(``bool[k, n]`` masks over the players), columns objectives. For the ``preference`` utility the table is
pure arithmetic on the cached log-probs (`eval_logprobs` scores every model once; `coalition_table` combines
them): the margin of eval pair i under coalition S is ``Σ_{ℓ∈S} w_ℓ^S Δ_ℓ[i]`` and u_k(S) is the mean of
σ(β·margin) (``bt``), 1[margin>0] + ½·1[margin=0] (``accuracy``) or log σ(β·margin) (``loglik``) over the
objective's eval pairs (`valuation.coalition_utility.preference.preference_utility`). The ``reward`` utility's
tables come from `valuation.pipeline.reward_tables`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from valuation.adapters.store import AdapterRecord
from valuation.coalition_utility.compact import PairGame
from valuation.coalition_utility.preference import pair_scores, preference_utility
from valuation.composition.arithmetic import coalition_margins, coalition_weights
from valuation.composition.logprobs import EvalLogProbs, LogProbReport, compute_eval_logprobs
from valuation.games.replicates import MAX_ITEM_CELLS, ItemTerms, terms_from_scores
from valuation.pipeline.inputs import PreparedInputs
from valuation.runtime.backend import LOCAL, Backend


@dataclass(frozen=True)
class CoalitionTable:
    """Utilities of evaluated coalitions: values, std errs and pair counts, each ``[k, m]``; ``items``: the
    per-item terms the values are means (ratios) of (`valuation.games.replicates.ItemTerms`, what the
    bootstrap resamples), or None when the table is too large to keep them (`MAX_ITEM_CELLS`)."""

    players: tuple[str, ...]
    objectives: tuple[str, ...]
    coalitions: np.ndarray
    values: np.ndarray
    std_errs: np.ndarray
    counts: np.ndarray
    items: ItemTerms | None = None


def eval_logprobs(
    prepared: PreparedInputs, adapters: Mapping[str, AdapterRecord], *, progress: bool, backend: Backend = LOCAL
) -> LogProbReport:
    """Response log-probs of the base and every adapter on every eval set, cached under ``RUN/cache/logprobs``
    (`valuation.composition.logprobs.compute_eval_logprobs`; a complete cache loads no model; ``backend``:
    where the scoring runs, one task per model when remote)."""
    config = prepared.config
    return compute_eval_logprobs(
        prepared.base,
        adapters,
        prepared.eval_sets,
        cache_dir=prepared.run_dir / "cache" / "logprobs",
        max_length=config.training.max_length,
        batch_size=config.eval.batch_size,
        progress=progress,
        backend=backend,
    )


def coalition_table(
    tables: dict[str, EvalLogProbs],
    sources: Sequence[str],
    coalitions: np.ndarray,
    *,
    weighting: str,
    sizes: Sequence[int],
    metric: str,
    beta: float,
) -> CoalitionTable:
    """Utilities of the given coalitions (``bool[k, n]``) for every objective: pure arithmetic on the cache."""
    weights = coalition_weights(coalitions, weighting, sizes)
    objectives = tuple(tables)
    k, m = coalitions.shape[0], len(objectives)
    values, std_errs = np.zeros((k, m)), np.zeros((k, m))
    counts = np.zeros((k, m), dtype=np.int64)
    for j, objective in enumerate(objectives):
        column = preference_utility(weights, tables[objective].deltas(list(sources)), metric=metric, beta=beta)
        values[:, j], std_errs[:, j], counts[:, j] = column.values, column.std_errs, column.counts
    masks = np.asarray(coalitions, dtype=bool)
    items = None
    if all(0 < k * tables[o].deltas(list(sources)).shape[1] <= MAX_ITEM_CELLS for o in objectives):
        scores = {
            o: pair_scores(coalition_margins(weights, tables[o].deltas(list(sources))), metric, beta) for o in objectives
        }
        items = terms_from_scores(sources, objectives, masks, scores, unit="eval pair")
    return CoalitionTable(tuple(sources), objectives, masks, values, std_errs, counts, items)


def preference_tabulator(
    prepared: PreparedInputs, tables: dict[str, EvalLogProbs]
) -> Callable[[np.ndarray], CoalitionTable]:
    """``tabulate(masks)`` for the ``preference`` utility: `coalition_table` with the config's weighting,
    metric and β, the sources' pair counts as sizes. With the ``loglik`` metric the per-call warning of
    `preference_utility` is silenced (`valuation.pipeline.run.run_value` warns once)."""
    config = prepared.config
    sources = prepared.sources
    sizes = [len(prepared.train[s]) for s in sources]

    def tabulate(masks: np.ndarray) -> CoalitionTable:
        with warnings.catch_warnings():
            if config.utility.metric == "loglik":
                warnings.simplefilter("ignore", UserWarning)  # warned once by run_value
            return coalition_table(
                tables,
                sources,
                masks,
                weighting=config.arithmetic.weighting,
                sizes=sizes,
                metric=config.utility.metric,
                beta=config.utility_beta,
            )

    return tabulate


def pair_game(prepared: PreparedInputs, tables: dict[str, EvalLogProbs]) -> PairGame:
    """The compact form of the ``preference`` game (`valuation.coalition_utility.compact.PairGame`): every
    objective's per-pair margins Δ[n, p] from the cached log-probs, with the config's weighting, metric and
    β and the sources' pair counts as sizes. It gives every coalition the utility `coalition_table` gives."""
    config = prepared.config
    sources = list(prepared.sources)
    return PairGame(
        sources,
        tuple(tables),
        [tables[o].deltas(sources) for o in tables],
        weighting=config.arithmetic.weighting,
        sizes=[len(prepared.train[s]) for s in sources],
        metric=config.utility.metric,
        beta=config.utility_beta,
    )


__all__ = ["CoalitionTable", "coalition_table", "eval_logprobs", "pair_game", "preference_tabulator"]
