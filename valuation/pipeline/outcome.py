"""`ValuationRun`: what `valuation.pipeline.run.run_value` produced, and its efficiency check.

Its own module so that the writers (`valuation.pipeline.outputs`) and the readers (`valuation.retraining`,
the market, the CLI) can name it without importing the orchestration that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from valuation.adapters.store import AdapterRecord
from valuation.coalition_utility.compact import PairGame
from valuation.games.game import Game, TableGame, empty_and_grand
from valuation.games.result import ValuationResult
from valuation.pipeline.inputs import PreparedInputs
from valuation.pipeline.tables import CoalitionTable


@dataclass
class ValuationRun:
    """The outcome of `run_value`: the table, the results and where they were written."""

    run_dir: Path
    prepared: PreparedInputs
    adapters: dict[str, AdapterRecord]
    table: CoalitionTable | None  # None: valued on the compact game (no coalition table)
    game: Game  # the table's TableGame, or the compact game
    result: ValuationResult
    member_result: ValuationResult | None
    compact: PairGame | None = None  # the compact game of a ``preference`` run
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sampling_report: dict[str, dict[str, Any]] = field(default_factory=dict)  # reward: coalition → method, ESS


def efficiency_gap(run: ValuationRun) -> np.ndarray:
    """Per objective, Σ_i φ_i − (u(N) − u(∅)) (0 up to rounding for exact Shapley on a full table and for the
    regression estimator, which is efficient by construction; a sampled permutation estimate is off by its noise)."""
    n = len(run.game.players)
    if isinstance(run.game, TableGame) and run.game.is_complete():
        dense = run.game.dense_table()
        return run.result.values.sum(axis=0) - (dense[2**n - 1] - dense[0])
    ends = empty_and_grand(run.game)
    return run.result.values.sum(axis=0) - (ends[1] - ends[0])


__all__ = ["ValuationRun", "efficiency_gap"]
