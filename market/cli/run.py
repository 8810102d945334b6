"""`payoutsim run SCENARIO.toml`: the whole product in one command (`market.run.run_scenario`).

The stages (scenario → valuation → payouts → ledger → export → values → plot) run with one progress
display on stderr; then a summary on stdout: the payout table per period, what was reused, where every
output is, and the command that opens the dashboard.

The market library is imported inside the command and `print_summary` (`RunOutputs` under
TYPE_CHECKING, for the annotation): `payoutsim --help` speed (measured in `market.cli.payout`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from market.cli.common import KeyFileOpt
from valuation.cli.runtime_options import AddressOpt, BackendOpt, runtime_flags

if TYPE_CHECKING:
    from market.run import RunOutputs

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


@app.command("run")
def run_cmd(
    scenario: Annotated[
        Path,
        typer.Argument(
            help="The scenario TOML (a pooling agreement; see market/scenario/schema.py). With \\[valuation] config = "
            "\"VALUATION.toml\" the valuation pipeline runs first.",
            show_default=False,
        ),
    ],
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger",
            help="The ledger file (DuckDB): an existing payoutsim ledger or a new path, checked before the "
            "valuation runs; default OUT/ledger.duckdb.",
            show_default=False,
        ),
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
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Show the progress display on stderr (on a non-terminal: plain '[progress]' lines with the stage, "
            "item i/n, elapsed time and ETA, at least every 30 s).",
        ),
    ] = True,
    receipt: Annotated[
        Path | None,
        typer.Option(
            "--receipt",
            help="Write the receipt (run ids, seqs, record hashes, the ledger's head hash) here; default "
            "OUT/receipt.json.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOpt = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Evaluate until the split is known: grow the eval pairs in rounds until every member's 95% amount "
            r"interval is at most this wide, in the scenario's currency (e.g. 500.00); overrides \[uncertainty] target.",
            show_default=False,
        ),
    ] = None,
    target_share: Annotated[
        float | None,
        typer.Option(
            "--target-share",
            help="Like --target, as a fraction of the pool (0.01: intervals at most 1% of the pool wide).",
            show_default=False,
        ),
    ] = None,
    max_eval_pairs: Annotated[
        int | None,
        typer.Option(
            "--max-eval-pairs", help="Budget of a target: at most this many eval pairs per objective (default 2000).",
            show_default=False,
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option("--max-seconds", help="Budget of a target: stop starting new rounds after this many seconds.",
                     show_default=False),
    ] = None,
    replicates: Annotated[
        int | None,
        typer.Option(
            "--replicates",
            help="Replicate payouts behind every standard error and interval (default 200; 0: none).",
            show_default=False,
        ),
    ] = None,
    backend: BackendOpt = None,
    address: AddressOpt = None,
) -> None:
    """Run a scenario end to end: valuation → payouts → ledger → CSV/Parquet → values JSON → PNG plot.

    The valuation is resumable (adapters that are up to date are not retrained; log-probs are cached) and the ledger is idempotent, so running the same scenario again changes nothing and says so.

    Ends with the payout table, the receipt (members keep it: `payoutsim ledger verify --receipt` checks the
    ledger against it), where the outputs are and the command that opens the dashboard. With a key
    (--key-file or PAYOUTSIM_LEDGER_KEY) each new run also carries a keyed MAC.

    Every amount carries its uncertainty: the payout is recomputed on 200 bootstrap replicates of the eval
    set (standard error, 95% interval, and how sure it is that one member is paid more than another). With
    --target / --target-share the eval set grows in rounds until every interval is that narrow or the budget
    (--max-eval-pairs, --max-seconds) is spent; the best result is kept and recorded either way.

    --backend ray runs the valuation's tasks on Ray (a local instance, or the cluster of --address): the same
    payouts to the cent as a local run.
    """
    from market.ledger_mac import ledger_key  # deferred: --help speed (module docstring)
    from market.run import run_scenario

    key = ledger_key(key_file)
    given = {
        "target": target, "target_share": target_share, "max_pairs": max_eval_pairs, "max_seconds": max_seconds,
        "replicates": replicates,
    }
    with runtime_flags(backend, address):  # --backend/--address: where the valuation's tasks run
        outputs = run_scenario(
            scenario, ledger=ledger, out=out, period=period, retrain=retrain, progress=progress, key=key,
            receipt=receipt, uncertainty={k: v for k, v in given.items() if v is not None},
        )
    print_summary(outputs, keyed=key is not None)


def print_summary(outputs: RunOutputs, *, keyed: bool = False) -> None:
    """The payout table per period, the receipt, what was reused, where the outputs are, and the dashboard
    command (`keyed`: the runs were recorded with a MAC key)."""
    from market.cli.tables import (  # deferred: --help speed (module docstring)
        held_line,
        payout_table,
        uncertainty_lines,
    )
    from market.console import wide_console
    from market.money import format_minor
    from market.receipts import receipt_lines

    out = wide_console()
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
        for line in uncertainty_lines(run):
            out.print(line, markup=False)
        out.print(run.stability.verdict(), markup=False)
        if pay.held_minor:
            out.print(held_line(pay.held_minor, cur), markup=False)
        for w in pay.warnings:
            out.print(f"warning: period {run.period}: {w}", markup=False)
        state = "recorded" if record.added else "already recorded (nothing added)"
        out.print(f"ledger: run {record.run_id} (seq {record.seq}) {state}", markup=False)
        out.print("")
    if outputs.receipt is not None and outputs.receipt_file is not None:
        for line in receipt_lines(outputs.receipt, outputs.receipt_file, keyed=keyed):
            out.print(line, markup=False, soft_wrap=True)

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
        ("receipt", outputs.receipt_file),
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
