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
from valuation.games.game import TableGame
from valuation.games.result import ValuationResult
from valuation.pipeline.inputs import PreparedInputs
from valuation.pipeline.tables import CoalitionTable


@dataclass
class ValuationRun:
    """The outcome of `run_value`: the table, the results and where they were written."""

    run_dir: Path
    prepared: PreparedInputs
    adapters: dict[str, AdapterRecord]
    table: CoalitionTable
    game: TableGame
    result: ValuationResult
    member_result: ValuationResult | None
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sampling_report: dict[str, dict[str, Any]] = field(default_factory=dict)  # reward: coalition → method, ESS


def efficiency_gap(run: ValuationRun) -> np.ndarray:
    """Per objective, Σ_i φ_i − (u(N) − u(∅)) (0 up to rounding for exact Shapley on a full table)."""
    n = len(run.table.players)
    if not run.game.is_complete():
        return np.full(len(run.table.objectives), np.nan)
    dense = run.game.dense_table()
    return run.result.values.sum(axis=0) - (dense[2**n - 1] - dense[0])


__all__ = ["ValuationRun", "efficiency_gap"]
