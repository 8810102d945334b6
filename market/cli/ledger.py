"""`payoutsim ledger show|export|verify`: the append-only payout ledger (DuckDB).

The market library is imported inside each command: `payoutsim --help` / `payoutsim ledger --help` speed
(measured in `market.cli.payout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from market.cli.common import DEFAULT_LEDGER_PATH, LedgerOpt
from valuation.errors import InputError

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps
ledger_app = typer.Typer(help="The append-only payout ledger (DuckDB): show, export, verify.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("show")
def ledger_show_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER_PATH,
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
    ledger: LedgerOpt = DEFAULT_LEDGER_PATH,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write the payout rows as CSV here (formula-escaped).")
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
    typer.echo(f"exported {n} payout row(s) to {written}")


@ledger_app.command("verify")
def ledger_verify_cmd(ledger: LedgerOpt = DEFAULT_LEDGER_PATH) -> None:
    """Re-check the ledger's invariants: payout sums, hashes and their chain, no orphan rows.

    Exit code 0 when everything holds, 1 when a problem is found (each one is listed).
    """
    from market.ledger import verify  # deferred: --help speed (module docstring)

    report = verify(ledger)
    if report.ok:
        typer.echo(f"ok: {report.n_runs} run(s) verified in {ledger}")
        return
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    typer.echo(f"FAILED: {len(report.problems)} problem(s) in {report.n_runs} run(s) of {ledger}", err=True)
    raise typer.Exit(1)
