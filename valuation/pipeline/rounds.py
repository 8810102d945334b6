"""Evaluate in rounds until the figures are known: grow the eval pairs until every interval is narrow.

`grow_until_known` calls ``evaluate(p)`` — one valuation (and, in the market, payout) on the first p
pairs of each eval set — and reads back the widest interval w(p) among the figures that matter (source
values for ``payoutsim value``, members' amounts for ``payoutsim run``: `market.adaptive`).

**Planner.** An interval's width shrinks like 1/√p (a mean over p eval pairs), so from one round the
pairs a target T needs are predicted as ``p* = ⌈p · (w(p) / T)²⌉`` (`predicted_pairs`). Round 1 uses
``start``; each later round goes to ``min(max(⌈1.1 p*⌉, p + 1), max_pairs)`` — 10% headroom over the
prediction, at least one more pair, never past the budget. Adapters are trained once (the training
data does not change); each round scores its eval size (n + 1 forward passes, cached per size) and
redoes the arithmetic, so all rounds together cost at most about twice the last one's scoring.

It stops when w ≤ T (``reached``), when the eval sets have no more pairs (a round got fewer than it
asked for), when ``max_pairs`` pairs are in use, or when ``max_seconds`` have passed; the last round's
result is returned either way and `RoundsReport` says what was reached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
HEADROOM = 1.1


@dataclass(frozen=True)
class Measured(Generic[T]):
    """What one round's evaluation gave: its result, the eval pairs per objective it really used, the
    widest interval among the figures that matter and whose it is."""

    result: T
    pairs: int
    widest: float
    who: str


@dataclass(frozen=True)
class Round:
    """One round: eval pairs per objective, the widest interval and whose, the predicted need, seconds."""

    pairs: int
    widest: float
    who: str
    predicted_pairs: int | None
    seconds: float


@dataclass
class RoundsReport:
    """The target, the rounds, whether the target was reached and why the rounds stopped; `format`
    writes widths (e.g. as money)."""

    target: float
    rounds: list[Round] = field(default_factory=list)
    reached: bool = False
    stopped_by: str = ""
    format: Callable[[float], str] = field(default=lambda w: f"{w:.4g}", repr=False)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "target": self.format(self.target),
            "reached": self.reached,
            "stopped_by": self.stopped_by,
            "rounds": [
                {
                    "eval_pairs": r.pairs,
                    "widest_interval": self.format(r.widest),
                    "widest": r.who,
                    "predicted_pairs": r.predicted_pairs,
                    "seconds": round(r.seconds, 2),
                }
                for r in self.rounds
            ],
        }

    def summary(self, what: str = "interval") -> str:
        """One line: reached or not, the widest interval against the target, the rounds' eval sizes."""
        last = self.rounds[-1]
        widest = f"widest {what} {self.format(last.widest)} ({last.who or 'none'})"
        rounds = f"{len(self.rounds)} round(s), eval pairs {' → '.join(str(r.pairs) for r in self.rounds)}"
        if self.reached:
            return f"evaluate until known: reached: {widest} ≤ target {self.format(self.target)}; {rounds}"
        need = f"; about {last.predicted_pairs} pairs per objective would be needed" if last.predicted_pairs else ""
        return (
            f"evaluate until known: NOT reached ({self.stopped_by}): {widest} > target {self.format(self.target)}; "
            f"{rounds}{need}"
        )


def predicted_pairs(pairs: int, widest: float, target: float) -> int | None:
    """The planner: ``⌈p · (w / T)²⌉`` (None when the width is 0: any size will do)."""
    if widest <= 0:
        return None
    return math.ceil(pairs * (widest / target) ** 2)


def grow_until_known(
    evaluate: Callable[[int], Measured[T]],
    *,
    target: float,
    start: int,
    max_pairs: int,
    max_seconds: float | None = None,
    format: Callable[[float], str] = lambda w: f"{w:.4g}",
    log: Callable[[str], None] | None = None,
) -> tuple[T, RoundsReport]:
    """Run the rounds of the module docstring; return the last round's result and the report."""
    if target <= 0:
        raise ValueError("target must be > 0")
    report = RoundsReport(target, format=format)
    started = time.monotonic()
    pairs = start
    while True:
        t0 = time.monotonic()
        measured = evaluate(pairs)
        need = predicted_pairs(measured.pairs, measured.widest, target)
        report.rounds.append(Round(measured.pairs, measured.widest, measured.who, need, time.monotonic() - t0))
        if log is not None:
            log(
                f"round {len(report.rounds)}: {measured.pairs} eval pairs per objective, widest interval "
                f"{format(measured.widest)} ({measured.who or 'none'}); target {format(target)}"
                + (f"; predicted need {need} pairs" if need else "")
            )
        if measured.widest <= target:
            report.reached, report.stopped_by = True, "target reached"
            break
        if measured.pairs < pairs:
            report.stopped_by = f"the eval sets have no more pairs ({measured.pairs} per objective)"
            break
        if measured.pairs >= max_pairs:
            report.stopped_by = f"max_pairs ({max_pairs}) spent"
            break
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            report.stopped_by = f"max_seconds ({max_seconds:g} s) spent"
            break
        pairs = min(max(math.ceil(HEADROOM * (need or measured.pairs)), measured.pairs + 1), max_pairs)
    return measured.result, report


__all__ = ["Measured", "Round", "RoundsReport", "grow_until_known", "predicted_pairs"]
