"""`payoutsim payout`: pay out a scenario's periods and record them in the ledger.

The market commands (this module, `pool`, `ledger`, `run`) import the market library inside each
command: imported at module top it pulls in pydantic, scipy and the valuation pipeline's modules on every
start, and ``payoutsim --help`` takes 0.74 s instead of 0.17 s (``payoutsim ledger --help``: 0.74 s instead
of 0.23 s; user + system CPU time, the minimum of 9 runs, measured with everything at module top vs deferred).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from market.cli.common import KeyFileOpt, LedgerOpt, ScenarioArg, warn
from market.defaults import DEFAULT_LEDGER
from valuation.errors import InputError

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


@app.command("payout")
def payout_cmd(
    scenario: ScenarioArg,
    period: Annotated[
        str | None,
        typer.Option("--period", "-p", help="Pay out this period only (default: every period of the schedule)."),
    ] = None,
    ledger: LedgerOpt = DEFAULT_LEDGER,
    no_ledger: Annotated[bool, typer.Option("--no-ledger", help="Compute and print only; write nothing.")] = False,
    receipt: Annotated[
        Path | None,
        typer.Option(
            "--receipt",
            help="Write the receipt (run ids, seqs, record hashes, the ledger's head hash) here. Default: "
            "receipts/<ledger name>-seq<head seq>.json in the ledger's folder.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Split the pool of a scenario among its members, check the agreement's stability, record it.

    Prints the payout table (member, value, share, amount) and the stability verdict for each period,
    then appends the run to the ledger (re-running the same scenario and period adds nothing) and prints
    and writes a receipt: members keep it and check the ledger against it with `payoutsim ledger verify
    --receipt`. With a key (--key-file or PAYOUTSIM_LEDGER_KEY) each new run also carries a keyed MAC.
    """
    from market.cli.tables import (  # deferred: --help speed (module docstring)
        held_line,
        payout_table,
        uncertainty_lines,
    )
    from market.console import wide_console
    from market.ledger_mac import ledger_key
    from market.money import format_minor
    from market.receipts import receipt_lines, save_receipt
    from market.run import pay_scenario

    if no_ledger and receipt is not None:
        raise InputError("--receipt needs a ledger: drop --no-ledger", field="--receipt")
    out = wide_console()
    key = None if no_ledger else ledger_key(key_file)
    run_ids: list[str] = []
    for paid in pay_scenario(scenario, period=period, ledger=None if no_ledger else ledger, key=key):
        run, record, p = paid.run, paid.record, paid.run.period
        pay = run.payout
        cur = paid.scenario.market.currency
        title = f"{paid.scenario.market.name} — period {p} — rule {pay.rule} — pool {format_minor(run.pool_minor, cur)} {cur}"
        out.print(payout_table(run, title=title))
        for line in uncertainty_lines(run):
            out.print(line, markup=False)
        out.print(f"  (revenue {format_minor(run.revenue_minor, cur)}, fee {format_minor(run.fee_minor, cur)})")
        out.print(run.stability.verdict(), markup=False)
        if pay.held_minor:
            out.print(held_line(pay.held_minor, cur), markup=False)
        for w in pay.warnings:
            warn(f"period {p}: {w}")
        if record is None:
            continue
        run_ids.append(record.run_id)
        if record.added:
            out.print(f"ledger: recorded run {record.run_id} (seq {record.seq}) in {ledger}", markup=False)
        else:
            out.print(
                f"ledger: scenario and period {p!r} already recorded as run {record.run_id} (seq {record.seq}); "
                "nothing added",
                markup=False,
            )
    if run_ids:
        issued, path = save_receipt(ledger, run_ids, receipt)
        for line in receipt_lines(issued, path, keyed=key is not None):
            out.print(line, markup=False, soft_wrap=True)
