"""The `payoutsim` command line: one sub-command group per job.

Every command imports its heavy dependencies (torch, transformers, …) lazily inside the command, so
`payoutsim --help` stays fast. `InputError` anywhere below becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from valuation.errors import PayoutsimError

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


# Command modules in the order `payoutsim --help` lists them: the pipeline's order of work.
COMMAND_MODULES = (
    "data_cmd",  # data inspect
    "synth_cmd",  # data synth
    "models_cmd",  # models prepare|list
    "valuation_cmd",  # train, value
    "rewards_cmd",  # rewards train
    "game_cmd",  # shapley
    "market_cmd",  # payout, pool compare, ledger show|export|verify
    "run_cmd",  # run (end to end)
    "bench_cmd",  # bench
    "dashboard_cmd",  # dashboard
)


def _register() -> None:
    """Import every command module; each adds its commands / sub-groups to `app` on import."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"market.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Returns the process exit code (0 ok, 2 bad input or usage)."""
    _register()
    try:
        app(args=argv, prog_name="payoutsim", standalone_mode=True)
    except PayoutsimError as err:
        typer.echo(f"error: {err}", err=True)
        return err.exit_code
    except SystemExit as ex:  # click's standalone mode exits with the command's / usage error's code
        code = ex.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def run() -> None:
    sys.exit(main())
