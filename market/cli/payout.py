"""`payoutsim payout`, `payoutsim pool …`, `payoutsim ledger …`: the market layer's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


DEFAULT_LEDGER_PATH = Path("runs") / "ledger.duckdb"

pool_app = typer.Typer(help="Pooling what-ifs: would members do better in other pool structures?", no_args_is_help=True)
ledger_app = typer.Typer(help="The append-only payout ledger (DuckDB): show, export, verify.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(ledger_app, name="ledger")

LedgerOpt = Annotated[Path, typer.Option("--ledger", help="The ledger file (DuckDB); created on first use.")]
ScenarioArg = Annotated[
    Path, typer.Argument(help="The scenario TOML (a pooling agreement; see market/scenario.py).", show_default=False)
]


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:  # pipes, files, tests: do not squeeze tables into 80 columns
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=160)
    return console


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@app.command("payout")
def payout_cmd(
    scenario: ScenarioArg,
    period: Annotated[
        str | None,
        typer.Option("--period", "-p", help="Pay out this period only (default: every period of the schedule)."),
    ] = None,
    ledger: LedgerOpt = DEFAULT_LEDGER_PATH,
    no_ledger: Annotated[bool, typer.Option("--no-ledger", help="Compute and print only; write nothing.")] = False,
) -> None:
    """Split the pool of a scenario among its members, check the agreement's stability, record it.

    Prints the payout table (member, value, share, amount) and the stability verdict for each period,
    then appends the run to the ledger (re-running the same scenario and period adds nothing).
    """

    from market import ledger as ledger_mod
    from market.cli.tables import payout_table
    from market.money import format_minor
    from market.rules import RuleContext, run_period
    from market.scenario.schema import load_inputs, load_scenario

    loaded = load_scenario(scenario)
    inputs = load_inputs(loaded)
    sc = inputs.scenario
    periods = [sc.check_period(period)] if period is not None else sc.period_names()
    ctx = RuleContext.from_inputs(inputs)
    out = _console()
    cur = sc.market.currency
    for p in periods:
        run = run_period(inputs, p, ctx)
        pay = run.payout
        table = payout_table(
            run, title=f"{sc.market.name} — period {p} — rule {pay.rule} — pool {format_minor(run.pool_minor, cur)} {cur}"
        )
        fee = f"(revenue {format_minor(run.revenue_minor, cur)}, fee {format_minor(run.fee_minor, cur)})"
        out.print(table)
        out.print(f"  {fee}")
        out.print(run.stability.verdict(), markup=False)
        for w in pay.warnings:
            _warn(f"period {p}: {w}")
        if no_ledger:
            continue
        result = ledger_mod.record_run(ledger, inputs, run)
        if result.added:
            out.print(f"ledger: recorded run {result.run_id} (seq {result.seq}) in {ledger}", markup=False)
        else:
            out.print(
                f"ledger: scenario and period {p!r} already recorded as run {result.run_id} (seq {result.seq}); "
                "nothing added",
                markup=False,
            )


@pool_app.command("compare")
def pool_compare_cmd(
    scenario: ScenarioArg,
    period: Annotated[
        str | None,
        typer.Option("--period", "-p", help="The period whose members and revenue to use (default: the first)."),
    ] = None,
    partition: Annotated[
        list[str] | None,
        typer.Option(
            "--partition",
            help="An extra structure to compare, e.g. 'alice+bob|carol' (pools split by '|'); repeatable. "
            "Members not named go alone.",
        ),
    ] = None,
) -> None:
    """Compare pool structures (grand pool, everyone alone, leave-one-out, given partitions).

    For each structure: the value it creates and every member's payout, with who would rather leave
    the grand pool. All from the coalition table: no retraining.
    """
    from rich.table import Table

    from market.money import format_minor
    from market.pooling import compare_pools, parse_partition
    from market.rules import RuleContext, run_period
    from market.scenario.schema import load_inputs, load_scenario

    loaded = load_scenario(scenario)
    inputs = load_inputs(loaded)
    sc = inputs.scenario
    p = sc.check_period(period) if period is not None else sc.period_names()[0]
    members = [m.name for m in sc.members_in(p)]
    ctx = RuleContext.from_inputs(inputs)
    run = run_period(inputs, p, ctx)
    partitions = [*sc.pool.partitions, *(parse_partition(t, members) for t in partition or [])]
    partitions = [tuple(tuple(m for m in pool if m in members) for pool in part) for part in partitions]
    partitions = [tuple(pool for pool in part if pool) for part in partitions]
    comparison = compare_pools(ctx, members, run.pool_minor, sc.market.currency, partitions=partitions, period=p)
    cur = sc.market.currency
    table = Table(
        title=f"{sc.market.name} — period {p} — rule {ctx.rule} — pool {format_minor(run.pool_minor, cur)} {cur}",
        title_justify="left",
    )
    table.add_column("structure", no_wrap=True)
    table.add_column("value created", justify="right")
    for m in members:
        table.add_column(m, justify="right", no_wrap=True)
    table.add_column("better off than in the grand pool")
    for s in comparison.structures:
        cells = []
        for m in members:
            cell = format_minor(s.payouts[m], cur)
            if s is not comparison.grand and s.delta[m]:
                cell += f" ({'+' if s.delta[m] > 0 else ''}{format_minor(s.delta[m], cur)})"
            cells.append(cell)
        better = ", ".join(s.better_off) if s is not comparison.grand else ""
        table.add_row(s.name, f"{s.value_created:.6g}", *cells, better or ("—" if s is not comparison.grand else ""))
    out = _console()
    out.print(table)
    leave = comparison.would_leave()
    if leave:
        for m, names in leave.items():
            out.print(f"{m} would rather leave the grand pool for: {'; '.join(names)}", markup=False)
    else:
        out.print("nobody is paid more in any compared structure than in the grand pool", markup=False)
    for w in comparison.warnings:
        _warn(w)


@ledger_app.command("show")
def ledger_show_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER_PATH,
    run: Annotated[
        str | None, typer.Option("--run", help="Show the payouts of this run id instead of the run list.")
    ] = None,
) -> None:
    """List the recorded runs (or one run's payouts)."""
    from rich.table import Table

    from market import ledger as ledger_mod
    from market.money import format_minor

    out = _console()
    if run is not None:
        rows = ledger_mod.run_payouts(ledger, run)
        table = Table(title=f"run {run}", title_justify="left")
        for col in ("member", "value", "share", "amount", "currency"):
            table.add_column(col, justify="left" if col in ("member", "currency") else "right", no_wrap=True)
        for r in rows:
            table.add_row(
                r["member"], f"{r['value']:.6g}", f"{100 * r['share']:.2f}%",
                format_minor(r["amount_minor"], r["currency"]), r["currency"],
            )
        out.print(table)
        return
    runs = ledger_mod.list_runs(ledger)
    table = Table(title=f"{ledger}: {len(runs)} run(s)", title_justify="left")
    for col in ("seq", "run_id", "created (UTC)", "scenario", "period", "rule", "pool", "stable"):
        table.add_column(col, no_wrap=True)
    import json

    for r in runs:
        stable = json.loads(r["stability_json"]).get("stable")
        table.add_row(
            str(r["seq"]),
            r["run_id"],
            r["created_at"].isoformat(timespec="seconds"),
            r["scenario_name"],
            r["period"],
            r["rule"],
            f"{format_minor(r['pool_minor'], r['currency'])} {r['currency']}",
            {True: "yes", False: "no", None: "?"}[stable],
        )
    out.print(table)


@ledger_app.command("export")
def ledger_export_cmd(
    ledger: LedgerOpt = DEFAULT_LEDGER_PATH,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write the payout rows as CSV here (formula-escaped).")
    ] = None,
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Write the payout rows as Parquet here.")] = None,
) -> None:
    """Export every payout row (run_id, period, member, rule, value, share, amount, currency, …)."""
    from market.export import export_ledger
    from valuation.errors import InputError

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
    from market import ledger as ledger_mod

    report = ledger_mod.verify(ledger)
    if report.ok:
        typer.echo(f"ok: {report.n_runs} run(s) verified in {ledger}")
        return
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    typer.echo(f"FAILED: {len(report.problems)} problem(s) in {report.n_runs} run(s) of {ledger}", err=True)
    raise typer.Exit(1)
