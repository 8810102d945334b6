"""The `payoutsim` command line: the root app composes each layer's commands, nothing else.

The valuation layer's commands (data, models, train, value, rewards, shapley, bench) come from
`valuation.cli`; the market layer's (payout, pool, ledger, run, dashboard) from the modules beside this
one. Every command imports its heavy dependencies (torch, transformers, …) inside the command, so
`payoutsim --help` stays fast. `PayoutsimError` anywhere below becomes a one-line message and its exit
code (2 for bad input).
"""

from __future__ import annotations

import sys

import typer

from market.cli import dashboard, ledger, payout, pool
from market.cli import run as run_command
from valuation.cli import app as valuation_app
from valuation.cli.exit_codes import run_app

app = typer.Typer(
    name="payoutsim",
    help=(
        "Data-marketplace payout simulator. Values each data owner's preference data per objective "
        "(Shapley values via per-source DPO adapters and language-model arithmetic) and splits the "
        "pool's revenue fairly, stably and auditably."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# The layers' commands in the order `payoutsim --help` lists them: the pipeline's order of work.
app.add_typer(valuation_app)
for _module in (payout, pool, ledger, run_command, dashboard):
    app.add_typer(_module.app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns the process exit code (0 ok, 2 bad input or usage)."""
    return run_app(app, argv, "payoutsim")


def run() -> None:
    sys.exit(main())
