"""What a ledger path holds, and what DuckDB's errors on it mean: the checks `market.ledger.connect` runs.

A ledger path must be absent (a new ledger) or a DuckDB database file. `check_ledger_file` rejects
everything else before DuckDB sees it: DuckDB 2.0 opens an existing CSV, Parquet or JSON file as an
*in-memory* database, so writes to it would vanish silently (`check_on_disk` re-checks that after opening).

DuckDB's errors are classified by type and by the phrase DuckDB uses for each case (checked on DuckDB
2.0.1; `tests/test_market_ledger.py` flips bytes of a real ledger and truncates it to keep this honest):

* another process holds the file: ``IOException`` "Could not set lock on file … Conflicting lock is held"
  → `LedgerBusyError` (exit 3, retry later);
* the file is damaged: a block's checksum does not match (DuckDB raises its base ``Error``: "Corrupt
  database file: computed checksum … does not match stored checksum … in block …"), a block lies beyond
  the end of the file (``IOException`` "Could not read enough bytes"), DuckDB's own header is not valid,
  or a ``SerializationException`` / ``InternalException`` while reading its catalog → `LedgerDamagedError`
  (exit 2). A truncated file is also caught when opened, before a query happens to read a missing block
  (`check_complete`).

duckdb is imported inside the functions (see `market.ledger`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from valuation.errors import InputError, OutputError, PayoutsimError
from valuation.files import NOT_A_FILE

if TYPE_CHECKING:
    import duckdb

DUCKDB_MAGIC = b"DUCK"
"""Bytes 8–11 of every DuckDB database file (after the main header's 8-byte checksum)."""
BLOCKS_START = 3 * 4096
"""DuckDB's storage layout: a main header and two database headers of 4 KiB each, then fixed-size blocks
(``block_size`` bytes each, block ``i`` at ``BLOCKS_START + i * block_size``)."""

#: DuckDB's words when the file system refuses a write (disk full, quota, file size limit, I/O error).
_WRITE_PHRASES = ("Could not write file", "No space left on device", "File too large", "Disk quota exceeded")
_LOCK_PHRASES = ("Could not set lock on file", "Conflicting lock is held")
_DAMAGE_PHRASES = (
    "Corrupt database file",
    "checksum",
    "Could not read enough bytes",
    "not a valid DuckDB database file",
)


class LedgerBusyError(PayoutsimError):
    """Another process holds the ledger file open for writing. Exit code 3: retry when it is done."""

    exit_code = 3


class LedgerDamagedError(InputError):
    """The ledger file is damaged (a checksum mismatch, truncated, an unreadable header). Exit code 2."""

    def __init__(self, path: str | Path, detail: str) -> None:
        super().__init__(
            f"the ledger file is damaged: {detail} (restore it from a backup)", file=path
        )


def check_ledger_file(path: Path) -> None:
    """Raise `InputError` unless `path` is absent or a regular file that starts like a DuckDB database.

    A directory, a special file, an empty file and a file without DuckDB's header (a CSV, a Parquet file,
    text, …) are refused with what they are; a former ledger whose header bytes were damaged is refused
    with the same message, which says so.
    """
    try:
        if not path.exists():
            return
        if path.is_dir():
            raise InputError(f"{NOT_A_FILE} (give a ledger file path such as DIR/ledger.duckdb)", file=path)
        if not path.is_file():
            raise InputError("is not a regular file, so it cannot be a ledger", file=path)
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as err:
        raise InputError(f"cannot read the ledger file: {err.strerror or err}", file=path) from None
    if not head:
        raise InputError("is an empty file, not a payoutsim ledger (remove it, or give a new path)", file=path)
    if head[8:12] != DUCKDB_MAGIC:
        raise InputError(
            "not a payoutsim ledger: not a DuckDB database file (no DuckDB header: a CSV or other file, or a "
            "damaged ledger)",
            file=path,
        )


def ledger_error(err: duckdb.Error, path: Path) -> PayoutsimError | None:
    """What `err` (raised by DuckDB while opening or reading the ledger at `path`) means for the user:
    `LedgerBusyError`, `OutputError` (the file system refused a write: nothing was recorded),
    `LedgerDamagedError`, or None when it is none of these (the caller decides)."""
    import duckdb

    text = str(err)
    first = text.splitlines()[0] if text else type(err).__name__
    if isinstance(err, duckdb.IOException) and any(p in text for p in _LOCK_PHRASES):
        return LedgerBusyError(
            f"{path}: the ledger is in use by another process (DuckDB allows one writer at a time); "
            f"retry when it has finished ({first})"
        )
    if any(p in text for p in _WRITE_PHRASES):
        return OutputError(
            f"cannot write the ledger {path}: {first}; nothing was recorded (the transaction was rolled back)"
        )
    damaged_type = type(err) is duckdb.Error or isinstance(err, (duckdb.SerializationException, duckdb.InternalException))
    if damaged_type or any(p in text for p in _DAMAGE_PHRASES):
        return LedgerDamagedError(path, first)
    return None


def check_on_disk(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise `InputError` when DuckDB did not open `path` as a database file (an in-memory database)."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if row is None or not row[0]:
        raise InputError("not a payoutsim ledger: DuckDB did not open it as a database file", file=path)


def check_complete(con: duckdb.DuckDBPyConnection, path: Path, tables: list[str]) -> None:
    """Raise `LedgerDamagedError` when the file is shorter than the blocks its `tables` and catalog use
    (a truncated file: DuckDB reads blocks lazily, so a query that misses them would not notice)."""
    size_row = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()
    block_size = int(size_row[0]) if size_row and size_row[0] else 0
    if block_size <= 0:
        return
    highest = [r[0] for r in con.execute("SELECT max(block_id) FROM pragma_metadata_info()").fetchall()]
    for table in tables:
        quoted = table.replace("'", "''")
        highest += [
            r[0]
            for r in con.execute(
                "SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1))) "
                f"FROM pragma_storage_info('{quoted}') WHERE persistent"
            ).fetchall()
        ]
    used = [int(b) for b in highest if b is not None and int(b) >= 0]
    if not used:
        return
    need = BLOCKS_START + (max(used) + 1) * block_size
    have = path.stat().st_size
    if have < need:
        raise LedgerDamagedError(path, f"the file is {have} bytes but its blocks need {need} (truncated?)")


def read_every_row(con: duckdb.DuckDBPyConnection, tables: list[str] | tuple[str, ...]) -> None:
    """Read every value of `tables` (a hash over all columns), so DuckDB checks the checksum of every
    block they use; a damaged block raises here (classified by the caller: `connect`)."""
    for table in tables:
        quoted = table.replace('"', '""')
        con.execute(f'SELECT count(*), bit_xor(hash(*COLUMNS(*))) FROM "{quoted}"').fetchone()


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back `con`'s transaction, ignoring DuckDB's errors (none active: a failed commit rolled back)."""
    import duckdb

    with contextlib.suppress(duckdb.Error):
        con.rollback()


def close_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """Close `con`, ignoring DuckDB's errors (used while another error is already being raised)."""
    import duckdb

    with contextlib.suppress(duckdb.Error):
        con.close()
