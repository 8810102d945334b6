"""A scenario end to end: scenario → valuation → payouts → ledger → exports → values → plot.

`run_scenario` (the ``payoutsim run`` command) does every stage, one step of the progress display
(`market.console.RunProgress`) each:

1. read the scenario (`market.scenario.schema.load_scenario`);
2. valuation (`market.scenario.inputs.load_inputs`): with ``[valuation] config`` the pipeline runs (data →
   base model → one DPO adapter per source, resumable → cached log-probs → coalition utilities → Shapley
   values); with ``utilities`` the given coalition table is read;
3. payouts: every period of the schedule (or ``period``): the rule's values, the pool split into minor
   units, the stability verdict (`market.period.run_period`);
4. ledger: each period appended to the DuckDB ledger, idempotent on scenario hash + period
   (`market.ledger.record_run`; with a key, each run's MAC too), and the receipt of the run's periods
   written to ``OUT/receipt.json`` (`market.receipts`);
5. export: the ledger's payout rows as CSV (formula-escaped) and Parquet (`market.export.export_ledger`);
6. values: ``values.json``, member and source Shapley values per objective with standard errors and
   intervals (`plane_values`) and the payouts with the uncertainty of every amount (`write_values`);
7. plot: ``value_plane.png``, the paper's Figure 2 layout (`write_plot`, `market.plots`).

Outputs go to ``out`` (default ``runs/<scenario name>/``); the ledger defaults to ``OUT/ledger.duckdb``.
Re-running with unchanged inputs retrains nothing and adds no ledger row. `pay_scenario` (the ``payoutsim
payout`` command) does stages 1–4 only, one period at a time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from market.adaptive import evaluate_until_known
from market.console import RunProgress
from market.export import export_ledger
from market.ledger import RecordResult, check_ledger, record_run
from market.money import format_minor, minor_to_units
from market.period import PeriodRun, run_period
from market.plots import plane_objectives, points_from_result, write_value_plane
from market.receipts import Receipt, check_key, save_receipt
from market.rules import RuleContext, shapley_result
from market.scenario.inputs import ScenarioInputs, load_inputs
from market.scenario.schema import LoadedScenario, Scenario, load_scenario, with_uncertainty
from valuation.errors import InputError
from valuation.files import atomic_write_text, check_writable, check_writable_dir
from valuation.games.game import TableGame
from valuation.games.result import ValuationResult
from valuation.games.uncertainty import valued_with_interval
from valuation.pipeline.outcome import ValuationRun
from valuation.pipeline.rounds import RoundsReport

#: The ``[uncertainty]`` keys `run_scenario` takes from the command line, and their flags.
UNCERTAINTY_FLAGS: dict[str, str] = {
    "target": "--target",
    "target_share": "--target-share",
    "max_pairs": "--max-eval-pairs",
    "max_seconds": "--max-seconds",
    "replicates": "--replicates",
}

STAGES: tuple[str, ...] = ("scenario", "valuation", "payouts", "ledger", "export", "values", "plot")
LEDGER_NAME = "ledger.duckdb"
CSV_NAME = "payouts.csv"
PARQUET_NAME = "payouts.parquet"
VALUES_NAME = "values.json"
PLOT_NAME = "value_plane.png"
RECEIPT_NAME = "receipt.json"
VALUES_FORMAT = "payoutsim-run-values/1"


@dataclass
class RunOutputs:
    """What `run_scenario` produced: output paths, per-period results and what was reused.

    Attributes:
        out_dir, ledger, csv, parquet, values, plot: where the outputs are (``plot`` None: not drawn).
        periods: one `market.period.PeriodRun` per paid period.
        records: the ledger's `RecordResult` per period (``added`` False: already recorded).
        receipt, receipt_file: the receipt of those runs (`market.receipts.Receipt`) and where it was written.
        adapters_trained, adapters_reused: source names (empty without a valuation config).
        logprobs_computed, logprobs_cached: log-prob tables computed vs read from the cache.
        valuation_dir: the valuation run directory, or None.
        notes: one-line remarks for the summary (why no plot, …).
        adaptive: the report of the eval rounds (`valuation.pipeline.rounds.RoundsReport`, widths in minor
            units) when a target was set.
    """

    out_dir: Path
    ledger: Path
    csv: Path
    parquet: Path
    values: Path
    plot: Path | None
    periods: list[PeriodRun] = field(default_factory=list)
    records: list[RecordResult] = field(default_factory=list)
    receipt: Receipt | None = None
    receipt_file: Path | None = None
    adapters_trained: list[str] = field(default_factory=list)
    adapters_reused: list[str] = field(default_factory=list)
    logprobs_computed: int = 0
    logprobs_cached: int = 0
    valuation_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    adaptive: RoundsReport | None = None

    @property
    def rows_added(self) -> int:
        return sum(1 for r in self.records if r.added)


def default_out_dir(scenario_name: str) -> Path:
    """``runs/<scenario name>/`` (characters other than letters, digits, ``-``, ``_``, ``.`` become ``_``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scenario_name).strip(".") or "scenario"
    return Path("runs") / safe


def planned_outputs(scenario: Scenario, out: str | Path | None, ledger: str | Path | None) -> RunOutputs:
    """Where a run of `scenario` writes: ``out`` (default `default_out_dir`) and the ledger (default
    ``OUT/ledger.duckdb``); nothing produced yet."""
    out_dir = Path(out) if out is not None else default_out_dir(scenario.market.name)
    return RunOutputs(
        out_dir=out_dir,
        ledger=Path(ledger) if ledger is not None else out_dir / LEDGER_NAME,
        csv=out_dir / CSV_NAME,
        parquet=out_dir / PARQUET_NAME,
        values=out_dir / VALUES_NAME,
        plot=out_dir / PLOT_NAME,
    )


def check_ledger_writable(ledger: str | Path, *, field: str = "--ledger") -> Path:
    """`valuation.files.check_writable` for a ledger path, plus: an existing ledger file must be writable
    (DuckDB opens it for writing). Run before any work, so an unwritable ledger costs nothing (exit 2)."""
    path = check_writable(ledger, field=field)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError("the ledger file is not writable (permission denied)", file=path, field=field)
    return path


def check_run_outputs(outputs: RunOutputs) -> None:
    """Every path a run writes (the output folder, its four files, the ledger) can be written: checked
    before the valuation stage, so a bad ``--out`` or ``--ledger`` fails at once (`InputError`, exit 2)."""
    check_writable_dir(outputs.out_dir, field="--out")
    for path in (outputs.csv, outputs.parquet, outputs.values, outputs.plot):
        if path is not None:
            check_writable(path, field="--out")
    check_ledger_writable(outputs.ledger)


def scenario_periods(scenario: Scenario, period: str | None) -> list[str]:
    """The periods to pay: `period` (checked against the schedule), else every period of the schedule."""
    return [scenario.check_period(period)] if period is not None else scenario.period_names()


def run_scenario(
    scenario: str | Path,
    *,
    ledger: str | Path | None = None,
    out: str | Path | None = None,
    period: str | None = None,
    retrain: bool = False,
    progress: bool = True,
    key: bytes | None = None,
    receipt: str | Path | None = None,
    uncertainty: Mapping[str, Any] | None = None,
) -> RunOutputs:
    """Run every stage of the module docstring and return where everything is (see `RunOutputs`).

    `key`: the ledger's MAC key (`market.ledger_mac`); `receipt`: where the receipt goes (default
    ``OUT/receipt.json``); `uncertainty`: ``[uncertainty]`` keys overriding the scenario's (the command's
    flags, `UNCERTAINTY_FLAGS`). With a target (``[uncertainty] target`` / ``target_share``) the valuation
    and payout stages run in rounds until the split is known (`market.adaptive.evaluate_until_known`);
    ``outputs.adaptive`` is its report.

    Raises:
        InputError: a bad scenario, valuation config, data or period, or an output path (``out``, its
            files, ``ledger``) that cannot be written, checked before the valuation (nothing is recorded
            then); a ledger path that is neither absent nor a payoutsim ledger (`market.ledger.check_ledger`);
            a key that is not the one of the ledger's MACs (before any work); no key for a ledger that
            holds MACs (when a new run would be recorded: the valuation is cached, re-run with the key).
        LedgerBusyError: another process writes the ledger.
    """
    with RunProgress(STAGES, enabled=progress) as display:
        display.step(0, "reading the scenario")
        loaded = with_uncertainty(load_scenario(scenario), uncertainty or {}, flags=UNCERTAINTY_FLAGS)
        periods = scenario_periods(loaded.scenario, period)
        outputs = planned_outputs(loaded.scenario, out, ledger)
        check_run_outputs(outputs)
        check_ledger(outputs.ledger)
        check_key(outputs.ledger, key)
        display.advance()

        if loaded.scenario.uncertainty.adaptive:
            display.step(1, "valuation and payouts: evaluate until the split is known (rounds)")
            inputs, paid, outputs.adaptive = evaluate_until_known(
                loaded, periods, retrain=retrain, log=display.log, callbacks=[display.training_callback()]
            )
            display.finish_training()
            outputs.periods.extend(paid)
            outputs.notes.append(outputs.adaptive.summary("amount interval"))
        else:
            inputs = valued_inputs(loaded, display, retrain=retrain)
        if inputs.valuation is not None:
            note_valuation(inputs.valuation, outputs)
        display.advance()

        ctx = RuleContext.from_inputs(inputs)
        if outputs.adaptive is None:
            for i, p in enumerate(periods, start=1):
                display.step(2, f"payouts: period {p} ({i}/{len(periods)}), rule {ctx.rule}")
                outputs.periods.append(run_period(inputs, p, ctx))
        display.advance()

        display.step(3, f"ledger: {outputs.ledger}")
        for run in outputs.periods:
            outputs.records.append(record_run(outputs.ledger, inputs, run, key=key))
        outputs.receipt, outputs.receipt_file = save_receipt(
            outputs.ledger, [r.run_id for r in outputs.records], outputs.out_dir / RECEIPT_NAME if receipt is None else receipt
        )
        display.advance()

        display.step(4, "export: CSV + Parquet")
        export_ledger(outputs.ledger, csv=outputs.csv, parquet=outputs.parquet)
        display.advance()

        display.step(5, "values: member and source values per objective")
        members_result, sources_result, error_note = plane_values(inputs, ctx)
        write_values(outputs, inputs, members_result, sources_result, error_note)
        display.advance()

        display.step(6, "plot: the value plane (Figure 2)")
        write_plot(outputs, inputs, members_result, sources_result, error_note)
        display.step(len(STAGES), "done")
        display.advance()
    return outputs


def valued_inputs(loaded: LoadedScenario, display: RunProgress, *, retrain: bool) -> ScenarioInputs:
    """Stage 2: `load_inputs`, with the valuation pipeline's log lines and adapter training shown on
    `display` (the pipeline's own progress bars would be a second live display, so they are off)."""
    runs_pipeline = loaded.scenario.valuation.utilities is None
    what = "data → base model → adapters → log-probs → coalitions → values" if runs_pipeline else "coalition table"
    display.step(1, f"valuation: {what}")
    inputs = load_inputs(
        loaded,
        retrain=retrain,
        progress=False,
        log=display.log,
        callbacks=[display.training_callback()] if runs_pipeline else (),
    )
    display.finish_training()
    return inputs


def note_valuation(valuation: ValuationRun, outputs: RunOutputs) -> None:
    """Record in `outputs` the valuation run's dir, which adapters were trained or reused, and how many
    log-prob tables were computed or read from the cache (from its ``run.json``)."""
    outputs.valuation_dir = valuation.run_dir
    for source, record in valuation.adapters.items():
        (outputs.adapters_trained if record.status == "trained" else outputs.adapters_reused).append(source)
    run_json = valuation.files.get("run")
    if run_json is not None and Path(run_json).is_file():
        tables = json.loads(Path(run_json).read_text(encoding="utf-8")).get("logprob_tables", {})
        outputs.logprobs_computed = int(tables.get("computed", 0))
        outputs.logprobs_cached = int(tables.get("cached", 0))


# ---------------------------------------------------------------------------------------------------
# the payout command: stages 1-4, one period at a time


@dataclass(frozen=True)
class PaidPeriod:
    """One period paid by `pay_scenario`: the scenario, the period's payout and its ledger record (None:
    not recorded)."""

    scenario: Scenario
    run: PeriodRun
    record: RecordResult | None


def pay_scenario(
    scenario: str | Path, *, period: str | None = None, ledger: str | Path | None = None, key: bytes | None = None
) -> Iterator[PaidPeriod]:
    """Pay out `period` (default: every period of the schedule) of a scenario and append each period to
    `ledger` (None: record nothing; `key`: the ledger's MAC key, checked against its MACs before any
    work). A generator: each period is yielded as soon as it is paid and recorded, before the next one
    is computed (a failing period leaves the earlier ones recorded). The ledger path is checked before
    any work (`check_ledger_writable`, `market.ledger.check_ledger`)."""
    if ledger is not None:
        check_ledger_writable(ledger)
    loaded = load_scenario(scenario)
    if ledger is not None:
        check_ledger(ledger)
        check_key(ledger, key)
    inputs = load_inputs(loaded)
    sc = inputs.scenario
    periods = scenario_periods(sc, period)
    ctx = RuleContext.from_inputs(inputs)
    for p in periods:
        run = run_period(inputs, p, ctx)
        record = None if ledger is None else record_run(ledger, inputs, run, key=key)
        yield PaidPeriod(sc, run, record)


# ---------------------------------------------------------------------------------------------------
# values and plot


def plane_values(inputs: ScenarioInputs, ctx: RuleContext) -> tuple[ValuationResult, ValuationResult, str]:
    """Per-objective Shapley values of every member of the scenario and of every source, plus a note on
    what the error bars mean.

    Values are the rule context's Shapley values (`market.rules.shapley_result`: exact up to
    ``max_exact_members`` players, sampled above). With replicate tables (`ScenarioInputs.replicates`: a
    bootstrap over the eval items, or normal noise from the table's standard errors) and a complete table,
    standard errors and intervals come from the values on every replicate
    (`valuation.games.uncertainty.valued_with_interval`); otherwise they are the estimator's own (0 for
    exact values). Members' values are on the member game of all members.
    """
    sc = inputs.scenario
    groups = sc.groups()
    member_game = ctx.member_game(list(groups))
    # the member game's players are #0, #1, …: rename them by position
    members_result = replace(shapley_result(member_game, ctx), players=tuple(groups))
    valued = inputs.valuation
    on_compact = valued is not None and valued.table is None  # the valuation's own values, with their intervals
    sources_result = valued.result if valued is not None and on_compact else shapley_result(inputs.game, ctx)
    replicates = inputs.replicates
    game = inputs.game
    if replicates is not None and (not isinstance(game, TableGame) or game.is_complete()):
        level = sc.uncertainty.level
        aliases = {f"#{i}": tuple(groups[m]) for i, m in enumerate(groups)}
        members_result = valued_with_interval(
            members_result, replicates, budget=ctx.budget, seed=ctx.seed, groups=aliases, level=level
        )
        if not on_compact:
            sources_result = valued_with_interval(
                sources_result, replicates, budget=ctx.budget, seed=ctx.seed, level=level
            )
        return members_result, sources_result, f"error bars: {level:.0%} intervals; {replicates.kind}"
    exact = len(groups) <= ctx.max_exact_members and len(inputs.game.players) <= ctx.max_exact_members
    note = (
        "exact Shapley values of the given coalition table (no error bars: the table has no standard errors)"
        if exact
        else "error bars: ±1 standard error of the sampled Shapley estimate"
    )
    return members_result, sources_result, note


def write_values(
    outputs: RunOutputs, inputs: ScenarioInputs, members: ValuationResult, sources: ValuationResult, error_note: str
) -> None:
    """Write ``values.json`` (format `VALUES_FORMAT`): the scenario, its weights, member and source values
    per objective (`ValuationResult.to_json_dict`), each member's sources and every period's payout."""
    sc = inputs.scenario
    doc = {
        "format": VALUES_FORMAT,
        "scenario": sc.market.name,
        "scenario_file": str(inputs.loaded.path),
        "scenario_sha256": inputs.scenario_sha256,
        "weights": dict(sorted(inputs.weights.items())),
        "std_errs": error_note,
        "members": members.to_json_dict(),
        "sources": sources.to_json_dict(),
        "owners": {m.name: list(m.sources) for m in sc.members},
        "valuation_dir": None if outputs.valuation_dir is None else str(outputs.valuation_dir),
        "periods": [period_json(run, record) for run, record in zip(outputs.periods, outputs.records, strict=True)],
    }
    atomic_write_text(outputs.values, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def period_json(run: PeriodRun, record: RecordResult) -> dict[str, object]:
    """One period of ``values.json``: money terms (decimal strings and minor units; ``held``: the part of
    the pool not paid out, see `market.rules`), the stability verdict and one payout row per member."""
    pay = run.payout
    return {
        "period": run.period,
        "run_id": record.run_id,
        "rule": pay.rule,
        "currency": pay.currency,
        "revenue": format_minor(run.revenue_minor, pay.currency),
        "fee": format_minor(run.fee_minor, pay.currency),
        "pool": format_minor(run.pool_minor, pay.currency),
        "pool_minor": run.pool_minor,
        "held": format_minor(pay.held_minor, pay.currency),
        "held_minor": pay.held_minor,
        "stable": run.stability.stable,
        "uncertainty": None if run.uncertainty is None else run.uncertainty.describe(),
        "payouts": [
            {
                "member": m,
                "value": float(pay.values[i]),
                "std_err": _finite(pay.std_errs[i]),
                "share": float(pay.shares[i]),
                "amount": format_minor(pay.amounts[i], pay.currency),
                "amount_minor": int(pay.amounts[i]),
                **payout_interval_json(run, i),
            }
            for i, m in enumerate(pay.members)
        ],
    }


def payout_interval_json(run: PeriodRun, i: int) -> dict[str, object]:
    """Member `i`'s uncertainty in ``values.json``: the intervals of value, share and amount, the amount's
    standard error (currency units) and ``paid_more_than``: P(paid more than each other member). Empty
    without uncertainty."""
    unc = run.uncertainty
    if unc is None:
        return {}
    pay = run.payout
    v_lo, v_hi = unc.value_interval()
    s_lo, s_hi = unc.share_interval()
    a_lo, a_hi = unc.amount_interval()
    return {
        "value_lo": _finite(v_lo[i]),
        "value_hi": _finite(v_hi[i]),
        "share_se": _finite(unc.share_se[i]),
        "share_lo": float(s_lo[i]),
        "share_hi": float(s_hi[i]),
        "amount_se": _finite(minor_to_units(float(unc.amount_se[i]), pay.currency)),
        "amount_lo": format_minor(int(a_lo[i]), pay.currency),
        "amount_hi": format_minor(int(a_hi[i]), pay.currency),
        "paid_more_than": {o: float(unc.rank[i, j]) for j, o in enumerate(pay.members) if j != i},
    }


def write_plot(
    outputs: RunOutputs, inputs: ScenarioInputs, members: ValuationResult, sources: ValuationResult, error_note: str
) -> None:
    """Draw the value plane (`market.plots.write_value_plane`) of sources and members to ``outputs.plot``
    (a source that is its one-source owner's point exactly is drawn once, as the member); with fewer than
    two objectives set ``outputs.plot`` to None and add a note instead."""
    axes = plane_objectives(members.objectives)
    if axes is None:
        outputs.plot = None
        outputs.notes.append("no plot: the value plane needs two objectives, the game has one")
        return
    x, y = axes
    owners = {m.name: list(m.sources) for m in inputs.scenario.members}
    sole = {srcs[0]: name for name, srcs in owners.items() if len(srcs) == 1}  # source -> its one-source owner
    member_points = points_from_result(members, "member", x, y)
    at = {p.name: (p.x, p.y) for p in member_points}
    points = [
        replace(p, labelled=p.name not in sole)
        for p in points_from_result(sources, "source", x, y)
        if not (p.name in sole and _same_place(at[sole[p.name]], (p.x, p.y)))  # drawn as its member already
    ] + [replace(p, name=member_label(p.name, owners[p.name])) for p in member_points]
    title = f"{inputs.scenario.market.name}: Shapley values, {x} vs {y}"
    assert outputs.plot is not None
    write_value_plane(points, outputs.plot, x_label=x, y_label=y, title=title, note=error_note)


def _same_place(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12) for u, v in zip(a, b, strict=True))


def member_label(member: str, sources: list[str]) -> str:
    """A member's name on the plot: ``"carol (evol_instruct, flan_v2_niv2)"``, or just the name when the
    member owns one source of the same name."""
    return member if sources == [member] else f"{member} ({', '.join(sources)})"


def _finite(x: float) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None
