"""`payoutsim data …`: the command group for preference data (inspect here; synth in synth_cmd.py)."""

from __future__ import annotations

import typer

from market.cli import app

data_app = typer.Typer(help="Preference data: generate the synthetic market corpus, inspect any dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
