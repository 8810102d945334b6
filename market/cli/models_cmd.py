"""`payoutsim models …`: prepare base models (tiny, smollm2, any local HF directory)."""

from __future__ import annotations

import typer

from market.cli import app

models_app = typer.Typer(help="Base models: build or fetch them once into the cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")
