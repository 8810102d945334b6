"""Evaluate until the split is known: grow the eval sets in rounds until every amount's interval is narrow.

With ``[uncertainty] target`` (a width in the currency) or ``target_share`` (a fraction of the pool) and
a valuation config with the ``preference`` utility, `evaluate_until_known` runs the valuation on the
first p pairs of each eval set, pays every period with its uncertainty (`market.uncertainty`) and
measures the widest amount interval over members and periods, ``w(p) = max (amount_hi − amount_lo)``.

**Planner.** An interval's width shrinks like 1/√p (a mean over p eval pairs), so from one round the
pairs a target T needs are predicted as ``p* = p · (w(p) / T)²``. Round 1 uses ``start_pairs``; each
later round goes to ``min(max(⌈1.1 p*⌉, p + 1), max_pairs)`` — at least one more pair, 10% headroom over
the prediction, never past the budget. Adapters are trained once (the training data does not change);
each round only scores the new eval size (n + 1 forward passes over its pairs, cached per size) and
redoes the arithmetic, so the cost of all rounds is at most about twice the last one's scoring.

It stops when every interval is at most T (``reached``), when ``max_pairs`` pairs per objective are in
use or the eval sets have no more pairs, or when ``max_seconds`` have passed; the last round's valuation
is the one paid and recorded, and `AdaptiveReport` says what was reached. Rounds take longer prefixes of
the same eval sets; a synthetic corpus keeps its ``eval_pairs_per_objective`` (the ``tiny`` base model is
pre-trained on the corpus), so that is the most a round can use there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from market.money import format_minor, to_minor
from market.period import PeriodRun, run_period
from market.rules import RuleContext
from market.scenario.inputs import ScenarioInputs, load_inputs
from market.scenario.schema import LoadedScenario
from valuation.errors import InputError

HEADROOM = 1.1


@dataclass(frozen=True)
class AdaptiveRound:
    """One round: eval pairs per objective, the widest amount interval (minor units) and whose it is, the
    pairs the planner predicts the target needs, and the round's wall time."""

    pairs: int
    widest_minor: int
    widest_member: str
    predicted_pairs: int | None
    seconds: float


@dataclass
class AdaptiveReport:
    """What `evaluate_until_known` did: the target (minor units), the rounds, whether the target was
    reached and why it stopped."""

    currency: str
    target_minor: int
    rounds: list[AdaptiveRound] = field(default_factory=list)
    reached: bool = False
    stopped_by: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "target": format_minor(self.target_minor, self.currency),
            "reached": self.reached,
            "stopped_by": self.stopped_by,
            "rounds": [
                {
                    "eval_pairs": r.pairs,
                    "widest_interval": format_minor(r.widest_minor, self.currency),
                    "widest_member": r.widest_member,
                    "predicted_pairs": r.predicted_pairs,
                    "seconds": round(r.seconds, 2),
                }
                for r in self.rounds
            ],
        }

    def summary(self) -> str:
        """One line: reached or not, pairs, the widest interval against the target."""
        last = self.rounds[-1]
        cur = self.currency
        widest = f"widest amount interval {format_minor(last.widest_minor, cur)} {cur} ({last.widest_member})"
        target = f"target {format_minor(self.target_minor, cur)} {cur}"
        rounds = f"{len(self.rounds)} round(s), eval pairs {' → '.join(str(r.pairs) for r in self.rounds)}"
        if self.reached:
            return f"evaluate until known: reached: {widest} ≤ {target}; {rounds}"
        need = f"; about {last.predicted_pairs} pairs per objective would be needed" if last.predicted_pairs else ""
        return f"evaluate until known: NOT reached ({self.stopped_by}): {widest} > {target}; {rounds}{need}"


def target_minor(loaded: LoadedScenario, pool_minor: int) -> int:
    """The target width in minor units: ``target`` in the currency, or ``target_share`` × the pool."""
    sc = loaded.scenario
    unc = sc.uncertainty
    if unc.target is not None:
        return to_minor(unc.target, sc.market.currency, file=str(loaded.path), field="uncertainty.target")
    assert unc.target_share is not None
    return max(1, math.floor(unc.target_share * pool_minor))


def widest_interval(runs: Sequence[PeriodRun]) -> tuple[int, str]:
    """The widest amount interval (minor units) over the members and periods of `runs`, and its member."""
    widest, who = 0, ""
    for run in runs:
        if run.uncertainty is None:
            continue
        lo, hi = run.uncertainty.amount_interval()
        for i, member in enumerate(run.payout.members):
            if int(hi[i] - lo[i]) > widest:
                widest, who = int(hi[i] - lo[i]), member
    return widest, who


def predicted_pairs(pairs: int, widest: int, target: int) -> int | None:
    """The planner: ``p · (w / T)²`` rounded up (None when the width is 0: any size will do)."""
    if widest <= 0:
        return None
    return math.ceil(pairs * (widest / target) ** 2)


def evaluate_until_known(
    loaded: LoadedScenario,
    periods: Sequence[str],
    *,
    retrain: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[ScenarioInputs, list[PeriodRun], AdaptiveReport]:
    """Run the rounds of the module docstring; return the last round's inputs (its provenance records the
    report under ``"adaptive"``), its paid periods and the report.

    Raises:
        InputError: a scenario whose valuation is not a ``preference``-utility config (field
            ``uncertainty.target``), or any error of the valuation or the payout.
    """
    sc = loaded.scenario
    settings = sc.uncertainty
    if sc.valuation.utilities is not None:
        raise InputError(
            "a target needs a valuation config (the eval pairs are grown and re-scored): this scenario reads a "
            "coalition table",
            file=str(loaded.path),
            field="uncertainty.target",
        )
    started = time.monotonic()
    pairs = settings.start_pairs
    report: AdaptiveReport | None = None
    while True:
        t0 = time.monotonic()
        inputs = load_inputs(
            loaded, retrain=retrain, progress=progress, log=log, callbacks=callbacks,
            eval_pairs=pairs,
        )
        retrain = False  # adapters are trained at most once
        run = inputs.valuation
        if run is None or run.prepared.config.utility.kind != "preference":
            raise InputError(
                "a target grows the eval pairs of the preference utility; this valuation uses another utility",
                file=str(loaded.path),
                field="uncertainty.target",
            )
        used = min(len(es.pairs) for es in run.prepared.eval_sets)  # fewer than asked: the sets are exhausted
        ctx = RuleContext.from_inputs(inputs)
        paid = [run_period(inputs, p, ctx) for p in periods]
        if report is None:
            report = AdaptiveReport(sc.market.currency, target_minor(loaded, paid[0].pool_minor))
        widest, who = widest_interval(paid)
        need = predicted_pairs(used, widest, report.target_minor)
        report.rounds.append(AdaptiveRound(used, widest, who, need, time.monotonic() - t0))
        if log is not None:
            cur = report.currency
            log(
                f"round {len(report.rounds)}: {used} eval pairs per objective, widest amount interval "
                f"{format_minor(widest, cur)} {cur} ({who or 'none'}); target {format_minor(report.target_minor, cur)} {cur}"
                + (f"; predicted need {need} pairs" if need else "")
            )
        if widest <= report.target_minor:
            report.reached, report.stopped_by = True, "target reached"
            break
        if used < pairs:
            report.stopped_by = f"the eval sets have no more pairs ({used} per objective)"
            break
        if used >= settings.max_pairs:
            report.stopped_by = f"max_pairs ({settings.max_pairs}) spent"
            break
        if settings.max_seconds is not None and time.monotonic() - started >= settings.max_seconds:
            report.stopped_by = f"max_seconds ({settings.max_seconds:g} s) spent"
            break
        pairs = min(max(math.ceil(HEADROOM * (need or used)), used + 1), settings.max_pairs)
    assert report is not None
    inputs = replace(inputs, provenance={**inputs.provenance, "adaptive": report.to_json_dict()})
    return inputs, paid, report


__all__ = ["AdaptiveReport", "AdaptiveRound", "evaluate_until_known", "predicted_pairs", "widest_interval"]
