"""`payoutsim train`, `payoutsim value`: per-source DPO adapters and coalition utilities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from market.cli import app

_CONFIG_HELP = (
    "Valuation config (TOML): \\[data], \\[model], \\[training], \\[arithmetic], \\[utility], \\[eval], "
    "\\[shapley], \\[output], \\[\\[members]]. See data/configs/ for examples; relative paths are resolved against the "
    "config file's folder."
)
_RETRAIN_HELP = (
    "Retrain adapters that are stale (their data, \\[training] config or base model changed) instead of "
    "stopping with an error. Up-to-date adapters are still skipped."
)
_OUT_HELP = "Run directory (overrides \\[output] dir; relative to the current folder)."
_PROGRESS_HELP = "Show progress bars on stderr."

ConfigArg = Annotated[Path, typer.Argument(help=_CONFIG_HELP, show_default=False)]
RetrainOpt = Annotated[bool, typer.Option("--retrain", help=_RETRAIN_HELP)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help=_OUT_HELP)]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help=_PROGRESS_HELP)]


@app.command("train")
def train(config: ConfigArg, retrain: RetrainOpt = False, out: OutOpt = None, progress: ProgressOpt = True) -> None:
    """Train one LoRA adapter per data source with DPO (trl + peft) into RUN/adapters/<source>/.

    Resumable: a finished adapter whose data, training config and base model are unchanged is skipped ("skipped: up to date"); an interrupted run trains only the sources it had not finished.
    """
    from valuation.config import load_valuation_config
    from valuation.pipeline import run_train

    cfg = load_valuation_config(config, output_dir=out)
    _, records = run_train(cfg, retrain=retrain, progress=progress)
    trained = [s for s, r in records.items() if r.status == "trained"]
    skipped = [s for s, r in records.items() if r.status == "skipped"]
    typer.echo(
        f"adapters in {cfg.output.dir / 'adapters'}: {len(trained)} trained, {len(skipped)} up to date "
        f"({', '.join(records)})"
    )


@app.command("value")
def value(config: ConfigArg, retrain: RetrainOpt = False, out: OutOpt = None, progress: ProgressOpt = True) -> None:
    """Value every data source (and member) per objective with Shapley values.

    Trains the adapters that are missing, scores the eval sets once per model, evaluates every coalition by language-model arithmetic on the cached log-probs and values the game.

    Writes RUN/game.csv (GAME.csv format), game.parquet (+ std errs, pair counts), values.json (the `payoutsim shapley` result format), values_members.json (with \\[\\[members]]) and run.json (provenance); prints a summary table.
    """
    from valuation.config import load_valuation_config
    from valuation.pipeline import run_value

    cfg = load_valuation_config(config, output_dir=out)
    run = run_value(cfg, retrain=retrain, progress=progress)
    _print_summary(run)


def _print_summary(run: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from valuation.pipeline import ValuationRun, efficiency_gap

    assert isinstance(run, ValuationRun)
    console = Console()
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
    table_game = run.game
    if table_game.is_complete():
        dense = table_game.dense_table()
        table.add_section()
        table.add_row("u(∅) (base)", "", *(f"{u:.4f}" for u in dense[0]))
        table.add_row("u(all)", "", *(f"{u:.4f}" for u in dense[-1]))
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
