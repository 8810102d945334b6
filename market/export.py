"""Export ledger rows to CSV and Parquet, atomically, with CSV formula-injection escaping.

Columns: `market.ledger.EXPORT_COLUMNS` — at least ``run_id, period, member, rule, value, share, amount,
currency``. ``amount`` is a decimal string with exactly the currency's minor digits ("1234.50" EUR,
"1234" JPY) and ``amount_minor`` the same amount as an integer; ``value``, ``std_err``, ``share``,
``seq`` and ``amount_minor`` are numeric columns. The uncertainty of each payout (`market.uncertainty`):
``value_lo``/``value_hi`` (numeric) bound the weighted value, ``amount_se`` (numeric, currency units) is
the amount's standard error and ``amount_lo``/``amount_hi`` (decimal strings like ``amount``) its
interval; all empty for runs recorded without it. ``line`` is ``payout`` for a member's row and ``held``
for the one extra row of a run that held its pool (``no_value = "hold"``: no member created value; no
member, value or share, the held amount), so every run's ``amount_minor`` sums to its pool.

**Formula injection (CSV only).** Spreadsheets evaluate a cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return as a formula (``=HYPERLINK(...)``, ``@SUM(...)``, DDE payloads). Every
*text* cell of the CSV that starts with one of those characters is written with a leading single quote
(``'=HYPERLINK("x")``), which spreadsheets display as inert text. So that the escaping is reversible, a
text cell that already starts with a single quote gets one more (member ``'=1+2`` is written ``''=1+2``,
member ``=1+2`` is written ``'=1+2``): to read a text cell back, drop one leading quote if there is one
(`unescape_cell`). Numeric columns and the numeric ``amount`` string are never altered, so they stay
numbers. Parquet is typed and is not evaluated by spreadsheets: its text cells are written verbatim.

Both writers write to a temporary file in the destination folder and `os.replace` it into place, so
the destination is either the old file or the complete new one, never half-written.

polars is imported inside the writers: ``import polars`` takes about 0.15 s, which commands that never
export would pay for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from market.ledger import EXPORT_COLUMNS, export_rows
from valuation.files import atomic_path, check_outputs

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"
NUMERIC_TEXT_COLUMNS = frozenset({"amount", "amount_lo", "amount_hi"})  # decimal strings we produce: numbers, not text


def escape_cell(text: str) -> str:
    """`text` with a leading ``'`` if it starts with a formula character (``= + - @`` tab CR) or with ``'``
    itself, so that distinct cells stay distinct and `unescape_cell` gives `text` back."""
    return ESCAPE + text if text.startswith((*FORMULA_PREFIXES, ESCAPE)) else text


def unescape_cell(text: str) -> str:
    """The cell `escape_cell` was given: `text` without one leading ``'`` (unchanged without one)."""
    return text.removeprefix(ESCAPE)


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    import polars as pl

    schema: dict[str, Any] = {}
    for col in columns:
        if col in ("seq", "amount_minor"):
            schema[col] = pl.Int64
        elif col in ("value", "std_err", "share", "value_lo", "value_hi", "amount_se"):
            schema[col] = pl.Float64
        else:
            schema[col] = pl.String
    data = {col: [row.get(col) for row in rows] for col in columns}
    return pl.DataFrame(data, schema=schema)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str]) -> Path:
    """Write `rows` (dicts) as CSV with `columns`, escaping text cells (module docstring). Atomic."""
    import polars as pl

    frame = _frame(rows, columns)
    text_cols = [c for c, t in frame.schema.items() if t == pl.String and c not in NUMERIC_TEXT_COLUMNS]
    frame = frame.with_columns(
        pl.col(c).map_elements(escape_cell, return_dtype=pl.String, skip_nulls=True) for c in text_cols
    )
    return _atomic(path, lambda tmp: frame.write_csv(tmp))


def write_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str]) -> Path:
    """Write `rows` as a typed Parquet file with `columns` (text verbatim). Atomic."""
    frame = _frame(rows, columns)
    return _atomic(path, lambda tmp: frame.write_parquet(tmp))


def export_ledger(ledger: str | Path, *, csv: str | Path | None = None, parquet: str | Path | None = None) -> int:
    """Export every payout row of `ledger` to CSV and/or Parquet. Returns the number of rows.

    Both output paths are checked first (`valuation.files.check_outputs`): when either cannot be written
    (a folder, a path under a file, an unwritable folder) an `InputError` names it and neither file is
    written.
    """
    check_outputs({"--csv": csv, "--parquet": parquet})
    rows = export_rows(ledger)
    if csv is not None:
        write_csv(rows, csv, EXPORT_COLUMNS)
    if parquet is not None:
        write_parquet(rows, parquet, EXPORT_COLUMNS)
    return len(rows)


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)
