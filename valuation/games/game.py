"""Coalition games: the seam between the model side (utilities) and the valuation math.

A **game** has players (data sources or members), objectives (e.g. helpfulness, harmlessness) and a
vectorised utility: ``game(coalitions)`` maps a boolean matrix ``bool[k, n]`` (row = coalition,
column j = player j present) to ``float[k, m]`` (one utility per objective). Coalition indexing
(player j = bit j) is `valuation.games.coalitions`; the GAME.csv file format is
`valuation.games.table_io`.

Games here: `TableGame` (a full or partial table of utilities, e.g. read from GAME.csv), `FunctionGame`
(any callable), `CachedGame` (each distinct coalition evaluated once), `GroupedGame` (a member game
from a source game) and `scalarised_game` (the objective-weighted one-objective game).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from valuation.errors import InputError
from valuation.games.coalitions import (
    MAX_TABLE_PLAYERS,
    check_masks,
    coalition_index,
    coalition_label,
    coalitions_of_indices,
    describe_coalition,
    label_of_index,
    validate_names,
)
from valuation.games.table_io import (
    COALITION_COLUMN,
    TableContents,
    read_game_csv,
    read_game_parquet,
    write_game_csv,
)


@runtime_checkable
class Game(Protocol):
    """A cooperative game with several objectives.

    ``__call__`` takes ``bool[k, n]`` (n = len(players)) and returns ``float[k, m]`` (m = len(objectives)).
    """

    players: tuple[str, ...]
    objectives: tuple[str, ...]

    def __call__(self, coalitions: np.ndarray) -> np.ndarray: ...


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
        masks = check_masks(coalitions, n)
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

    # -- files (format and errors: `valuation.games.table_io`) ---------------------------------------

    @classmethod
    def from_csv(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """Read GAME.csv (`valuation.games.table_io`). Bad input raises ``InputError`` naming the row."""
        return cls.from_contents(read_game_csv(path, players=players))

    @classmethod
    def from_parquet(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """Read a Parquet table with the GAME.csv columns (rows numbered as in GAME.csv)."""
        return cls.from_contents(read_game_parquet(path, players=players))

    @classmethod
    def from_file(cls, path: str | Path, *, players: Sequence[str] | None = None) -> TableGame:
        """``from_parquet`` for ``*.parquet`` / ``*.pq``, ``from_csv`` otherwise."""
        if Path(path).suffix.lower() in (".parquet", ".pq"):
            return cls.from_parquet(path, players=players)
        return cls.from_csv(path, players=players)

    @classmethod
    def from_contents(cls, contents: TableContents) -> TableGame:
        """The game of a parsed table (``source`` = its file name)."""
        c = contents
        return cls(c.players, c.objectives, c.coalitions, c.utilities, source=c.source)

    def to_csv(self, path: str | Path) -> None:
        """Write GAME.csv (coalitions sorted by index, ``repr`` floats: exact round trip). Atomic."""
        write_game_csv(path, self.players, self.objectives, self.coalitions, self._utils)

    # -- queries -------------------------------------------------------------------------------------

    @property
    def coalitions(self) -> np.ndarray:
        """The table's coalitions ``bool[k, n]``, sorted by coalition index."""
        return coalitions_of_indices(self._keys, len(self.players))

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
                out.append(label_of_index(expected, self.players))
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
        masks = check_masks(coalitions, len(self.players))
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
        masks = check_masks(coalitions, len(self.players))
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
        masks = check_masks(coalitions, len(self.players))
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
        masks = check_masks(coalitions, len(self.players))
        return (masks.astype(np.int64) @ self.membership.astype(np.int64)) > 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        return np.asarray(self.game(self.source_coalitions(coalitions)), dtype=float)


def empty_and_grand(game: Game) -> np.ndarray:
    """``float[2, m]``: the utilities of ∅ (row 0) and of the grand coalition N (row 1)."""
    n = len(game.players)
    return np.asarray(game(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)])), dtype=float)


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
