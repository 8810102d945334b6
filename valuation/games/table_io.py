"""GAME.csv (and Parquet) game tables: reading them with errors that name the row, writing them back.

GAME.csv format (read by `read_game_csv`, written by `write_game_csv`; ``TableGame.from_csv`` /
``TableGame.to_csv`` wrap them):

* a ``coalition`` column: player names joined by ``+`` (``"a+b"``); the empty cell is ∅;
  spaces around names are ignored; a name holding a control character (a tab, a line break, an escape
  sequence, NUL) is an error, as is a duplicated column name; row order is free;
* one numeric column per objective (every other column, in file order); each cell a plain ASCII decimal
  number, exponent allowed (``0.65``, ``-.5``, ``1e-3``; not ``1_000``, full-width ``０.６５`` or ``nan``:
  `valuation.text`).

A valuation run's ``game.parquet`` reads as its game: its ``<objective>_std_err``, ``<objective>_n_pairs``
and ``size`` columns are not objectives (`run_table_extras`); a scenario uses the standard errors for the
payout's uncertainty (`market.scenario.inputs.read_uncertainty`).

The player set is the union of the names that appear. Order: players in the order their single-player
rows first appear, then any players that have no single-player row, sorted by name. An explicit
``players=`` list fixes the set and the order instead (names outside it are "unknown player" errors).

Rows in error messages are numbered as in a spreadsheet: the header is row 1, the first data row is
row 2. Parquet files use the same numbering (row 1 = the column names) so messages read the same.

polars is imported inside the two readers: the rest of the engine needs only numpy/scipy, and
``import polars`` costs ≈ 0.13 s that a game built in memory never needs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from valuation.errors import InputError
from valuation.files import atomic_write_text, require_file
from valuation.games.coalitions import (
    MAX_TABLE_PLAYERS,
    SEPARATOR,
    coalition_index,
    coalition_label,
    describe_coalition,
    validate_names,
)
from valuation.text import FLOAT_RULE, name_problem, plain_number

COALITION_COLUMN = "coalition"
FIRST_DATA_ROW = 2  # spreadsheet numbering: row 1 is the header


@dataclass(frozen=True)
class TableContents:
    """A parsed game table, ready for ``TableGame(players, objectives, coalitions, utilities, source=)``.

    Attributes:
        players: player names in table order (module docstring).
        objectives: objective column names, in file order.
        coalitions: ``bool[k, n]``, one row per data row, no duplicates.
        utilities: ``float[k, m]`` finite utilities, rows aligned with ``coalitions``.
        source: the file name, for error messages.
    """

    players: list[str]
    objectives: list[str]
    coalitions: np.ndarray
    utilities: np.ndarray
    source: str


def read_game_csv(path: str | Path, *, players: Sequence[str] | None = None) -> TableContents:
    """Read GAME.csv (module docstring). Bad input raises ``InputError`` naming the row."""
    import polars as pl

    path = require_file(path)
    try:
        header = pl.read_csv(path, has_header=False, n_rows=1, infer_schema=False).row(0)
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except Exception as err:  # polars raises several error types for malformed CSV
        raise InputError(f"cannot read CSV: {str(err).splitlines()[0]}", file=path) from err
    _check_unique_columns(["" if name is None else str(name) for name in header], str(path))
    columns = {c: [None if v is None else str(v) for v in frame[c].to_list()] for c in frame.columns}
    return parse_game_columns(columns, list(frame.columns), source=str(path), players=players)


def read_game_parquet(path: str | Path, *, players: Sequence[str] | None = None) -> TableContents:
    """Read a Parquet table with the GAME.csv columns (rows numbered as in GAME.csv)."""
    import polars as pl

    path = require_file(path)
    try:
        frame = pl.read_parquet(path)
    except Exception as err:
        raise InputError(f"cannot read Parquet: {str(err).splitlines()[0]}", file=path) from err
    columns: dict[str, list[object]] = {c: frame[c].to_list() for c in frame.columns}
    return parse_game_columns(columns, list(frame.columns), source=str(path), players=players)


def parse_game_columns(
    columns: Mapping[str, list[object]],
    names: list[str],
    *,
    source: str,
    players: Sequence[str] | None,
) -> TableContents:
    """Check and parse the columns of a game table (``names``: the columns in file order).

    Checks, in order: the header, at least one row, each coalition cell, the player set, duplicated
    coalitions, then each utility cell (objective by objective). The first problem raises ``InputError``.
    """
    _check_unique_columns([str(name) for name in names], source)
    objectives = _objective_columns(columns, names, source)
    raw_coalitions = columns[COALITION_COLUMN]
    n_rows = len(raw_coalitions)
    if n_rows == 0:
        raise InputError("the table has no rows", file=source)
    members = [_parse_coalition_cell(cell, source, i + FIRST_DATA_ROW) for i, cell in enumerate(raw_coalitions)]
    player_list = _player_order(members, players, source)
    masks = _coalition_masks(members, player_list, source)
    utilities = np.empty((n_rows, len(objectives)), dtype=float)
    for k, name in enumerate(objectives):
        for i, cell in enumerate(columns[name]):
            utilities[i, k] = _parse_utility(cell, source=source, row=i + FIRST_DATA_ROW, field=str(name))
    return TableContents(player_list, [str(o) for o in objectives], masks, utilities, source)


def game_csv_text(
    players: Sequence[str], objectives: Sequence[str], coalitions: np.ndarray, utilities: np.ndarray
) -> str:
    """GAME.csv text of the rows given (in the order given), ``repr`` floats: an exact round trip."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([COALITION_COLUMN, *objectives])
    for mask, utils in zip(coalitions, utilities, strict=True):
        writer.writerow([coalition_label(mask, players), *(repr(float(u)) for u in utils)])
    return buffer.getvalue()


def write_game_csv(
    path: str | Path,
    players: Sequence[str],
    objectives: Sequence[str],
    coalitions: np.ndarray,
    utilities: np.ndarray,
) -> None:
    """Write ``game_csv_text`` to ``path`` atomically."""
    atomic_write_text(path, game_csv_text(players, objectives, coalitions, utilities))


# ---------------------------------------------------------------------------------------------------
# the steps of parse_game_columns


def _check_unique_columns(header: Sequence[str], source: str) -> None:
    """``InputError`` naming the first column name the header repeats (polars would rename the second
    ``helpfulness`` to ``helpfulness_duplicated_0`` and make it an objective of its own)."""
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(
                f"duplicated column {name!r} (columns {seen[name]} and {position}): give each column once",
                file=source,
                row=1,
                field=name,
            )
        seen[name] = position


def run_table_extras(names: Sequence[str]) -> set[str]:
    """The columns of a valuation run's ``game.parquet`` that are not objectives: ``<objective>_std_err`` and
    ``<objective>_n_pairs`` for an objective column present, and ``size`` alongside them."""
    present = set(names)
    extras = {
        c for c in names for suffix in ("_std_err", "_n_pairs") if c.endswith(suffix) and c[: -len(suffix)] in present
    }
    if extras and "size" in present:
        extras.add("size")
    return extras


def _objective_columns(columns: Mapping[str, list[object]], names: list[str], source: str) -> list[str]:
    """The objective columns (all but ``coalition``); ``InputError`` for a bad header."""
    if COALITION_COLUMN not in columns:
        raise InputError(
            f"no '{COALITION_COLUMN}' column (columns: {', '.join(names) or 'none'})",
            file=source,
            field=COALITION_COLUMN,
        )
    objectives = [c for c in names if c != COALITION_COLUMN and c not in run_table_extras(names)]
    if not objectives:
        raise InputError("no objective column: add one numeric column per objective", file=source)
    for name in objectives:
        if not str(name).strip():
            raise InputError("empty objective column name", file=source)
        problem = name_problem(str(name))
        if problem is not None:
            raise InputError(f"objective column name {problem}", file=source, row=1, field=str(name))
    return objectives


def _parse_coalition_cell(cell: object, source: str, row: int) -> tuple[str, ...]:
    """The player names of one coalition cell (``()`` for ∅); control characters, stray ``+`` and repeats
    raise (spaces around names are dropped)."""
    text = "" if cell is None else str(cell)
    problem = name_problem(text)
    if problem is not None:
        raise InputError(f"player name {problem}", file=source, row=row, field=COALITION_COLUMN)
    text = text.strip()
    if not text:
        return ()
    names_in = [part.strip() for part in text.split(SEPARATOR)]
    if any(not part for part in names_in):
        raise InputError(
            f"empty player name in coalition {text!r} (stray '{SEPARATOR}')",
            file=source,
            row=row,
            field=COALITION_COLUMN,
        )
    if len(set(names_in)) != len(names_in):
        raise InputError(f"player repeated in coalition {text!r}", file=source, row=row, field=COALITION_COLUMN)
    return tuple(names_in)


def _player_order(members: list[tuple[str, ...]], players: Sequence[str] | None, source: str) -> list[str]:
    """The player set and order (module docstring); unknown names and too many players raise."""
    if players is not None:
        player_list = list(validate_names(players, "player"))
        known = set(player_list)
        for i, names_in in enumerate(members):
            for name in names_in:
                if name not in known:
                    raise InputError(
                        f"unknown player {name!r} (players: {', '.join(player_list)})",
                        file=source,
                        row=i + FIRST_DATA_ROW,
                        field=COALITION_COLUMN,
                    )
    else:
        player_list = []
        for names_in in members:
            if len(names_in) == 1 and names_in[0] not in player_list:
                player_list.append(names_in[0])
        singles = set(player_list)
        others = sorted({name for names_in in members for name in names_in} - singles)
        player_list.extend(others)
    n = len(player_list)
    if n > MAX_TABLE_PLAYERS:
        raise InputError(f"{n} players: a table game holds at most {MAX_TABLE_PLAYERS}", file=source)
    return player_list


def _coalition_masks(members: list[tuple[str, ...]], player_list: list[str], source: str) -> np.ndarray:
    """``bool[k, n]`` of the parsed coalitions; a duplicated coalition raises naming both rows."""
    position = {p: j for j, p in enumerate(player_list)}
    masks = np.zeros((len(members), len(player_list)), dtype=bool)
    for i, names_in in enumerate(members):
        masks[i, [position[p] for p in names_in]] = True
    keys = coalition_index(masks)
    first_row: dict[int, int] = {}
    for i, key in enumerate(keys.tolist()):
        if key in first_row:
            label = coalition_label(masks[i], player_list)
            raise InputError(
                f"duplicated coalition {describe_coalition(label)} (also on row {first_row[key]})",
                file=source,
                row=i + FIRST_DATA_ROW,
                field=COALITION_COLUMN,
            )
        first_row[key] = i + FIRST_DATA_ROW
    return masks


NON_FINITE = frozenset({"nan", "inf", "infinity"})


def _parse_utility(cell: object, *, source: str, row: int, field: str) -> float:
    """One utility cell as a finite float; empty, non-numeric and non-finite cells raise. A text cell must
    be a plain ASCII decimal number, exponent allowed (`valuation.text.plain_number`)."""
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        raise InputError("missing utility (empty cell)", file=source, row=row, field=field)
    if isinstance(cell, bool):
        raise InputError(f"utility must be a number, got {cell!r}", file=source, row=row, field=field)
    if isinstance(cell, str):
        text = plain_number(cell, exponent=True)
        if text is None and cell.strip().lower().lstrip("+-") not in NON_FINITE:
            raise InputError(
                f"utility must be a number, got {cell!r}: write {FLOAT_RULE}", file=source, row=row, field=field
            )
        value = float(cell.strip() if text is None else text)
    else:
        try:
            value = float(cell)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"utility must be a number, got {cell!r}", file=source, row=row, field=field) from None
    if not np.isfinite(value):
        raise InputError(f"utility must be a finite number, got {cell!r}", file=source, row=row, field=field)
    return value
