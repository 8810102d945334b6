"""`payoutsim run SCENARIO.toml`: the whole product in one command.

Stages (one rich progress display on stderr, one step per stage):

1. read the scenario;
2. valuation: with ``[valuation] config`` the pipeline runs (data → base model → one DPO adapter per
   source, resumable → cached log-probs → coalition utilities → Shapley values); with ``utilities`` the
   given coalition table is read;
3. payouts: every period of the schedule (or ``--period``): the rule's values, the pool split into
   minor units, the stability verdict;
4. ledger: each period appended to the DuckDB ledger (idempotent on scenario hash + period);
5. export: the ledger's payout rows as CSV (formula-escaped) and Parquet;
6. values: ``values.json`` (member and source values per objective with standard errors, the payouts);
7. plot: ``value_plane.png``, the paper's Figure 2 layout (`market.plots`).

Then a summary on stdout: the payout table per period, where every output is, and the command that opens
the dashboard. Outputs go to ``--out`` (default ``runs/<scenario name>/``); the ledger defaults to
``OUT/ledger.duckdb``. Re-running with unchanged inputs retrains nothing, adds no ledger row and says so.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


STAGES: tuple[str, ...] = ("scenario", "valuation", "payouts", "ledger", "export", "values", "plot")
LEDGER_NAME = "ledger.duckdb"
CSV_NAME = "payouts.csv"
PARQUET_NAME = "payouts.parquet"
VALUES_NAME = "values.json"
PLOT_NAME = "value_plane.png"
VALUES_FORMAT = "payoutsim-run-values/1"


@dataclass
class RunOutputs:
    """What `run_scenario` produced: output paths, per-period results and what was reused.

    Attributes:
        out_dir, ledger, csv, parquet, values, plot: where the outputs are (``plot`` None: not drawn).
        periods: one `market.rules.PeriodRun` per paid period.
        records: the ledger's `RecordResult` per period (``added`` False: already recorded).
        adapters_trained, adapters_reused: source names (empty without a valuation config).
        logprobs_computed, logprobs_cached: log-prob tables computed vs read from the cache.
        valuation_dir: the valuation run directory, or None.
        notes: one-line remarks for the summary (why no plot, …).
    """

    out_dir: Path
    ledger: Path
    csv: Path
    parquet: Path
    values: Path
    plot: Path | None
    periods: list[Any] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    adapters_trained: list[str] = field(default_factory=list)
    adapters_reused: list[str] = field(default_factory=list)
    logprobs_computed: int = 0
    logprobs_cached: int = 0
    valuation_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_added(self) -> int:
        return sum(1 for r in self.records if r.added)


@app.command("run")
def run_cmd(
    scenario: Annotated[
        Path,
        typer.Argument(
            help="The scenario TOML (a pooling agreement; see market/scenario.py). With \\[valuation] config = "
            "\"VALUATION.toml\" the valuation pipeline runs first.",
            show_default=False,
        ),
    ],
    ledger: Annotated[
        Path | None,
        typer.Option("--ledger", help="The ledger file (DuckDB); default OUT/ledger.duckdb.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output folder (CSV, Parquet, values JSON, PNG); default runs/<scenario name>/.",
            show_default=False,
        ),
    ] = None,
    period: Annotated[
        str | None,
        typer.Option("--period", "-p", help="Pay out this period only (default: every period of the schedule)."),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Retrain adapters that are stale (data, training config or base model changed) instead of "
            "stopping with an error.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress display on stderr.")] = True,
) -> None:
    """Run a scenario end to end: valuation → payouts → ledger → CSV/Parquet → values JSON → PNG plot.

    The valuation is resumable (adapters that are up to date are not retrained; log-probs are cached) and the ledger is idempotent, so running the same scenario again changes nothing and says so.

    Ends with the payout table, where the outputs are and the command that opens the dashboard.
    """
    outputs = run_scenario(scenario, ledger=ledger, out=out, period=period, retrain=retrain, progress=progress)
    print_summary(outputs)


def default_out_dir(scenario_name: str) -> Path:
    """``runs/<scenario name>/`` (characters other than letters, digits, ``-``, ``_``, ``.`` become ``_``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scenario_name).strip(".") or "scenario"
    return Path("runs") / safe


def run_scenario(
    scenario: str | Path,
    *,
    ledger: str | Path | None = None,
    out: str | Path | None = None,
    period: str | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> RunOutputs:
    """Run every stage of the module docstring and return where everything is (see `RunOutputs`).

    Raises:
        InputError: a bad scenario, valuation config, data or period (nothing is recorded then).
        LedgerBusyError: another process writes the ledger.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from market import ledger as ledger_mod
    from market.export import export_ledger
    from market.rules import RuleContext, run_period
    from market.scenario.schema import load_inputs, load_scenario

    console = _console(stderr=True)
    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    with bars:
        steps = bars.add_task(_step(0, "reading the scenario"), total=len(STAGES))
        loaded = load_scenario(scenario)
        sc = loaded.scenario
        periods = [sc.check_period(period)] if period is not None else sc.period_names()
        out_dir = Path(out) if out is not None else default_out_dir(sc.market.name)
        ledger_path = Path(ledger) if ledger is not None else out_dir / LEDGER_NAME
        outputs = RunOutputs(
            out_dir=out_dir,
            ledger=ledger_path,
            csv=out_dir / CSV_NAME,
            parquet=out_dir / PARQUET_NAME,
            values=out_dir / VALUES_NAME,
            plot=out_dir / PLOT_NAME,
        )
        bars.advance(steps)

        runs_pipeline = sc.valuation.utilities is None
        what = "data → base model → adapters → log-probs → coalitions → values" if runs_pipeline else "coalition table"
        bars.update(steps, description=_step(1, f"valuation: {what}"))
        training = _TrainingDisplay(bars, steps)
        inputs = load_inputs(
            loaded,
            retrain=retrain,
            progress=False,  # the pipeline's own bars would be a second live display
            log=lambda msg: bars.console.print(f"  {msg}", markup=False, highlight=False),
            callbacks=[training.callback()] if runs_pipeline else (),
        )
        training.finish()
        if inputs.valuation is not None:
            _note_valuation(inputs.valuation, outputs)
        bars.advance(steps)

        ctx = RuleContext.from_inputs(inputs)
        for i, p in enumerate(periods, start=1):
            bars.update(steps, description=_step(2, f"payouts: period {p} ({i}/{len(periods)}), rule {ctx.rule}"))
            outputs.periods.append(run_period(inputs, p, ctx))
        bars.advance(steps)

        bars.update(steps, description=_step(3, f"ledger: {ledger_path}"))
        for run in outputs.periods:
            outputs.records.append(ledger_mod.record_run(ledger_path, inputs, run))
        bars.advance(steps)

        bars.update(steps, description=_step(4, "export: CSV + Parquet"))
        export_ledger(ledger_path, csv=outputs.csv, parquet=outputs.parquet)
        bars.advance(steps)

        bars.update(steps, description=_step(5, "values: member and source values per objective"))
        members_result, sources_result, error_note = plane_values(inputs, ctx)
        _write_values(outputs, inputs, members_result, sources_result, error_note)
        bars.advance(steps)

        bars.update(steps, description=_step(6, "plot: the value plane (Figure 2)"))
        _write_plot(outputs, inputs, members_result, sources_result, error_note)
        bars.update(steps, description=_step(len(STAGES), "done"))
        bars.advance(steps)
    return outputs


# ---------------------------------------------------------------------------------------------------
# progress


def _step(i: int, text: str) -> str:
    return f"[{min(i + 1, len(STAGES))}/{len(STAGES)}] {text}"


class _TrainingDisplay:
    """A sub-task of the progress display that follows adapter training (a transformers callback)."""

    def __init__(self, bars: Any, steps: Any) -> None:
        self.bars = bars
        self.steps = steps
        self.task: Any = None
        self.count = 0

    def callback(self) -> Any:
        from transformers import TrainerCallback
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # tqdm bars (e.g. "Writing model shards") would break the display

        display = self

        class _Follow(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                display.count += 1
                description = f"  training adapter #{display.count} (DPO steps)"
                if display.task is None:
                    display.task = display.bars.add_task(description, total=state.max_steps or None)
                else:
                    display.bars.reset(display.task, total=state.max_steps or None, description=description)

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if display.task is not None:
                    display.bars.update(display.task, completed=state.global_step)

        return _Follow()

    def finish(self) -> None:
        if self.task is not None:
            self.bars.update(self.task, description=f"  trained {self.count} adapter(s)")


def _note_valuation(valuation: Any, outputs: RunOutputs) -> None:
    outputs.valuation_dir = valuation.run_dir
    for source, record in valuation.adapters.items():
        (outputs.adapters_trained if record.status == "trained" else outputs.adapters_reused).append(source)
    run_json = valuation.files.get("run")
    if run_json is not None and Path(run_json).is_file():
        tables = json.loads(Path(run_json).read_text(encoding="utf-8")).get("logprob_tables", {})
        outputs.logprobs_computed = int(tables.get("computed", 0))
        outputs.logprobs_cached = int(tables.get("cached", 0))


# ---------------------------------------------------------------------------------------------------
# values and plot


def plane_values(inputs: Any, ctx: Any) -> tuple[Any, Any, str]:
    """Per-objective Shapley values of every member of the scenario and of every source, plus a note on
    what the standard errors mean.

    With a valuation run (``preference`` utility) the values are exact and their standard errors come
    from the finite eval sets (`valuation.pipeline.eval_sampling_values`); with a given coalition table they
    are the estimator's (0 for exact Shapley). Members' values are on the member game of all members.
    """
    from valuation.games.estimators import approximate
    from valuation.pipeline.eval_sampling import MAX_GROUPS_FOR_STD_ERRS, eval_sampling_values

    sc = inputs.scenario
    groups = {m.name: list(m.sources) for m in sc.members}
    sources = {s: [s] for s in inputs.game.players}
    run = inputs.valuation
    if (
        run is not None
        and getattr(run.prepared.config.utility, "kind", "preference") == "preference"
        and len(groups) <= MAX_GROUPS_FOR_STD_ERRS
        and len(sources) <= MAX_GROUPS_FOR_STD_ERRS
    ):
        members_result = eval_sampling_values(run, groups)
        sources_result = eval_sampling_values(run, sources)
        return members_result, sources_result, "error bars: ±1 standard error from the finite eval sets"
    member_game = ctx.member_game([m.name for m in sc.members])
    exact = len(groups) <= sc.valuation.max_exact_members
    method = "exact" if exact else "permutation"
    raw = approximate(member_game, method, None if exact else sc.valuation.budget, seed=sc.valuation.seed)
    members_result = _rename(raw, list(groups))
    source_exact = len(sources) <= sc.valuation.max_exact_members
    sources_result = approximate(
        inputs.game,
        "exact" if source_exact else "permutation",
        None if source_exact else sc.valuation.budget,
        seed=sc.valuation.seed,
    )
    note = (
        "exact Shapley values of the given coalition table (no error bars)"
        if exact and source_exact
        else "error bars: ±1 standard error of the permutation-sampling estimate"
    )
    return members_result, sources_result, note


def _rename(result: Any, players: list[str]) -> Any:
    """The result with its players renamed by position (the member game's players are ``#0, #1, …``)."""
    from dataclasses import replace

    return replace(result, players=tuple(players))


def _write_values(outputs: RunOutputs, inputs: Any, members: Any, sources: Any, error_note: str) -> None:
    from market.money import format_minor
    from valuation.games.game import atomic_write_text

    sc = inputs.scenario
    periods = []
    for run, record in zip(outputs.periods, outputs.records, strict=True):
        pay = run.payout
        periods.append(
            {
                "period": run.period,
                "run_id": record.run_id,
                "rule": pay.rule,
                "currency": pay.currency,
                "revenue": format_minor(run.revenue_minor, pay.currency),
                "fee": format_minor(run.fee_minor, pay.currency),
                "pool": format_minor(run.pool_minor, pay.currency),
                "pool_minor": run.pool_minor,
                "stable": run.stability.stable,
                "payouts": [
                    {
                        "member": m,
                        "value": float(pay.values[i]),
                        "std_err": _finite(pay.std_errs[i]),
                        "share": float(pay.shares[i]),
                        "amount": format_minor(pay.amounts[i], pay.currency),
                        "amount_minor": int(pay.amounts[i]),
                    }
                    for i, m in enumerate(pay.members)
                ],
            }
        )
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
        "periods": periods,
    }
    atomic_write_text(outputs.values, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _write_plot(outputs: RunOutputs, inputs: Any, members: Any, sources: Any, error_note: str) -> None:
    from dataclasses import replace

    from market.plots import plane_objectives, points_from_result, write_value_plane

    axes = plane_objectives(members.objectives)
    if axes is None:
        outputs.plot = None
        outputs.notes.append("no plot: the value plane needs two objectives, the game has one")
        return
    x, y = axes
    owners = {m.name: list(m.sources) for m in inputs.scenario.members}
    sole = {srcs[0]: name for name, srcs in owners.items() if len(srcs) == 1}  # source -> its one-source owner
    points = [
        replace(p, labelled=p.name not in sole) for p in points_from_result(sources, "source", x, y)
    ] + [
        replace(p, name=f"{p.name} ({', '.join(owners[p.name])})") for p in points_from_result(members, "member", x, y)
    ]
    title = f"{inputs.scenario.market.name}: Shapley values, {x} vs {y}"
    assert outputs.plot is not None
    write_value_plane(points, outputs.plot, x_label=x, y_label=y, title=title, note=error_note)


def _finite(x: Any) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------
# summary


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # pipes, files, tests: do not squeeze tables into 80 columns
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=160)
    return console


def print_summary(outputs: RunOutputs) -> None:
    """The payout table per period, what was reused, where the outputs are, and the dashboard command."""

    from market.cli.tables import payout_table
    from market.money import format_minor

    out = _console()
    for run, record in zip(outputs.periods, outputs.records, strict=True):
        pay = run.payout
        cur = pay.currency
        table = payout_table(
            run,
            title=f"period {run.period}: {pay.rule}, pool {format_minor(run.pool_minor, cur)} {cur}",
            caption=f"revenue {format_minor(run.revenue_minor, cur)} {cur} − platform fee "
            f"{format_minor(run.fee_minor, cur)} {cur}",
        )
        out.print(table)
        out.print(run.stability.verdict(), markup=False)
        for w in pay.warnings:
            out.print(f"warning: period {run.period}: {w}", markup=False)
        state = "recorded" if record.added else "already recorded (nothing added)"
        out.print(f"ledger: run {record.run_id} (seq {record.seq}) {state}", markup=False)
        out.print("")

    if outputs.valuation_dir is not None:
        trained, reused = outputs.adapters_trained, outputs.adapters_reused
        out.print(
            f"valuation: {len(trained)} adapter(s) trained, {len(reused)} up to date; log-prob tables: "
            f"{outputs.logprobs_computed} computed, {outputs.logprobs_cached} cached",
            markup=False,
        )
    if outputs.records and outputs.rows_added == 0 and not outputs.adapters_trained and not outputs.logprobs_computed:
        out.print("nothing to do: nothing retrained, no new ledger rows (inputs unchanged since the last run)", markup=False)
    for note in outputs.notes:
        out.print(note, markup=False)
    out.print("outputs:", markup=False)
    rows = [
        ("ledger", outputs.ledger),
        ("payouts CSV", outputs.csv),
        ("payouts Parquet", outputs.parquet),
        ("values JSON", outputs.values),
        ("value plane PNG", outputs.plot),
        ("valuation run", outputs.valuation_dir),
    ]
    for label, path in rows:
        if path is not None:
            out.print(f"  {label + ':':<17}{path}", markup=False)
    out.print(f"open the dashboard: payoutsim dashboard --ledger {shlex.quote(str(outputs.ledger))}", markup=False)
