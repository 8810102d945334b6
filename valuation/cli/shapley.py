"""`payoutsim shapley`: value any coalition game given as a table (GAME.csv or Parquet).

The game engine (`valuation.games.estimators`: numpy, scipy) is imported inside the command: at module top
it would be loaded by every ``payoutsim`` invocation, ``--help`` included
(measured, medians of 15 runs: `payoutsim --help` takes 0.45 s with it deferred, 1.40 s with it at top).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from valuation.files import atomic_write_text, check_writable
from valuation.games.methods import check_method
from valuation.terminal import safe_console

if TYPE_CHECKING:  # annotations only; the import is deferred at run time (see the module docstring)
    from valuation.games.result import ValuationResult

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps


_METHOD_HELP = (
    "Valuation method: exact (Shapley over all 2^n coalitions), regression (sampled Shapley by "
    "size-stratified regression, paired when it pays; the most accurate per evaluation, see README), "
    "permutation (sampled Shapley, orders in "
    "Latin-square blocks; budget = distinct coalitions), banzhaf (exact when small, else maximum-sample-reuse sampling), loo (leave-one-out), "
    "least_core (HiGHS LP; reports epsilon)."
)


@app.command("shapley")
def shapley(
    utilities: Annotated[
        Path,
        typer.Option(
            "--utilities",
            "-u",
            help="GAME.csv (or .parquet): a 'coalition' column (player names joined by '+', empty for the "
            "empty coalition) and one numeric column per objective (plain decimal numbers such as 0.65 or 1e-3; "
            "no '1_000', no full-width digits; each column name once). Or a valuation run's compact game, "
            "RUN/game.npz (any number of sources, no model needed; use a sampled method beyond 22).",
        ),
    ],
    method: Annotated[str, typer.Option("--method", "-m", help=_METHOD_HELP)] = "exact",
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget", "-b", help="Maximum number of utility evaluations for sampled methods (default 1000 "
            "per player)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed for the sampled methods.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write RESULT.json here (atomically) instead of printing it to stdout; checked "
            "before the game is valued (a folder or an unwritable place: exit 2)."
        ),
    ] = None,
    players: Annotated[
        str | None,
        typer.Option(
            "--players", help="Comma-separated player names: fixes the player set and order (other names are "
            "errors)."
        ),
    ] = None,
    summary: Annotated[
        bool, typer.Option("--summary/--no-summary", help="Print a short human-readable table on stderr.")
    ] = True,
    progress: Annotated[
        bool, typer.Option("--progress", help="Show a progress bar on stderr while sampling.")
    ] = False,
) -> None:
    """Value every player of a coalition game given as a table (or a run's compact game.npz), per objective,
    with standard errors.

    Prints RESULT.json ({"method", "players", "objectives", "values": [{"player", "objective", "value",
    "std_err"}], ...}) on stdout, or writes it to --out. Bad tables exit with code 2 and name the row.
    """
    from valuation.games.estimators import value_table_file  # deferred: see the module docstring

    check_method(method, field="--method")  # before reading the table
    if out is not None:
        check_writable(out, field="--out")
    player_list = None
    if players is not None:
        player_list = [p.strip() for p in players.split(",")]
    if utilities.suffix.lower() == ".npz":
        result = _value_compact_file(utilities, method, budget, player_list, seed=seed, progress=progress)
    else:
        result = value_table_file(utilities, method, budget, players=player_list, seed=seed, progress=progress)
    text = json.dumps(result.to_json_dict(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
    if summary:
        _print_summary(result, out)


def _print_summary(result: ValuationResult, out: Path | None) -> None:
    """The values as a table on stderr (± std errs for sampled methods), the least-core ε, where --out went."""
    table = Table(title=f"{result.method} values ({result.n_evaluations} evaluations)")
    table.add_column("player")
    for objective in result.objectives:
        table.add_column(objective, justify="right")
    sampled = bool(result.std_errs.any())
    for i, player in enumerate(result.players):
        cells = []
        for k in range(len(result.objectives)):
            cell = f"{result.values[i, k]:.6g}"
            if sampled:
                cell += f" ± {result.std_errs[i, k]:.2g}"
            cells.append(cell)
        table.add_row(player, *cells)
    console = safe_console(stderr=True)
    console.print(table)
    if "epsilon" in result.info:
        console.print(f"least-core epsilon: {result.info['epsilon']}")
    if out is not None:
        console.print(f"wrote {out}")


def _value_compact_file(
    path: Path, method: str, budget: int | None, players: list[str] | None, *, seed: int, progress: bool
) -> ValuationResult:
    """`approximate` on a run's compact game (`valuation.coalition_utility.compact.PairGame.load`); with
    ``--players`` the values of exactly those sources, in that order (the others absent from every coalition)."""
    from valuation.coalition_utility.compact import PairGame
    from valuation.errors import InputError
    from valuation.games.estimators import approximate
    from valuation.games.game import GroupedGame

    game = PairGame.load(path, field="--utilities")
    if players is None:
        return approximate(game, method, budget, seed=seed, progress=progress)
    unknown = [p for p in players if p not in game.players]
    if unknown:
        raise InputError(f"unknown player {unknown[0]!r} (the game has: {', '.join(game.players)})", field="--players")
    return approximate(GroupedGame(game, {p: (p,) for p in players}), method, budget, seed=seed, progress=progress)
