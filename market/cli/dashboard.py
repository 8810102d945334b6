"""`payoutsim dashboard`: start the Streamlit dashboard on 127.0.0.1.

The app lives in the `dashboard` package (one layer above `market`); this module only locates its entry
file and runs ``streamlit run`` in a subprocess, so `market` never imports the dashboard.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from market.defaults import DEFAULT_LEDGER, LEDGER_ENV
from valuation.text import printable

app = typer.Typer()  # this module's commands; the root app (market.cli) composes the layers' apps




def dashboard_app_path() -> Path:
    """The dashboard's entry script (``dashboard/app.py``), found without importing the package."""
    spec = importlib.util.find_spec("dashboard")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "app.py"
            if candidate.is_file():
                return candidate
    return Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def streamlit_command(app_path: Path, port: int, address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line: bound to `address`, headless, no usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.address", address,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]


@app.command("dashboard")
def dashboard_cmd(
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger",
            help=f"The payout ledger (DuckDB) to explore, opened read-only (default: ${LEDGER_ENV}, else {DEFAULT_LEDGER}).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port on 127.0.0.1.")] = 8501,
) -> None:
    """Start the dashboard (Streamlit) on http://127.0.0.1:PORT: payouts, trade-offs, pooling what-ifs,
    coalitions and the ledger. Stop it with Ctrl+C."""
    env = dict(os.environ)
    if ledger is not None:
        env[LEDGER_ENV] = str(ledger.expanduser().resolve())
    app_path = dashboard_app_path()
    typer.echo(printable(f"payoutsim dashboard: http://127.0.0.1:{port} (ledger {env.get(LEDGER_ENV, str(DEFAULT_LEDGER))})"))
    cmd = streamlit_command(app_path, port)
    if os.name == "posix":
        # Replace this process with Streamlit, so a signal to `payoutsim dashboard` reaches the server itself
        # (a child process would outlive a terminated parent).
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, cmd, env)
    try:
        code = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)
