"""What user text may hold: control characters (rejected in names, escaped when printed) and the plain
ASCII number grammar of every number read from text.

**Control characters** are Unicode category ``Cc``: C0 (``\\x00``–``\\x1f``: NUL, tab, CR, LF, ESC …),
DEL (``\\x7f``) and C1 (``\\x80``–``\\x9f``, e.g. the one-byte CSI ``\\x9b``). A name (member, source,
player, objective, scenario, period) that holds one is rejected at load (`name_problem` says why);
anything else printed from user data passes through `printable` (JSON through `json_safe`), which
writes each control character as its Python escape (``\\x1b``, ``\\t``, ``\\n``, ``\\x00``), so an escape
sequence or a NUL never reaches the terminal and one message stays one line.

**Numbers read from text** (GAME.csv cells, decimal strings of a scenario) must be plain ASCII decimals:
an optional sign, ASCII digits with an optional fraction (``12``, ``12.5``, ``.5``, ``12.``), and, only
where the value is a float, an optional exponent (``1e-3``, ``2.5E+2``). Blanks (spaces, tabs) around the
number are ignored. Not accepted: digit group separators (``1_000``, ``1,000``, ``1 000``), non-ASCII
digits (full-width ``０.６５``, Arabic-Indic ``٣``), ``nan``/``inf``, hexadecimal (``0x10``).

Imports nothing of the project (the game engine uses it).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NON_ASCII_CONTROL = re.compile(r"[\x7f-\x9f]")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BLANKS = " \t"

NUMBER_RULE = "a plain decimal number (ASCII digits, optional sign and fraction; no '_', no spaces inside)"
FLOAT_RULE = (
    "a plain decimal number (ASCII digits, optional sign, fraction and exponent such as 1e-3; no '_', no spaces "
    "inside)"
)


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # '\x1b' -> \x1b, '\t' -> \t, '\x00' -> \x00


def printable(text: str) -> str:
    """`text` with every control character written as its Python escape (``"\\x1b[31m"`` → ``\\x1b[31m``)."""
    return _CONTROL.sub(_escape, text)


def name_problem(text: str) -> str | None:
    """Why `text` cannot be a name (a control character, with its position counted from 1), or None."""
    match = _CONTROL.search(text)
    if match is None:
        return None
    return (
        f"contains the control character {_escape(match)} at position {match.start() + 1}: names must be printable "
        "text (no tabs, line breaks, escape sequences or NUL)"
    )


def plain_number(text: str, *, exponent: bool) -> str | None:
    """`text` without surrounding blanks when it is a plain ASCII decimal (module docstring; an exponent only
    when `exponent`), else None."""
    stripped = text.strip(_BLANKS)
    pattern = _FLOAT if exponent else _DECIMAL
    return stripped if pattern.fullmatch(stripped) else None



def json_safe(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with DEL and the C1 controls also written as
    ``\\u`` escapes: `json.dumps` escapes only ``\\x00``–``\\x1f``. The JSON value is unchanged."""
    return _NON_ASCII_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
