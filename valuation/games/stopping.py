"""Composable stopping rules for sampled estimators (in the style of pyDVL).

A rule looks at the sampler's state after each sample (an order for permutation Shapley, a
batch of coalitions for Banzhaf MSR) and says whether to stop::

    rule = MaxEvaluations(5000) | (StandardError(0.01) & MaxTime(60))

``a | b`` stops when either stops; ``a & b`` when both do. ``remaining(state)`` tells the sampler how
many more utility evaluations it may spend (``None``: no limit), so a budget is never overshot.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from valuation.games.game import Game, empty_and_grand


@dataclass
class SamplingState:
    """What a stopping rule may look at.

    Attributes:
        n_evaluations: utility evaluations spent so far.
        n_samples: samples drawn so far (orders for permutation Shapley, coalitions for MSR).
        std_errs: current standard errors ``float[n, m]`` (inf while unknown).
        started: ``time.monotonic()`` at the start of sampling.
    """

    n_evaluations: int = 0
    n_samples: int = 0
    std_errs: np.ndarray = field(default_factory=lambda: np.full((1, 1), np.inf))
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class StoppingRule(ABC):
    """Base class: ``stop_reason(state)`` is a short name when the rule says stop, else ``None``."""

    @abstractmethod
    def stop_reason(self, state: SamplingState) -> str | None: ...

    def remaining(self, state: SamplingState) -> int | None:
        """How many more utility evaluations the rule allows (``None``: unlimited)."""
        return None

    def check(self, state: SamplingState) -> bool:
        """True when sampling should stop."""
        return self.stop_reason(state) is not None

    def __or__(self, other: StoppingRule) -> StoppingRule:
        return AnyOf(self, other)

    def __and__(self, other: StoppingRule) -> StoppingRule:
        return AllOf(self, other)


class MaxEvaluations(StoppingRule):
    """Stop once ``n`` utility evaluations have been spent (never exceeds ``n``)."""

    def __init__(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("MaxEvaluations needs n >= 1")
        self.n = int(n)

    def stop_reason(self, state: SamplingState) -> str | None:
        return "max_evaluations" if state.n_evaluations >= self.n else None

    def remaining(self, state: SamplingState) -> int | None:
        return max(0, self.n - state.n_evaluations)

    def __repr__(self) -> str:
        return f"MaxEvaluations({self.n})"


class StandardError(StoppingRule):
    """Stop when every standard error (all players, all objectives) is ``<= target``; ``target`` is one
    number or one per objective (a sequence of m numbers, e.g. 1% of each objective's grand-coalition value).

    The variance is measured from the samples, so the rule waits for ``min_samples`` samples before it
    trusts the estimate (few samples can show zero spread by chance).
    """

    def __init__(self, target: float | Sequence[float] | np.ndarray, *, min_samples: int = 10) -> None:
        targets = np.atleast_1d(np.asarray(target, dtype=float))
        if targets.ndim != 1 or not np.all(targets > 0):
            raise ValueError("StandardError needs target > 0")
        self.target: float | np.ndarray = float(targets[0]) if np.ndim(target) == 0 else targets
        self.min_samples = max(2, int(min_samples))

    def stop_reason(self, state: SamplingState) -> str | None:
        if state.n_samples < self.min_samples:
            return None
        if not state.std_errs.size:
            return "standard_error"
        se = state.std_errs
        if not np.all(np.isfinite(se)):
            return None
        return "standard_error" if bool(np.all(se <= np.broadcast_to(self.target, se.shape[-1:]))) else None

    def __repr__(self) -> str:
        return f"StandardError({self.target})"


def relative_standard_error(game: Game, fraction: float, *, min_samples: int = 10) -> StandardError:
    """`StandardError` with one target per objective: ``fraction · |u_k(N) − u_k(∅)|`` (two evaluations of
    `game`), e.g. 0.01 for "every standard error at most 1% of the value the grand coalition creates".
    An objective whose grand coalition creates nothing gets a target of 1e-12 (its values are then ~0)."""
    if not fraction > 0:
        raise ValueError("relative_standard_error needs fraction > 0")
    ends = empty_and_grand(game)
    grand = np.abs(ends[1] - ends[0])
    return StandardError(fraction * np.where(grand > 0, grand, 1e-12), min_samples=min_samples)


#: A game with no table (a large market's compact game) is sampled until every standard error is at most
#: this fraction of the grand coalition's value …
DEFAULT_TARGET_SE = 0.01
#: … or this many coalitions (≈ 40 s at n = 64 on 2 cores).
DEFAULT_MAX_EVALUATIONS = 200_000


def large_game_stopping(
    game: Game,
    target_se: float | None = None,
    max_evaluations: int | None = None,
    max_seconds: float | None = None,
) -> StoppingRule:
    """``relative_standard_error(game, target_se) | MaxEvaluations(max_evaluations)`` (defaults
    `DEFAULT_TARGET_SE`, `DEFAULT_MAX_EVALUATIONS`), ``| MaxTime(max_seconds)`` only when given: without a
    time limit the result depends on the seed alone."""
    rule = relative_standard_error(game, target_se or DEFAULT_TARGET_SE) | MaxEvaluations(
        max_evaluations or DEFAULT_MAX_EVALUATIONS
    )
    return rule | MaxTime(max_seconds) if max_seconds else rule


class MaxTime(StoppingRule):
    """Stop once ``seconds`` of wall time have passed since sampling started."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("MaxTime needs seconds > 0")
        self.seconds = float(seconds)

    def stop_reason(self, state: SamplingState) -> str | None:
        return "max_time" if state.elapsed >= self.seconds else None

    def __repr__(self) -> str:
        return f"MaxTime({self.seconds})"


class AnyOf(StoppingRule):
    """Stops when any sub-rule stops (``a | b``); the reason is the first one that fires."""

    def __init__(self, *rules: StoppingRule) -> None:
        self.rules = rules

    def stop_reason(self, state: SamplingState) -> str | None:
        for rule in self.rules:
            reason = rule.stop_reason(state)
            if reason is not None:
                return reason
        return None

    def remaining(self, state: SamplingState) -> int | None:
        limits = [r for r in (rule.remaining(state) for rule in self.rules) if r is not None]
        return min(limits) if limits else None

    def __repr__(self) -> str:
        return " | ".join(f"({r!r})" for r in self.rules)


class AllOf(StoppingRule):
    """Stops when every sub-rule stops (``a & b``); the reason joins theirs with ``&``."""

    def __init__(self, *rules: StoppingRule) -> None:
        self.rules = rules

    def stop_reason(self, state: SamplingState) -> str | None:
        reasons = [rule.stop_reason(state) for rule in self.rules]
        if any(r is None for r in reasons):
            return None
        return "&".join(r for r in reasons if r is not None)

    def remaining(self, state: SamplingState) -> int | None:
        limits = [rule.remaining(state) for rule in self.rules]
        if any(r is None for r in limits):
            return None
        return max(r for r in limits if r is not None)

    def __repr__(self) -> str:
        return " & ".join(f"({r!r})" for r in self.rules)
