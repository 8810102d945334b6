"""Evaluate until the split is known: grow the eval sets in rounds until every amount's interval is narrow.

With ``[uncertainty] target`` (a width in the currency) or ``target_share`` (a fraction of the pool) and
a valuation config with the ``preference`` utility, `evaluate_until_known` runs the rounds of
`valuation.pipeline.rounds.grow_until_known`: each round values on the first p pairs of each eval set,
pays every period with its uncertainty (`market.uncertainty`) and measures the widest amount interval
over members and periods, ``w(p) = max (amount_hi − amount_lo)``; the planner there predicts the pairs a
target needs. The last round is the one paid and recorded, its provenance keeps the rounds
(``"adaptive"``). Rounds take longer prefixes of the same eval sets; a synthetic corpus keeps its
``eval_pairs_per_objective`` (the ``tiny`` base model is pre-trained on the corpus), so that is the most a
round can use there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from market.money import fee_minor, format_minor, to_minor
from market.period import PeriodRun, run_period
from market.rules import RuleContext
from market.scenario.inputs import ScenarioInputs, load_inputs
from market.scenario.schema import LoadedScenario
from valuation.errors import InputError
from valuation.pipeline.rounds import Measured, RoundsReport, grow_until_known


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


def evaluate_until_known(
    loaded: LoadedScenario,
    periods: Sequence[str],
    *,
    retrain: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[ScenarioInputs, list[PeriodRun], RoundsReport]:
    """Run the rounds (module docstring); return the last round's inputs (its provenance records the
    report under ``"adaptive"``), its paid periods and the report (widths in minor units).

    Raises:
        InputError: a scenario whose valuation is not a ``preference``-utility config (field
            ``uncertainty.target``), or any error of the valuation or the payout.
    """
    sc = loaded.scenario
    settings = sc.uncertainty
    file = str(loaded.path)
    if sc.valuation.utilities is not None:
        raise InputError(
            "a target needs a valuation config (the eval pairs are grown and re-scored): this scenario reads a "
            "coalition table",
            file=file,
            field="uncertainty.target",
        )
    currency = sc.market.currency
    trained = False

    def evaluate(pairs: int) -> Measured[tuple[ScenarioInputs, list[PeriodRun]]]:
        nonlocal trained
        inputs = load_inputs(
            loaded, retrain=retrain and not trained, progress=progress, log=log, callbacks=callbacks, eval_pairs=pairs
        )
        trained = True  # adapters are trained at most once
        run = inputs.valuation
        if run is None or run.prepared.config.utility.kind != "preference":
            raise InputError(
                "a target grows the eval pairs of the preference utility; this valuation uses another utility",
                file=file,
                field="uncertainty.target",
            )
        ctx = RuleContext.from_inputs(inputs)
        paid = [run_period(inputs, p, ctx) for p in periods]
        widest, who = widest_interval(paid)
        used = min(len(es.pairs) for es in run.prepared.eval_sets)  # fewer than asked: the sets are exhausted
        return Measured((inputs, paid), used, float(widest), who)

    revenue = to_minor(sc.revenue_for(periods[0]), currency, file=file, field="revenue")
    target = target_minor(loaded, revenue - fee_minor(revenue, sc.market.platform_fee))  # the first period's pool
    (inputs, paid), report = grow_until_known(
        evaluate,
        target=float(target),
        start=settings.start_pairs,
        max_pairs=settings.max_pairs,
        max_seconds=settings.max_seconds,
        format=lambda w: f"{format_minor(round(w), currency)} {currency}",
        log=log,
    )
    inputs = replace(inputs, provenance={**inputs.provenance, "adaptive": report.to_json_dict()})
    return inputs, paid, report


__all__ = ["evaluate_until_known", "target_minor", "widest_interval"]
