"""Coalition games: the seam between the model side (utilities) and the valuation math.

A **game** has players (data sources or members), objectives (e.g. helpfulness, harmlessness) and a
vectorised utility: ``game(coalitions)`` maps a boolean matrix ``bool[k, n]`` (row = coalition,
column j = player j present) to ``float[k, m]`` (one utility per objective).

Coalition indexing used throughout: coalition ``S`` has index ``Σ_{j∈S} 2^j`` (player j = bit j), so
``all_coalitions(n)[i]`` are the binary digits of ``i`` and a complete table is an array ``float[2^n, m]``
in that order.

GAME.csv format (``TableGame.from_csv``):

* a ``coalition`` column: player names joined by ``+`` (``"a+b"``); the empty cell is ∅;
  whitespace around names is ignored; row order is free;
* one numeric column per objective (every other column, in file order).

The player set is the union of the names that appear. Order: players in the order their single-player
rows first appear, then any players that have no single-player row, sorted by name. An explicit
``players=`` list fixes the set and the order instead (names outside it are "unknown player" errors).

Rows in error messages are numbered as in a spreadsheet: the header is row 1, the first data row is
row 2. Parquet files use the same numbering (row 1 = the column names) so messages read the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from valuation.errors import InputError
from valuation.files import atomic_write_text

COALITION_COLUMN = "coalition"
SEPARATOR = "+"
MAX_TABLE_PLAYERS = 62  # coalition indices are int64 bit masks


@runtime_checkable
class Game(Protocol):
    """A cooperative game with several objectives.

    ``__call__`` takes ``bool[k, n]`` (n = len(players)) and returns ``float[k, m]`` (m = len(objectives)).
    """

    players: tuple[str, ...]
    objectives: tuple[str, ...]

    def __call__(self, coalitions: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------------
# coalition helpers


def all_coalitions(n: int) -> np.ndarray:
    """All ``2^n`` coalitions as ``bool[2^n, n]``; row i holds the binary digits of i (player j = bit j)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    idx = np.arange(2**n, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1).astype(bool)


def coalition_index(coalitions: np.ndarray) -> np.ndarray:
    """Index ``Σ_{j∈S} 2^j`` of each row of ``bool[k, n]`` (n <= 62) as ``int64[k]``."""
    masks = np.asarray(coalitions, dtype=bool)
    if masks.ndim != 2:
        raise ValueError(f"coalitions must be a 2-D boolean matrix, got shape {masks.shape}")
    n = masks.shape[1]
    if n > MAX_TABLE_PLAYERS:
        raise ValueError(f"coalition_index supports at most {MAX_TABLE_PLAYERS} players, got {n}")
    weights = np.left_shift(np.int64(1), np.arange(n, dtype=np.int64))
    return masks.astype(np.int64) @ weights


def coalition_label(mask_row: np.ndarray | Sequence[bool], players: Sequence[str]) -> str:
    """Human/CSV label of one coalition: member names joined by ``+`` in player order; ``""`` for ∅."""
    row = np.asarray(mask_row, dtype=bool)
    return SEPARATOR.join(p for p, present in zip(players, row, strict=True) if present)


def popcount(indices: np.ndarray) -> np.ndarray:
    """Number of set bits of each non-negative int64 (coalition size from a coalition index)."""
    x = np.asarray(indices, dtype=np.uint64)
    counts = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        counts += _BYTE_POPCOUNT[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.intp)]
    return counts


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def validate_names(names: Sequence[str], kind: str) -> tuple[str, ...]:
    """Check player/objective names: non-empty strings, unique, no ``+`` (players). Returns a tuple."""
    out = tuple(str(x) for x in names)
    seen: set[str] = set()
    for name in out:
        if not name.strip():
            raise InputError(f"empty {kind} name", field=kind)
        if kind == "player" and SEPARATOR in name:
            raise InputError(f"player name {name!r} contains '{SEPARATOR}' (the coalition separator)")
        if name in seen:
            raise InputError(f"duplicated {kind} name {name!r}", field=kind)
        seen.add(name)
    return out


def _check_masks(coalitions: np.ndarray, n: int) -> np.ndarray:
    masks = np.asarray(coalitions)
    if masks.ndim != 2 or masks.shape[1] != n:
        raise ValueError(f"coalitions must have shape (k, {n}), got {masks.shape}")
    return masks.astype(bool, copy=False)


# ---------------------------------------------------------------------------------------------------
# games


class TableGame:
    """A game backed by a (full or partial) table of coalition utilities.

    Args:
        players: player names (unique, non-empty, no ``+``).
        objectives: objective names.
        coalitions: ``bool[k, n]``, one row per table entry (no duplicates).
        utilities: ``float[k, m]`` finite utilities.
        source: where the table came from (file name), used in error messages.

    Calling the game on a coalition missing from the table raises ``InputError`` naming the coalition.
    """

    def __init__(
        self,
        players: Sequence[str],
        objectives: Sequence[str],
        coalitions: np.ndarray,
        utilities: np.ndarray,
        *,
        source: str | None = None,
    ) -> None:
        self.players = validate_names(players, "player")
        self.objectives = validate_names(objectives, "objective")
        self.source = source
        n, m = len(self.players), len(self.objectives)
        if n > MAX_TABLE_PLAYERS:
            raise InputError(f"a table game holds at most {MAX_TABLE_PLAYERS} players, got {n}", file=source)
        masks = _check_masks(coalitions, n)
        utils = np.asarray(utilities, dtype=float)
        if utils.ndim == 1 and m == 1:
            utils = utils[:, None]
        if utils.shape != (masks.shape[0], m):
            raise ValueError(f"utilities must have shape ({masks.shape[0]}, {m}), got {utils.shape}")
        if not np.all(np.isfinite(utils)):
            raise InputError("utilities must be finite numbers (found NaN or infinity)", file=source)
        keys = coalition_index(masks)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if dup.size:
            label = coalition_label(masks[order[dup[0]]], self.players)
            raise InputError(f"duplicated coalition '{label}'", file=source)
        self._keys = sorted_keys
        self._utils = utils[order]
        self._dense: np.ndarray | None = None
        if self.is_complete():
            self._dense = self._utils  # sorted keys are exactly 0..2^n-1

    # -- construction from files -------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """Read GAME.csv (format in the module docstring). Bad input raises ``InputError`` naming the row."""
        import polars as pl

        path = Path(path)
        if not path.is_file():
            raise InputError("file not found", file=path)
        try:
            frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
        except Exception as err:  # polars raises several error types for malformed CSV
            raise InputError(f"cannot read CSV: {str(err).splitlines()[0]}", file=path) from err
        columns = {c: [None if v is None else str(v) for v in frame[c].to_list()] for c in frame.columns}
        return cls._from_columns(columns, list(frame.columns), source=str(path), players=players)

    @classmethod
    def from_parquet(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """Read a Parquet table with the GAME.csv columns (rows numbered as in GAME.csv)."""
        import polars as pl

        path = Path(path)
        if not path.is_file():
            raise InputError("file not found", file=path)
        try:
            frame = pl.read_parquet(path)
        except Exception as err:
            raise InputError(f"cannot read Parquet: {str(err).splitlines()[0]}", file=path) from err
        columns: dict[str, list[object]] = {c: frame[c].to_list() for c in frame.columns}
        return cls._from_columns(columns, list(frame.columns), source=str(path), players=players)

    @classmethod
    def from_file(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """``from_parquet`` for ``*.parquet`` / ``*.pq``, ``from_csv`` otherwise."""
        if Path(path).suffix.lower() in (".parquet", ".pq"):
            return cls.from_parquet(path, players=players)
        return cls.from_csv(path, players=players)

    @classmethod
    def _from_columns(
        cls,
        columns: Mapping[str, list[object]],
        names: list[str],
        *,
        source: str,
        players: Sequence[str] | None,
    ) -> TableGame:
        if COALITION_COLUMN not in columns:
            raise InputError(
                f"no '{COALITION_COLUMN}' column (columns: {', '.join(names) or 'none'})",
                file=source,
                field=COALITION_COLUMN,
            )
        objectives = [c for c in names if c != COALITION_COLUMN]
        if not objectives:
            raise InputError("no objective column: add one numeric column per objective", file=source)
        for name in objectives:
            if not str(name).strip():
                raise InputError("empty objective column name", file=source)
        raw_coalitions = columns[COALITION_COLUMN]
        n_rows = len(raw_coalitions)
        if n_rows == 0:
            raise InputError("the table has no rows", file=source)

        # parse coalitions
        members: list[tuple[str, ...]] = []
        for i, cell in enumerate(raw_coalitions):
            row = i + 2
            text = "" if cell is None else str(cell).strip()
            if not text:
                members.append(())
                continue
            names_in = [part.strip() for part in text.split(SEPARATOR)]
            if any(not part for part in names_in):
                raise InputError(
                    f"empty player name in coalition {text!r} (stray '{SEPARATOR}')",
                    file=source,
                    row=row,
                    field=COALITION_COLUMN,
                )
            if len(set(names_in)) != len(names_in):
                raise InputError(
                    f"player repeated in coalition {text!r}", file=source, row=row, field=COALITION_COLUMN
                )
            members.append(tuple(names_in))

        # player set
        if players is not None:
            player_list = list(validate_names(players, "player"))
            known = set(player_list)
            for i, names_in in enumerate(members):
                for name in names_in:
                    if name not in known:
                        raise InputError(
                            f"unknown player {name!r} (players: {', '.join(player_list)})",
                            file=source,
                            row=i + 2,
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
        position = {p: j for j, p in enumerate(player_list)}
        n = len(player_list)
        if n > MAX_TABLE_PLAYERS:
            raise InputError(f"{n} players: a table game holds at most {MAX_TABLE_PLAYERS}", file=source)

        masks = np.zeros((n_rows, n), dtype=bool)
        for i, names_in in enumerate(members):
            masks[i, [position[p] for p in names_in]] = True

        # duplicated coalitions: name both rows
        keys = coalition_index(masks)
        first_row: dict[int, int] = {}
        for i, key in enumerate(keys.tolist()):
            if key in first_row:
                label = coalition_label(masks[i], player_list)
                raise InputError(
                    f"duplicated coalition {describe_coalition(label)} (also on row {first_row[key]})",
                    file=source,
                    row=i + 2,
                    field=COALITION_COLUMN,
                )
            first_row[key] = i + 2

        # utilities
        utilities = np.empty((n_rows, len(objectives)), dtype=float)
        for k, name in enumerate(objectives):
            for i, cell in enumerate(columns[name]):
                utilities[i, k] = _parse_utility(cell, source=source, row=i + 2, field=str(name))
        return cls(player_list, [str(o) for o in objectives], masks, utilities, source=source)

    # -- output --------------------------------------------------------------------------------------

    def to_csv(self, path: str | Path) -> None:
        """Write GAME.csv (coalitions sorted by index, ``repr`` floats: exact round trip). Atomic."""
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([COALITION_COLUMN, *self.objectives])
        masks = self.coalitions
        for mask, utils in zip(masks, self._utils, strict=True):
            writer.writerow([coalition_label(mask, self.players), *(repr(float(u)) for u in utils)])
        atomic_write_text(path, buffer.getvalue())

    # -- queries -------------------------------------------------------------------------------------

    @property
    def coalitions(self) -> np.ndarray:
        """The table's coalitions ``bool[k, n]``, sorted by coalition index."""
        n = len(self.players)
        return ((self._keys[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1).astype(bool)

    @property
    def utilities(self) -> np.ndarray:
        """The table's utilities ``float[k, m]``, rows aligned with ``coalitions``."""
        return self._utils.copy()

    def __len__(self) -> int:
        return int(self._keys.size)

    def is_complete(self) -> bool:
        """True when the table holds all ``2^n`` coalitions."""
        return self._keys.size == 2 ** len(self.players)

    def missing_coalitions(self, limit: int = 10) -> list[str]:
        """Labels of up to ``limit`` coalitions absent from the table (by coalition index)."""
        out: list[str] = []
        expected = 0
        for key in [*self._keys.tolist(), 2 ** len(self.players)]:
            while expected < key and len(out) < limit:
                out.append(_label_of_index(expected, self.players))
                expected += 1
            if len(out) >= limit:
                break
            expected = key + 1
        return out

    def dense_table(self, method: str = "exact") -> np.ndarray:
        """All utilities as ``float[2^n, m]`` in coalition-index order (read-only view).

        Raises ``InputError`` naming a missing coalition when the table is partial.
        """
        if self._dense is None:
            missing = self.missing_coalitions(limit=1)
            n = len(self.players)
            raise InputError(
                f"missing coalition {describe_coalition(missing[0])}: "
                f"method '{method}' needs all 2^{n} = {2**n} coalitions, the table has {len(self)}",
                file=self.source,
                field=COALITION_COLUMN,
            )
        view = self._dense.view()
        view.flags.writeable = False
        return view

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        masks = _check_masks(coalitions, len(self.players))
        keys = coalition_index(masks)
        if self._dense is not None:
            return self._dense[keys]
        pos = np.searchsorted(self._keys, keys)
        pos_clipped = np.minimum(pos, self._keys.size - 1)
        found = self._keys[pos_clipped] == keys
        if not np.all(found):
            bad = int(np.flatnonzero(~found)[0])
            label = coalition_label(masks[bad], self.players)
            raise InputError(
                f"coalition {describe_coalition(label)} is not in the table (the table has {len(self)} of "
                f"{2 ** len(self.players)} coalitions)",
                file=self.source,
                field=COALITION_COLUMN,
            )
        return self._utils[pos_clipped]

    def __repr__(self) -> str:
        return (
            f"TableGame(players={list(self.players)}, objectives={list(self.objectives)}, "
            f"rows={len(self)}, complete={self.is_complete()})"
        )


class FunctionGame:
    """Wrap any callable ``fn(bool[k, n]) -> float[k, m]`` (``float[k]`` accepted when m = 1)."""

    def __init__(
        self,
        players: Sequence[str],
        objectives: Sequence[str],
        fn: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.players = validate_names(players, "player")
        self.objectives = validate_names(objectives, "objective")
        self.fn = fn

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        masks = _check_masks(coalitions, len(self.players))
        out = np.asarray(self.fn(masks), dtype=float)
        if out.ndim == 1 and len(self.objectives) == 1:
            out = out[:, None]
        if out.shape != (masks.shape[0], len(self.objectives)):
            raise ValueError(
                f"game function returned shape {out.shape}, expected ({masks.shape[0]}, {len(self.objectives)})"
            )
        return out


class CachedGame:
    """Evaluate each distinct coalition of ``game`` at most once.

    ``hits`` counts coalitions answered from the cache (including repeats inside one call), ``misses``
    the coalitions passed to the wrapped game (all misses of one call go in one batched call).
    """

    def __init__(self, game: Game) -> None:
        self.game = game
        self.players = tuple(game.players)
        self.objectives = tuple(game.objectives)
        self.hits = 0
        self.misses = 0
        self._cache: dict[bytes, np.ndarray] = {}

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        masks = _check_masks(coalitions, len(self.players))
        packed = np.packbits(masks, axis=1)
        keys = [row.tobytes() for row in packed]
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache and key not in todo:
                todo[key] = i
        if todo:
            rows = np.fromiter(todo.values(), dtype=np.int64, count=len(todo))
            values = np.asarray(self.game(masks[rows]), dtype=float)
            for key, value in zip(todo, values, strict=True):
                self._cache[key] = value
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        out = np.empty((len(keys), len(self.objectives)), dtype=float)
        for i, key in enumerate(keys):
            out[i] = self._cache[key]
        return out

    def __len__(self) -> int:
        return len(self._cache)


class GroupedGame:
    """Member-level game from a source-level game: ``v(T) = u(∪_{m∈T} sources(m))``.

    Args:
        game: the source-level game (its players are the sources).
        groups: member name -> the sources that member owns. Sources owned by nobody are always absent;
            a member owning no source is a null player. Unknown sources raise ``InputError``.

    No new model calls: on a ``TableGame`` it is table look-ups.
    """

    def __init__(self, game: Game, groups: Mapping[str, Sequence[str]]) -> None:
        self.game = game
        self.players = validate_names(list(groups), "player")
        self.objectives = tuple(game.objectives)
        sources = tuple(game.players)
        index = {s: j for j, s in enumerate(sources)}
        self.membership = np.zeros((len(self.players), len(sources)), dtype=bool)
        for i, member in enumerate(self.players):
            owned: Iterable[str] = groups[member]
            if isinstance(owned, str):
                owned = [owned]
            for src in owned:
                if src not in index:
                    raise InputError(
                        f"member {member!r} owns unknown source {src!r} (sources: {', '.join(sources)})",
                        field="sources",
                    )
                self.membership[i, index[src]] = True

    def source_coalitions(self, coalitions: np.ndarray) -> np.ndarray:
        """Map member coalitions ``bool[k, n_members]`` to source coalitions ``bool[k, n_sources]``."""
        masks = _check_masks(coalitions, len(self.players))
        return (masks.astype(np.int64) @ self.membership.astype(np.int64)) > 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        return np.asarray(self.game(self.source_coalitions(coalitions)), dtype=float)


def scalarised_game(game: Game, weights: Mapping[str, float], name: str = "weighted") -> FunctionGame:
    """The one-objective game ``Σ_k a_k u_k`` (objectives missing from ``weights`` get weight 0).

    Use it for non-linear methods (least core); linear ones use ``ValuationResult.scalarised``.
    """
    vector = objective_weights(game.objectives, weights)
    return FunctionGame(game.players, [name], lambda masks: np.asarray(game(masks)) @ vector)


def objective_weights(objectives: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Weight vector aligned with ``objectives``; unknown objective names raise ``InputError``."""
    unknown = [k for k in weights if k not in objectives]
    if unknown:
        raise InputError(
            f"unknown objective {unknown[0]!r} in weights (objectives: {', '.join(objectives)})",
            field="weights",
        )
    return np.array([float(weights.get(k, 0.0)) for k in objectives], dtype=float)


# ---------------------------------------------------------------------------------------------------
# small helpers


def describe_coalition(label: str) -> str:
    """``'a+b'`` for a label, ``'' (the empty coalition)`` for ∅ — for messages."""
    return f"'{label}'" if label else "'' (the empty coalition)"


def _label_of_index(index: int, players: Sequence[str]) -> str:
    return SEPARATOR.join(p for j, p in enumerate(players) if (index >> j) & 1)


def _parse_utility(cell: object, *, source: str, row: int, field: str) -> float:
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        raise InputError("missing utility (empty cell)", file=source, row=row, field=field)
    if isinstance(cell, bool):
        raise InputError(f"utility must be a number, got {cell!r}", file=source, row=row, field=field)
    try:
        value = float(cell.strip()) if isinstance(cell, str) else float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"utility must be a number, got {cell!r}", file=source, row=row, field=field) from None
    if not np.isfinite(value):
        raise InputError(f"utility must be a finite number, got {cell!r}", file=source, row=row, field=field)
    return value
