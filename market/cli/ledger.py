"""`payoutsim ledger show|export|verify`: the append-only payout ledger (DuckDB).

The market library is imported inside each command: `payoutsim --help` / `payoutsim ledger --help` speed
(measured in `market.cli.payout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from market.cli.common import KeyFileOpt, LedgerOpt
from market.defaults import DEFAULT_LEDGER
from valuation.errors import InputError
from valuation.text import printable

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps
ledger_app = typer.Typer(help="The append-only payout ledger (DuckDB): show, export, verify.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("show")
def ledger_show_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    run: Annotated[
        str | None, typer.Option("--run", help="Show the payouts of this run id instead of the run list.")
    ] = None,
) -> None:
    """List the recorded runs (or one run's payouts)."""
    from market.cli.tables import run_payouts_table, runs_table  # deferred: --help speed (module docstring)
    from market.console import wide_console
    from market.ledger import list_runs, run_payouts
    from market.read_model import runs

    out = wide_console()
    if run is not None:
        rows = run_payouts(ledger, run)
        pool = next((int(r["pool_minor"]) for r in list_runs(ledger) if r["run_id"] == run), None)
        out.print(run_payouts_table(run, rows, pool))
        return
    out.print(runs_table(ledger, runs(ledger)))


@ledger_app.command("export")
def ledger_export_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    csv: Annotated[
        Path | None, typer.Option(
            "--csv",
            help="Write the payout rows as CSV here (formula-escaped: a text cell starting with = + - @ tab CR "
            "or ' gets a leading '; drop one leading ' to read it back).",
        )
    ] = None,
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Write the payout rows as Parquet here.")] = None,
) -> None:
    """Export every payout row (run_id, period, member, rule, value, share, amount, currency, …).

    Both paths are checked before anything is written: when one of them cannot be written (a folder, a
    path under a file, an unwritable folder) the command names it, writes neither file and exits with 2.
    """
    from market.export import export_ledger  # deferred: --help speed (module docstring)

    if csv is None and parquet is None:
        raise InputError("give --csv PATH and/or --parquet PATH", field="--csv")
    n = export_ledger(ledger, csv=csv, parquet=parquet)
    written = " and ".join(str(p) for p in (csv, parquet) if p is not None)
    typer.echo(printable(f"exported {n} payout row(s) to {written}"))


@ledger_app.command("verify")
def ledger_verify_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER,
    receipt: Annotated[
        list[Path] | None,
        typer.Option(
            "--receipt",
            help="A receipt a member kept (repeatable): its runs and head must still be in the ledger with the "
            "same record hashes, and the chain from the first run to them must recompute.",
            show_default=False,
        ),
    ] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(
            "--head",
            help="A record hash (64 hex digits; repeatable) that must still be the hash of some run, with the "
            "chain up to it intact.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Re-check the ledger's invariants: payout sums, hashes and their chain, no orphan rows; then the
    receipts and head hashes given, and every run's MAC when the key is given.

    The chain alone shows only that the file is self-consistent: whoever can write it can rewrite history
    and recompute every hash. A receipt or head hash detects any change to the runs up to it (and their
    deletion); the MAC detects changes by anyone without the key (not the deletion of the latest runs).

    Reads every row, so DuckDB checks every block's checksum. Exit code 0 when everything holds, 1 when a
    problem is found (each one is listed), 2 for a bad receipt, head hash or key, or when the file is damaged
    ("the ledger file is damaged": a checksum mismatch, truncated) or is not a payoutsim ledger, 3 while
    another process writes it.
    """
    from market.ledger_mac import ledger_key  # deferred: --help speed (module docstring)
    from market.receipts import check_history, load_receipt, parse_hash

    receipts = [load_receipt(p) for p in receipt or []]
    heads = [parse_hash(h) for h in head or []]
    check = check_history(ledger, receipts=receipts, heads=heads, key=ledger_key(key_file))
    for note in check.notes:
        typer.echo(printable(note))
    if check.ok:
        typer.echo(printable(f"ok: {check.report.n_runs} run(s) verified in {ledger}"))
        return
    for problem in check.problems:
        typer.echo(printable(f"problem: {problem}"), err=True)
    typer.echo(printable(f"FAILED: {len(check.problems)} problem(s) in {check.report.n_runs} run(s) of {ledger}"), err=True)
    raise typer.Exit(1)
