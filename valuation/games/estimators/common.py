"""Shared pieces of the estimators: the full utility table, running moments, budgets, progress.

rich is imported only when a progress bar is shown (``import rich.progress`` ≈ 0.09 s that a silent
valuation never needs).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from valuation.errors import InputError
from valuation.games.coalitions import coalitions_of_indices
from valuation.games.game import Game, TableGame
from valuation.games.stopping import MaxEvaluations, SamplingState, StoppingRule

EXACT_MAX_PLAYERS = 22  # 2^22 coalitions: the largest table the exact methods build
_CHUNK = 2**16  # coalitions per game call when evaluating all of them


def full_table(game: Game, method: str) -> np.ndarray:
    """Utilities of all ``2^n`` coalitions as ``float[2^n, m]`` in coalition-index order (player j = bit j).

    A complete ``TableGame`` is used as is; any other game is evaluated in chunks of 65,536 coalitions.
    Raises ``InputError`` when n > EXACT_MAX_PLAYERS (pointing at the sampled methods) or when a table
    is missing a coalition (naming it).
    """
    n = len(game.players)
    check_exact_size(n, method)
    if isinstance(game, TableGame):
        return np.asarray(game.dense_table(method))
    total = 2**n
    out = np.empty((total, len(game.objectives)), dtype=float)
    for start in range(0, total, _CHUNK):
        stop = min(total, start + _CHUNK)
        masks = coalitions_of_indices(np.arange(start, stop, dtype=np.int64), n)
        out[start:stop] = np.asarray(game(masks), dtype=float)
    return out


def check_exact_size(n: int, method: str) -> None:
    """Raise ``InputError`` if an exact computation over 2^n coalitions is too large."""
    if n > EXACT_MAX_PLAYERS:
        alternative = {"banzhaf": "--method banzhaf --budget N (sampled)", "least_core": "--budget N (sampled "
                       "constraints)"}.get(method, "a sampled method: --method regression (or permutation, banzhaf)")
        raise InputError(
            f"{n} players: method '{method}' over all coalitions holds at most {EXACT_MAX_PLAYERS} players "
            f"(2^{EXACT_MAX_PLAYERS} coalitions); use {alternative}",
            field="players",
        )


def evaluate(game: Game, masks: np.ndarray) -> np.ndarray:
    """``game(masks)`` as ``float[k, m]`` with a shape check."""
    out = np.asarray(game(masks), dtype=float)
    expected = (masks.shape[0], len(game.objectives))
    if out.shape != expected:
        raise ValueError(f"game returned shape {out.shape}, expected {expected}")
    return out


def singletons(n: int) -> np.ndarray:
    """``bool[n, n]`` identity: the single-player coalitions."""
    return np.eye(n, dtype=bool)


class RunningMoments:
    """Welford running mean and variance of samples ``float[n, m]`` (elementwise)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape)
        self._m2 = np.zeros(shape)

    def add(self, sample: np.ndarray) -> None:
        self.count += 1
        delta = sample - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (sample - self.mean)

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance (inf with fewer than 2 samples)."""
        if self.count < 2:
            return np.full(self.mean.shape, np.inf)
        return self._m2 / (self.count - 1)

    @property
    def std_err(self) -> np.ndarray:
        """Standard error of the mean: sqrt(variance / count)."""
        if self.count < 2:
            return np.full(self.mean.shape, np.inf)
        return np.sqrt(np.maximum(self._m2, 0.0) / (self.count - 1) / self.count)


def make_rule(budget: int | None, stopping: StoppingRule | None, n: int, method: str) -> StoppingRule:
    """``MaxEvaluations(budget) | stopping``; with neither, the default budget ``default_budget(n)``."""
    if budget is not None and int(budget) < 1:
        raise InputError(f"budget must be a positive number of evaluations, got {budget}", field="budget")
    rule: StoppingRule | None = stopping
    if budget is not None:
        cap = MaxEvaluations(int(budget))
        rule = cap if rule is None else cap | rule
    if rule is None:
        rule = MaxEvaluations(default_budget(n))
    return rule


def default_budget(n: int) -> int:
    """The budget a sampled method uses when given neither a budget nor a stopping rule: 1000·n."""
    return 1000 * max(1, n)


def new_state(n: int, m: int) -> SamplingState:
    return SamplingState(std_errs=np.full((n, m), np.inf))


def progress_bar(
    enabled: bool, description: str, total: int | None
) -> AbstractContextManager[Callable[[int], None]]:
    """A rich progress bar on stderr (or a no-op context). Yields ``update(advance)``."""
    if not enabled:
        return nullcontext(lambda advance: None)
    return _RichProgress(description, total)


class _RichProgress(AbstractContextManager[Callable[[int], None]]):
    def __init__(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(stderr=True), transient=True)
        self._description = description
        self._total = total

    def __enter__(self) -> Callable[[int], None]:
        self._progress.start()
        task = self._progress.add_task(self._description, total=self._total)
        return lambda advance: self._progress.update(task, advance=advance)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
