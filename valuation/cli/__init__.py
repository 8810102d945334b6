"""The valuation layer's commands: data, models, train, value, rewards, shapley, bench.

Each module holds its own small Typer app; `app` merges them in the pipeline's order of work. The root
command line (`market.cli`) composes this app with the market layer's. Heavy dependencies (torch,
transformers, …) are imported inside the commands that need them, so `payoutsim --help` stays fast.
"""

from __future__ import annotations

import typer

from valuation.cli import bench, data, models, rewards, shapley, train_value

app = typer.Typer()
for _module in (data, models, train_value, rewards, shapley, bench):
    app.add_typer(_module.app)

__all__ = ["app"]
