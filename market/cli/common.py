"""What the market commands share: option types and warnings on stderr (the default ledger: `market.defaults`).

Light on purpose: every market command module imports it at module top, so it imports only typer and
`valuation.text` (plain `re`; see `market.cli.payout` for the measured cost of importing the market library
at module top).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from valuation.text import printable

LedgerOpt = Annotated[
    Path,
    typer.Option(
        "--ledger",
        help="The ledger file (DuckDB): an existing payoutsim ledger, or a new path (created on first use). "
        "Anything else (a CSV, a directory, another DuckDB database) is refused with exit 2; a damaged file "
        "too (\"the ledger file is damaged\"); exit 3 while another process writes it.",
    ),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="A file holding the ledger's MAC key (at least 16 bytes; trailing newlines ignored). Default: the "
        "environment variable PAYOUTSIM_LEDGER_KEY; neither: no MAC. The key is never stored in the ledger.",
        show_default=False,
    ),
]
ScenarioArg = Annotated[
    Path, typer.Argument(
        help="The scenario TOML (a pooling agreement, UTF-8 without BOM; see market/scenario/schema.py).",
        show_default=False,
    )
]


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (control characters escaped: `valuation.text.printable`)."""
    typer.echo(f"warning: {printable(message)}", err=True)
