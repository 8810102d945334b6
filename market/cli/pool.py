"""`payoutsim pool compare`: would members do better in other pool structures?

The market library is imported inside the command: `payoutsim --help` speed (measured in
`market.cli.payout`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from market.cli.common import ScenarioArg, warn

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps
pool_app = typer.Typer(help="Pooling what-ifs: would members do better in other pool structures?", no_args_is_help=True)
app.add_typer(pool_app, name="pool")


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
    from market.cli.tables import pool_table  # deferred: --help speed (module docstring)
    from market.console import wide_console
    from market.pooling import compare_scenario_pools

    comparison = compare_scenario_pools(scenario, period=period, partitions=partition or [])
    out = wide_console()
    out.print(pool_table(comparison))
    leave = comparison.would_leave()
    if leave:
        for m, names in leave.items():
            out.print(f"{m} would rather leave the grand pool for: {'; '.join(names)}", markup=False)
    else:
        out.print("nobody is paid more in any compared structure than in the grand pool", markup=False)
    for w in comparison.warnings:
        warn(w)
