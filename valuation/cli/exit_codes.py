"""Running a Typer app as a command: the one place that turns errors into exit codes and messages."""

from __future__ import annotations

import typer

from valuation.errors import PayoutsimError
from valuation.text import printable


def run_app(app: typer.Typer, argv: list[str] | None, prog_name: str) -> int:
    """Run ``app`` on ``argv`` (default: the process's arguments) and return the exit code.

    0 ok; a `PayoutsimError` prints ``error: <message>`` on stderr (control characters escaped: one line,
    nothing a terminal interprets) and returns its code (2 for bad input);
    usage errors and ``typer.Exit`` return click's code.
    """
    try:
        app(args=argv, prog_name=prog_name, standalone_mode=True)
    except PayoutsimError as err:
        typer.echo(f"error: {printable(str(err))}", err=True)
        return err.exit_code
    except SystemExit as ex:  # click's standalone mode exits with the command's / usage error's code
        code = ex.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
