"""Replicate games: what a coalition table would have been under another draw of its evaluation data.

A coalition utility estimated on a finite evaluation set is, for every coalition S and objective k, a
ratio of sums over the objective's items j (eval pairs, prompts)::

    u_k(S) = Σ_j N_k[S, j] / Σ_j D_k[S, j]

* the ``preference`` utility: N = the pair's score (σ(β·margin), accuracy, log σ), D = 1;
* a directly sampled ``reward`` utility: N = the sum of the rewards of prompt j's samples, D = their number;
* a self-normalised importance estimate: N = Σ w_i r_i over prompt j's pool samples, D = Σ w_i.

`ItemTerms` holds N and D per objective: the compact, model-free form of a coalition table's evaluation.

**Bootstrap** (`ItemTerms.bootstrap`): replicate b draws multinomial counts c_b over each objective's p_k
items (p_k draws with replacement) and gives ``u_b(S) = Σ_j c_bj N[S, j] / Σ_j c_bj D[S, j]``. Every
coalition is evaluated on the *same* resampled items (common random numbers), so the positive correlation
between coalitions — which makes differences of utilities, and hence values, much more precise than the
utilities themselves — survives. Objectives are resampled independently (they have their own eval sets).

**Normal replicates** (`normal_replicates`) are the fallback for a table that comes without its items but
with per-coalition standard errors: ``u_b(S) = u(S) + se(S)·z_bS`` with independent z. Independence ignores
the correlation of coalitions evaluated on the same items and so *overstates* the uncertainty of values
(conservative); the result says so in its ``kind``.

`Replicates` is B replicate tables on one set of coalitions; anything that takes a game can be run on
``replicates.game(b)`` for b = 0..B−1 and summarised with `percentile_interval`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from valuation.errors import InputError
from valuation.files import atomic_write_bytes, require_file
from valuation.games.coalitions import check_masks, coalition_index
from valuation.games.game import Game, TableGame

ITEMS_FORMAT = "payoutsim-items/1"
#: Largest N table (coalitions × items, per objective) kept for the bootstrap: 2^14 coalitions × 1,000 pairs.
MAX_ITEM_CELLS = 2**14 * 1000


@runtime_checkable
class ReplicateGames(Protocol):
    """What the uncertainty code needs of B replicate games: `Replicates` (tables on one set of coalitions)
    or `valuation.coalition_utility.compact.PairReplicates` (the compact game's bootstrap)."""

    players: tuple[str, ...]
    objectives: tuple[str, ...]
    kind: str
    seed: int

    @property
    def n_replicates(self) -> int: ...

    def is_complete(self) -> bool: ...

    def game(self, b: int) -> Game: ...

    def stacked_game(self) -> Game: ...

    def unstack(self, values: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Replicates:
    """B replicate tables of a game on the same coalitions.

    Attributes:
        players, objectives: as the game's.
        coalitions: ``bool[m, n]``, the table's coalitions.
        utilities: ``float[B, m, k]``.
        kind: what was resampled, in words (shown beside every interval).
        seed: the seed that drew them.
    """

    players: tuple[str, ...]
    objectives: tuple[str, ...]
    coalitions: np.ndarray
    utilities: np.ndarray
    kind: str
    seed: int = 0

    def __post_init__(self) -> None:
        u = np.asarray(self.utilities, dtype=float)
        if u.ndim != 3 or u.shape[1:] != (self.coalitions.shape[0], len(self.objectives)):
            raise ValueError(f"utilities must be [B, {self.coalitions.shape[0]}, {len(self.objectives)}], got {u.shape}")
        object.__setattr__(self, "utilities", u)

    @property
    def n_replicates(self) -> int:
        return int(self.utilities.shape[0])

    def is_complete(self) -> bool:
        """True when the tables hold all 2^n coalitions."""
        return len(self.coalitions) == 2 ** len(self.players)

    def game(self, b: int) -> TableGame:
        """Replicate `b` as a `TableGame`."""
        return TableGame(self.players, self.objectives, self.coalitions, self.utilities[b], source=f"replicate {b}")

    def stacked_game(self) -> TableGame:
        """All replicates in one game with ``B·k`` objectives ``r<b>_<k>`` (replicate-major), so a linear
        method values every replicate in one pass; `unstack` reshapes its values back."""
        b, m, k = self.utilities.shape
        names = [f"r{i}_{j}" for i in range(b) for j in range(k)]
        return TableGame(self.players, names, self.coalitions, self.utilities.transpose(1, 0, 2).reshape(m, b * k))

    def unstack(self, values: np.ndarray) -> np.ndarray:
        """``float[n, B·k]`` values of `stacked_game` as ``float[B, n, k]``."""
        b, _, k = self.utilities.shape
        v = np.asarray(values, dtype=float)
        return v.reshape(v.shape[0], b, k).transpose(1, 0, 2)


@dataclass(frozen=True)
class ItemTerms:
    """Per-item numerators and denominators of a coalition table (module docstring).

    Attributes:
        players, objectives: names.
        coalitions: ``bool[m, n]``.
        numerators, denominators: per objective ``float[m, p_k]`` (p_k items of objective k).
        unit: what an item is (``eval pair``, ``prompt``), for messages.
    """

    players: tuple[str, ...]
    objectives: tuple[str, ...]
    coalitions: np.ndarray
    numerators: tuple[np.ndarray, ...]
    denominators: tuple[np.ndarray, ...]
    unit: str = "eval pair"

    def __post_init__(self) -> None:
        masks = check_masks(self.coalitions, len(self.players))
        object.__setattr__(self, "coalitions", masks)
        if len(self.numerators) != len(self.objectives) or len(self.denominators) != len(self.objectives):
            raise ValueError("one numerator and one denominator table per objective")
        for num, den in zip(self.numerators, self.denominators, strict=True):
            if num.shape != den.shape or num.ndim != 2 or num.shape[0] != masks.shape[0]:
                raise ValueError(f"item tables must be [{masks.shape[0]}, p], got {num.shape} and {den.shape}")

    @property
    def n_items(self) -> tuple[int, ...]:
        return tuple(int(num.shape[1]) for num in self.numerators)

    def utilities(self) -> np.ndarray:
        """The point table ``float[m, k]``: Σ_j N / Σ_j D per coalition and objective."""
        return np.stack(
            [_ratio(num.sum(axis=1), den.sum(axis=1)) for num, den in zip(self.numerators, self.denominators, strict=True)],
            axis=1,
        )

    def bootstrap(self, n_replicates: int, seed: int = 0) -> Replicates:
        """`n_replicates` bootstrap tables (module docstring), seeded: the same seed gives the same tables."""
        rng = np.random.default_rng(seed)
        m, k = self.coalitions.shape[0], len(self.objectives)
        out = np.empty((n_replicates, m, k))
        for j, (num, den) in enumerate(zip(self.numerators, self.denominators, strict=True)):
            p = num.shape[1]
            counts = rng.multinomial(p, np.full(p, 1.0 / p), size=n_replicates).astype(float)  # [B, p]
            out[:, :, j] = _ratio(counts @ num.T, counts @ den.T)
        per_objective = ", ".join(f"{p} {o}" for p, o in zip(self.n_items, self.objectives, strict=True))
        kind = f"bootstrap over {self.unit}s ({per_objective}; jointly across coalitions)"
        return Replicates(self.players, self.objectives, self.coalitions, out, kind, seed)

    # -- files -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the terms as one ``.npz`` (format `ITEMS_FORMAT`), atomically."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(ITEMS_FORMAT),
            "players": np.array(self.players),
            "objectives": np.array(self.objectives),
            "unit": np.array(self.unit),
            "coalitions": self.coalitions,
        }
        for j in range(len(self.objectives)):
            arrays[f"num_{j}"] = self.numerators[j]
            arrays[f"den_{j}"] = self.denominators[j]
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(path, buffer.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, field: str | None = None) -> ItemTerms:
        """Read a file written by `save`; `InputError` naming the file for anything else."""
        path = require_file(path, field=field)
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != ITEMS_FORMAT:
                    raise InputError(f"not a payoutsim item file (format {data['format']!s})", file=path, field=field)
                objectives = tuple(str(x) for x in data["objectives"])
                return cls(
                    players=tuple(str(x) for x in data["players"]),
                    objectives=objectives,
                    coalitions=np.asarray(data["coalitions"], dtype=bool),
                    numerators=tuple(np.asarray(data[f"num_{j}"], float) for j in range(len(objectives))),
                    denominators=tuple(np.asarray(data[f"den_{j}"], float) for j in range(len(objectives))),
                    unit=str(data["unit"]),
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"cannot read the item file: {err}", file=path, field=field) from None

    def check_matches(self, game: TableGame, *, file: str | Path | None = None, field: str | None = None) -> None:
        """`InputError` unless these terms describe `game`: same players and objectives, every coalition of
        the game present, and the point utilities equal to the game's within 1e-9 (relative)."""
        if tuple(game.players) != self.players or tuple(game.objectives) != self.objectives:
            raise InputError(
                f"the item file is for players {list(self.players)} and objectives {list(self.objectives)}, the game "
                f"has {list(game.players)} and {list(game.objectives)}",
                file=file,
                field=field,
            )
        keys = coalition_index(self.coalitions)
        order = np.argsort(keys)
        pos = np.searchsorted(keys[order], coalition_index(game.coalitions))
        pos = np.minimum(pos, keys.size - 1)
        if not np.array_equal(keys[order][pos], coalition_index(game.coalitions)):
            raise InputError("the item file lacks coalitions of the game", file=file, field=field)
        mine = self.utilities()[order][pos]
        if not np.allclose(mine, game.utilities, rtol=1e-9, atol=1e-12):
            raise InputError("the item file's utilities differ from the game table's", file=file, field=field)


def normal_replicates(
    game: TableGame, std_errs: np.ndarray, n_replicates: int, seed: int = 0
) -> Replicates:
    """Replicates ``u(S) + se(S)·z`` with independent standard normal z per replicate, coalition and
    objective (`std_errs`: ``float[m, k]`` aligned with ``game.coalitions``; conservative, module docstring)."""
    se = np.nan_to_num(np.asarray(std_errs, dtype=float), nan=0.0)
    if se.shape != game.utilities.shape:
        raise ValueError(f"std_errs must have the table's shape {game.utilities.shape}, got {se.shape}")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_replicates, *se.shape)) * se[None]
    kind = "normal, independent per coalition, from the table's standard errors (conservative)"
    return Replicates(game.players, game.objectives, game.coalitions, game.utilities[None] + noise, kind, seed)


def percentile_interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The central `level` percentile interval of `samples` along `axis` (lower, upper)."""
    alpha = (1.0 - level) / 2.0
    return np.quantile(samples, alpha, axis=axis), np.quantile(samples, 1.0 - alpha, axis=axis)


def rank_confidence(samples: np.ndarray) -> np.ndarray:
    """``P[i, j]``: the fraction of replicates (rows of `samples`, ``[B, n]``) in which player i's figure
    exceeds player j's, ties counted half (``P + Pᵀ = 1`` off the diagonal; the diagonal is 0.5)."""
    s = np.asarray(samples, dtype=float)
    greater = (s[:, :, None] > s[:, None, :]).mean(axis=0)
    ties = (s[:, :, None] == s[:, None, :]).mean(axis=0)
    return greater + 0.5 * ties


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def terms_from_scores(
    players: Sequence[str],
    objectives: Sequence[str],
    coalitions: np.ndarray,
    scores: Mapping[str, np.ndarray],
    unit: str = "eval pair",
) -> ItemTerms:
    """`ItemTerms` of a mean-over-items utility: N = the per-item scores ``float[m, p_k]``, D = 1."""
    nums = tuple(np.asarray(scores[o], dtype=float) for o in objectives)
    return ItemTerms(tuple(players), tuple(objectives), coalitions, nums, tuple(np.ones_like(x) for x in nums), unit)


__all__ = [
    "ITEMS_FORMAT",
    "MAX_ITEM_CELLS",
    "ItemTerms",
    "ReplicateGames",
    "Replicates",
    "normal_replicates",
    "percentile_interval",
    "rank_confidence",
    "terms_from_scores",
]
