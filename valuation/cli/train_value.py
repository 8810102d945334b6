"""`payoutsim train`, `payoutsim value`: per-source DPO adapters and coalition utilities.

The pipeline (`valuation.pipeline`: pydantic, numpy, scipy, the language-model modules) and the retraining
baseline are imported inside the commands and their printers: at module top they would be loaded by every
``payoutsim`` invocation, ``--help`` included
(measured, medians of 15 runs: `payoutsim --help` takes 0.45 s with them deferred, 1.57 s with them at top).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from valuation.cli.runtime_options import AddressOpt, BackendOpt, runtime_flags
from valuation.files import check_writable_dir
from valuation.terminal import safe_console
from valuation.text import printable

if TYPE_CHECKING:  # annotations only; the imports are deferred at run time (see the module docstring)
    from valuation.pipeline.outcome import ValuationRun
    from valuation.retraining.run import RetrainRun

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


_CONFIG_HELP = (
    "Valuation config (TOML): \\[data], \\[model], \\[training], \\[arithmetic], \\[utility], \\[eval], "
    "\\[shapley], \\[output], \\[\\[members]]. See data/configs/ for examples; relative paths are resolved against the "
    "config file's folder."
)
_RETRAIN_HELP = (
    "Retrain adapters that are stale (their data, \\[training] config or base model changed) or damaged "
    "(adapter_model.safetensors missing or not matching its manifest's sha256) instead of stopping with an "
    "error. Up-to-date adapters are still skipped."
)
_OUT_HELP = (
    "Run directory (overrides \\[output] dir; relative to the current folder). Checked before any work: a file "
    "or an unwritable place exits with 2."
)
_PROGRESS_HELP = (
    "Show progress on stderr: bars on a terminal; otherwise (nohup, CI, 2> log) plain '[progress]' lines with "
    "item i/n, elapsed time and ETA, at least every 30 s."
)

ConfigArg = Annotated[Path, typer.Argument(help=_CONFIG_HELP, show_default=False)]
RetrainOpt = Annotated[bool, typer.Option("--retrain", help=_RETRAIN_HELP)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help=_OUT_HELP)]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)]


class Mode(StrEnum):
    """`payoutsim value --mode`: the method, the retraining baseline, or both."""

    arithmetic = "arithmetic"
    retrain = "retrain"
    both = "both"


@app.command("train")
def train(
    config: ConfigArg,
    retrain: RetrainOpt = False,
    out: OutOpt = None,
    progress: ProgressOpt = True,
    backend: BackendOpt = None,
    address: AddressOpt = None,
) -> None:
    """Train one LoRA adapter per data source with DPO (trl + peft) into RUN/adapters/<source>/.

    Resumable: a finished adapter whose data, training config and base model are unchanged is skipped ("skipped: up to date"); an interrupted run trains only the sources it had not finished.

    With --backend ray each adapter is one Ray task (on a local Ray instance, or the cluster of --address); finished adapters come back to this machine as they finish.
    """
    from valuation.pipeline.config import load_valuation_config  # deferred: see the module docstring
    from valuation.pipeline.run import run_train  # deferred: see the module docstring

    cfg = load_valuation_config(config, output_dir=out)
    check_writable_dir(cfg.output.dir, field="--out" if out is not None else "output.dir")
    with runtime_flags(backend, address):
        _, records = run_train(cfg, retrain=retrain, progress=progress)
    trained = [s for s, r in records.items() if r.status == "trained"]
    skipped = [s for s, r in records.items() if r.status == "skipped"]
    typer.echo(printable(
        f"adapters in {cfg.output.dir / 'adapters'}: {len(trained)} trained, {len(skipped)} up to date "
        f"({', '.join(records)})"
    ))


_MODE_HELP = (
    "arithmetic: language-model arithmetic on n per-source adapters (the method). retrain: also train real "
    "coalition adapters (sequential DPO in \\[retrain] orders random orders, and on the shuffled union of "
    "their data) and report how well the arithmetic matches them (RUN/fidelity.json; max 6 sources by "
    "default). both: write the arithmetic results and the retraining baseline."
)
ModeOpt = Annotated[Mode, typer.Option("--mode", help=_MODE_HELP, case_sensitive=False)]


@app.command("value")
def value(
    config: ConfigArg,
    retrain: RetrainOpt = False,
    out: OutOpt = None,
    progress: ProgressOpt = True,
    mode: ModeOpt = Mode.arithmetic,
    target_width: Annotated[
        float | None,
        typer.Option(
            "--target-width",
            help="Evaluate until known: grow the eval pairs per objective in rounds until every source value's 95% "
            "interval is at most this wide (utility units, e.g. 0.01); overrides \\[uncertainty] target.",
            show_default=False,
        ),
    ] = None,
    max_eval_pairs: Annotated[
        int | None,
        typer.Option("--max-eval-pairs", help="Budget of --target-width: eval pairs per objective (default 2000).",
                     show_default=False),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option("--max-seconds", help="Budget of --target-width: no new round after this many seconds.",
                     show_default=False),
    ] = None,
    backend: BackendOpt = None,
    address: AddressOpt = None,
) -> None:
    """Value every data source (and member) per objective with Shapley values.

    Trains the adapters that are missing, scores the eval sets once per model, evaluates every coalition by language-model arithmetic on the cached log-probs and values the game.

    Writes RUN/game.csv (GAME.csv format), game.parquet (+ std errs, pair counts), values.json (the `payoutsim shapley` result format), values_members.json (with \\[\\[members]]) and run.json (provenance); prints a summary table.

    Every value carries a standard error and a 95% interval (a bootstrap over the eval pairs, \\[uncertainty]). With --target-width (or \\[uncertainty] target) the eval pairs grow in rounds until every interval is that narrow or the budget is spent; the last round is kept either way.

    With --backend ray the trainings, the scoring of each model, the decoding of each coalition and each retraining job are Ray tasks (same results as local).

    With --mode retrain|both also writes game_retrain_sequential.csv, game_retrain_union.csv, game_merge_cat.csv, retrain_coalitions.csv, values_retrain_*.json and fidelity.json, and prints a fidelity table. With \\[retrain] seeds = k >= 2 the baseline is retrained k times with other seeds (k times the training) and fidelity.json and the printout add retraining's noise floor: retrain vs retrain beside arithmetic vs retrain, with 95% bootstrap intervals over eval pairs.
    """
    from valuation.pipeline.config import (  # deferred: module docstring
        load_valuation_config,
        with_uncertainty,
    )
    from valuation.pipeline.run import (  # deferred: module docstring
        open_runtime,
        run_value,
        value_until_known,
    )
    from valuation.retraining.run import run_retrain  # deferred: see the module docstring

    cfg = load_valuation_config(config, output_dir=out)
    cfg = with_uncertainty(cfg, {"target": target_width, "max_pairs": max_eval_pairs, "max_seconds": max_seconds})
    check_writable_dir(cfg.output.dir, field="--out" if out is not None else "output.dir")
    run = None
    with runtime_flags(backend, address), open_runtime(cfg) as runtime:  # one Ray session for both modes
        if mode in (Mode.arithmetic, Mode.both):
            if cfg.uncertainty.target is not None:
                run, report = value_until_known(cfg, retrain=retrain, progress=progress, log=typer.echo, backend=runtime)
                _print_summary(run)
                typer.echo(printable(report.summary("value interval")))
            else:
                run = run_value(cfg, retrain=retrain, progress=progress, backend=runtime)
                _print_summary(run)
        if mode in (Mode.retrain, Mode.both):
            _print_fidelity(run_retrain(cfg, arithmetic=run, retrain=retrain, progress=progress, backend=runtime))


def _print_summary(run: ValuationRun) -> None:
    """The source values per objective (± std errs), u(∅), u(all) and the efficiency gap for a complete
    table or the compact game, the member values, and the run directory with the adapters trained and the wall time."""
    from valuation.games.game import TableGame, empty_and_grand
    from valuation.pipeline.outcome import efficiency_gap  # deferred: see the module docstring

    console = safe_console()
    res = run.result
    table = Table(title=f"{res.method} values per source (utility: preference, relative to the base model)")
    table.add_column("source")
    table.add_column("pairs", justify="right")
    for objective in res.objectives:
        table.add_column(objective, justify="right")
    for i, player in enumerate(res.players):
        cells = [f"{res.values[i, k]:+.4f}" + (f" ± {res.std_errs[i, k]:.4f}" if res.std_errs[i, k] else "")
                 for k in range(len(res.objectives))]
        table.add_row(player, str(len(run.prepared.train[player])), *cells)
    game = run.game
    if not isinstance(game, TableGame) or game.is_complete():  # a full table, or the compact game
        ends = empty_and_grand(game)
        table.add_section()
        table.add_row("u(∅) (base)", "", *(f"{u:.4f}" for u in ends[0]))
        table.add_row("u(all)", "", *(f"{u:.4f}" for u in ends[1]))
        gaps = efficiency_gap(run)
        table.add_row("Σφ − (u(all) − u(∅))", "", *(f"{g:.1e}" for g in gaps))
    console.print(table)
    if run.member_result is not None:
        mres = run.member_result
        mtable = Table(title="member values")
        mtable.add_column("member")
        for objective in mres.objectives:
            mtable.add_column(objective, justify="right")
        for i, member in enumerate(mres.players):
            mtable.add_row(member, *(f"{mres.values[i, k]:+.4f}" for k in range(len(mres.objectives))))
        console.print(mtable)
    trained = sum(1 for r in run.adapters.values() if r.status == "trained")
    console.print(
        f"run directory: {run.run_dir}  ({trained} adapters trained, {len(run.adapters) - trained} up to date; "
        f"{run.timings.get('total_s', 0):.1f} s)",
        highlight=False,
    )


def _print_fidelity(run: RetrainRun) -> None:
    """The retraining baseline's summary: the cost of each way, then per objective its agreement with the
    arithmetic (utilities over coalitions, exact Shapley values) and the values side by side."""
    console = safe_console()

    def num(x: object, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    cost = Table(title="cost of each way (fine-tunings include the n per-source adapters)")
    for column in ("way", "fine-tunings", "train wall s", "model passes / eval set"):
        cost.add_column(column, justify="left" if column == "way" else "right")
    for name, c in run.fidelity["cost"].items():
        cost.add_row(
            name, num(c.get("fine_tunings"), "d"), num(c.get("train_wall_time_s"), ".1f"),
            num(c.get("forward_passes_per_eval_set"), "d"),
        )
    console.print(cost)
    names = list(run.results)
    for k, objective in enumerate(run.objectives):
        fid = Table(title=f"{objective}: fidelity of language-model arithmetic vs each way")
        for column in ("way", "r(u)", "r(u) |S|≥2", "max |Δu|", "ρ(φ)", "max |Δφ|", "same sign"):
            fid.add_column(column, justify="left" if column == "way" else "right")
        for name in names:
            m = run.fidelity["variants"][name]["objectives"][objective]
            fid.add_row(
                name, num(m["utility_pearson"], ".3f"), num(m["utility_pearson_multi"], ".3f"),
                num(m["utility_max_abs_diff"], ".4f"), num(m["shapley_spearman"], ".3f"),
                num(m["shapley_max_abs_diff"], ".4f"), num(m["shapley_sign_agreement"], ".0%"),
            )
        console.print(fid)
        values = Table(title=f"{objective}: exact Shapley values")
        values.add_column("source")
        for name in ("arithmetic", *names):
            values.add_column(name, justify="right")
        for i, player in enumerate(run.players):
            values.add_row(
                player,
                f"{run.arithmetic_result.values[i, k]:+.4f}",
                *(f"{run.results[name].values[i, k]:+.4f}" for name in names),
            )
        console.print(values)
    _print_noise_floor(run, console, num)
    console.print(f"fidelity report: {run.files['fidelity']}", highlight=False)


def _print_noise_floor(run: RetrainRun, console: Any, num: Any) -> None:
    """With ``[retrain] seeds`` ≥ 2: per retrained kind and objective, retraining's agreement with itself under
    another seed beside the arithmetic's agreement with it (other seed, and same seed), each with its 95%
    bootstrap interval over eval pairs (the ``seeds.noise_floor`` part of fidelity.json)."""
    noise = run.fidelity["seeds"]["noise_floor"]
    if not noise:
        return

    def cell(entry: dict[str, Any], fmt: str) -> str:
        if entry["lo"] is None:
            return num(entry["value"], fmt)
        return f"{num(entry['value'], fmt)} [{num(entry['lo'], fmt)}, {num(entry['hi'], fmt)}]"

    rows = (
        ("retrain vs retrain (noise floor)", "retrain_vs_retrain"),
        ("arithmetic vs retrain (other seed)", "arithmetic_vs_retrain"),
        ("arithmetic vs retrain (same seed)", "arithmetic_vs_retrain_same_seed"),
        ("arithmetic vs arithmetic", "arithmetic_vs_arithmetic"),
    )
    count = run.fidelity["seeds"]["count"]
    for kind, per_kind in noise.items():
        for objective, f in per_kind.items():
            table = Table(title=f"{objective}, {kind}: noise floor over {count} seeds (95% bootstrap over eval pairs)")
            for column in ("comparison", "r(u)", "ρ(φ)", "same sign", "max |Δφ|"):
                table.add_column(column, justify="left" if column == "comparison" else "right")
            for label, key in rows:
                m = f[key]
                table.add_row(
                    label, cell(m["utility_pearson"], ".3f"), cell(m["shapley_spearman"], ".2f"),
                    cell(m["shapley_sign_agreement"], ".0%"), cell(m["shapley_max_abs_diff"], ".4f"),
                )
            console.print(table)
