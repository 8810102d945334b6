"""`payoutsim bench`: runs the benchmark suite of a source checkout (``python -m benchmarks``).

The benchmarks (`benchmarks/` beside `valuation/` in the repository) are development tools, outside the
installed package; the product never imports them. This command only passes its arguments through to
``python -m benchmarks`` of the checkout that holds this `valuation` package and returns its exit code
(options, tables, report and exit codes are the suite's: ``payoutsim bench --help`` prints them). The
suite runs in the caller's directory, so a relative ``--out`` lands where it always did; it finds the
checkout through ``PYTHONPATH`` (first) and ``python -P`` (the caller's directory is not searched). Installed
from a wheel there is no checkout beside the package: it says so and exits with 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

import valuation

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps

#: Every argument, ``--help`` included, goes to the suite's own command line.
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def benchmarks_folder() -> Path:
    """Where a source checkout keeps the suite: ``benchmarks/`` next to the `valuation` package's folder."""
    return Path(valuation.__file__).resolve().parents[1] / "benchmarks"


@app.command("bench", context_settings=PASS_THROUGH)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite: print a table per part and write one JSON report.

    Source checkouts only: runs the checkout's ``python -m benchmarks`` with the same arguments.
    """
    folder = benchmarks_folder()
    if not (folder / "__main__.py").is_file():
        typer.echo(
            f"error: the benchmarks ship with the source checkout, not the installed package (no {folder}); "
            "run `python -m benchmarks` in a clone of the repository",
            err=True,
        )
        raise typer.Exit(2)
    root = str(folder.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-P", "-m", "benchmarks", *ctx.args], env=env, check=False)
    raise typer.Exit(done.returncode)
