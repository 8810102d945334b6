"""`payoutsim pool compare` (would members do better in other pool structures?) and `payoutsim pool
recommend` (which members should pool, and is there a stable split?).

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
    members: Annotated[
        str | None,
        typer.Option(
            "--members",
            help="Build the leave-one-out structures only for these members, e.g. 'alice,bob' (default: every "
            "member up to 16 members, none above: each needs a payout of n − 1 members).",
        ),
    ] = None,
) -> None:
    """Compare pool structures (grand pool, everyone alone, leave-one-out, given partitions).

    For each structure: the value it creates and every member's payout, with who would rather leave
    the grand pool. All from the coalition game: no retraining. The pool of only some members (the rest
    alone) is --partition 'a+b+c'.
    """
    from market.cli.tables import pool_table  # deferred: --help speed (module docstring)
    from market.console import wide_console
    from market.pooling import compare_scenario_pools

    named = None if members is None else [m.strip() for m in members.split(",") if m.strip()]
    comparison = compare_scenario_pools(scenario, period=period, partitions=partition or [], leave_one_out=named)
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


@pool_app.command("recommend")
def pool_recommend_cmd(
    scenario: ScenarioArg,
    period: Annotated[
        str | None,
        typer.Option("--period", "-p", help="The period whose members and revenue to use (default: the first)."),
    ] = None,
) -> None:
    """Recommend the pool that creates the most value and say whether it can be split stably.

    The members subset T with the largest value created (every subset up to 16 members, local search
    above), the members left out and their marginal contribution, the scenario's rule paid out on T
    (priced as in `pool compare`), its stability, the least-core ε of T's game and, when the rule's
    payout is not in a non-empty core, a core allocation in money.
    """
    from market.cli.tables import recommend_lines, recommend_table  # deferred: --help speed
    from market.console import wide_console
    from market.recommend import recommend_scenario_pool

    rec = recommend_scenario_pool(scenario, period=period)
    out = wide_console()
    for line in recommend_lines(rec, head=True):
        out.print(line, markup=False)
    out.print(recommend_table(rec))
    for line in recommend_lines(rec, head=False):
        out.print(line, markup=False)
    for w in rec.payout.warnings:
        warn(w)
