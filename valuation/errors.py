"""Errors the user can act on.

`OutputError` (exit 1) is raised when an output cannot be written for lack of space or an I/O error.

`InputError` is raised for bad user input (data files, game tables, configs, scenarios). The CLI turns
it into a one-line message on stderr and exit code 2. The message names the file, the row/line and the
field whenever they are known, e.g. ``pairs.jsonl: line 7: field 'chosen': empty response``. Positions
are counted from 1 everywhere a person reads them (rows, lines, list items in a field path: `field_path`).
A message is one terminal-safe line: control characters of the input it echoes (a file name, a cell) are
written as escapes (``\\x1b``; `valuation.text.printable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from valuation.text import printable


class PayoutsimError(Exception):
    """Base class of every error payoutsim raises on purpose."""

    exit_code: int = 1


class InputError(PayoutsimError):
    """Bad user input. Exit code 2.

    Args:
        message: what is wrong and what was expected.
        file: the offending file, if any.
        row: a human-facing location such as ``"line 7"`` or ``"row 3"`` (1-based), or an int taken as a
            1-based row number.
        field: the offending field / column / key.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.row = f"row {row}" if isinstance(row, int) else row
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.row) if p]
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.message)
        return printable(": ".join(parts))


class OutputError(PayoutsimError):
    """An output file could not be written (disk full, quota exceeded, file too large, I/O error). Exit code 1.

    Raised by `valuation.files.atomic_path`, which has already removed its temporary file: the destination
    is untouched. The message is one line naming the file and the reason.
    """

    exit_code = 1

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        #: what failed without the note on what was left behind (callers that clean up add their own)
        self.detail = message if detail is None else detail


def field_path(loc: Sequence[int | str]) -> str:
    """A field's path as a person reads it in the file: ``("members", 0, "sources")`` → ``members[1].sources``.

    List positions count from 1 (the first ``[[members]]`` table is ``members[1]``), like rows and lines.
    Takes a pydantic error location or any sequence of keys and 0-based list indices.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += f".{part}" if out else str(part)
    return out
