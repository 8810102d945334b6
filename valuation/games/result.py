"""The result of valuing a game: values and standard errors per player and objective.

JSON form (``to_json_dict``), the DESIGN format plus extra keys::

    {"method": str, "players": [str], "objectives": [str],
     "values": [{"player": str, "objective": str, "value": float, "std_err": float}],
     "budget": int | null, "n_evaluations": int, "info": {...}}

A result with an interval (`lo`, `hi`: e.g. the bootstrap's 95% percentile interval, described by
``info["interval"]``) adds ``"lo"`` and ``"hi"`` to every entry of ``values``.

``values`` is player-major (all objectives of player 0, then player 1, …). A non-finite number (a
standard error that could not be estimated) is written as ``null`` and read back as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuation.games.game import objective_weights
from valuation.games.methods import LINEAR_METHODS


@dataclass(frozen=True)
class ValuationResult:
    """Values ``float[n_players, n_objectives]`` with standard errors of the same shape.

    Attributes:
        method: the estimator (``exact``, ``permutation``, ``banzhaf``, ``loo``, ``least_core``).
        players, objectives: names, aligned with the rows / columns of ``values``.
        values: the estimates.
        std_errs: standard errors of the estimates; 0 for exact methods.
        budget: the evaluation budget the caller gave (None: none given).
        n_evaluations: utility evaluations (coalition rows) the estimator requested from the game.
        info: method details, e.g. ``{"epsilon": [...]}`` (least core), ``{"converged": bool,
            "stopped_by": str, "n_samples": int}`` (sampled methods), ``{"interval": {...}}`` (how `lo`
            and `hi` were found).
        lo, hi: the lower and upper ends of an interval around each value (same shape), or None.
        design: the coalitions a sampled ``regression`` estimate evaluated (``bool[k, n]``, ∅ and N apart;
            not serialised), so replicates can be valued on the same design
            (`valuation.games.estimators.regression.regression_values`); None otherwise.
    """

    method: str
    players: tuple[str, ...]
    objectives: tuple[str, ...]
    values: np.ndarray
    std_errs: np.ndarray
    budget: int | None = None
    n_evaluations: int = 0
    info: dict = field(default_factory=dict)
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    design: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=float)
        std_errs = np.asarray(self.std_errs, dtype=float)
        shape = (len(self.players), len(self.objectives))
        if values.shape != shape or std_errs.shape != shape:
            raise ValueError(f"values and std_errs must have shape {shape}, got {values.shape}, {std_errs.shape}")
        if (self.lo is None) != (self.hi is None):
            raise ValueError("give both ends of the interval (lo and hi) or neither")
        for name in ("lo", "hi"):
            end = getattr(self, name)
            if end is not None:
                end = np.asarray(end, dtype=float)
                if end.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {end.shape}")
                object.__setattr__(self, name, end)
        object.__setattr__(self, "players", tuple(self.players))
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "std_errs", std_errs)

    # -- access ----------------------------------------------------------------------------------

    def value(self, player: str, objective: str) -> float:
        """The value of ``player`` for ``objective`` (KeyError for unknown names)."""
        return float(self.values[self._player_index(player), self._objective_index(objective)])

    def std_err(self, player: str, objective: str) -> float:
        """The standard error of ``value(player, objective)``."""
        return float(self.std_errs[self._player_index(player), self._objective_index(objective)])

    def _player_index(self, player: str) -> int:
        try:
            return self.players.index(player)
        except ValueError:
            raise KeyError(f"unknown player {player!r}") from None

    def _objective_index(self, objective: str) -> int:
        try:
            return self.objectives.index(objective)
        except ValueError:
            raise KeyError(f"unknown objective {objective!r}") from None

    @property
    def is_linear(self) -> bool:
        """True when the value of ``Σ a_k u_k`` is ``Σ a_k φ_k`` (every method but the least core)."""
        return self.method in LINEAR_METHODS

    def scalarised(self, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Values and std errs of the weighted game ``Σ_k a_k u_k`` by linearity: ``Σ_k a_k φ_k``.

        Objectives missing from ``weights`` get weight 0; unknown names raise ``InputError``.
        The standard error is the conservative ``Σ_k |a_k| · se_k`` (valid whatever the correlation
        between objectives, which share the same samples); exact methods give 0.

        Raises ``ValueError`` for non-linear methods (least core): re-solve on
        ``valuation.games.game.scalarised_game`` instead.
        """
        if not self.is_linear:
            raise ValueError(
                f"method '{self.method}' is not linear in the utility: value the scalarised game "
                "(valuation.games.game.scalarised_game) instead"
            )
        a = objective_weights(self.objectives, weights)
        return self.values @ a, np.abs(self.std_errs) @ np.abs(a)

    # -- JSON ------------------------------------------------------------------------------------

    def to_json_dict(self) -> dict:
        """The DESIGN result format plus ``budget``, ``n_evaluations`` and ``info`` (JSON-safe)."""
        values = [
            {
                "player": p,
                "objective": o,
                "value": _finite_or_none(self.values[i, k]),
                "std_err": _finite_or_none(self.std_errs[i, k]),
                **(
                    {"lo": _finite_or_none(self.lo[i, k]), "hi": _finite_or_none(self.hi[i, k])}
                    if self.lo is not None and self.hi is not None
                    else {}
                ),
            }
            for i, p in enumerate(self.players)
            for k, o in enumerate(self.objectives)
        ]
        return {
            "method": self.method,
            "players": list(self.players),
            "objectives": list(self.objectives),
            "values": values,
            "budget": self.budget,
            "n_evaluations": int(self.n_evaluations),
            "info": _jsonable(self.info),
        }

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> ValuationResult:
        """Inverse of ``to_json_dict``; the extra keys are optional. ``ValueError`` on a malformed dict."""
        try:
            players = tuple(str(p) for p in d["players"])
            objectives = tuple(str(o) for o in d["objectives"])
            values = np.full((len(players), len(objectives)), np.nan)
            std_errs = np.zeros_like(values)
            lo, hi = np.full_like(values, np.nan), np.full_like(values, np.nan)
            seen = np.zeros(values.shape, dtype=bool)
            has_interval = bool(d["values"]) and all("lo" in e and "hi" in e for e in d["values"])
            for entry in d["values"]:
                i = players.index(entry["player"])
                k = objectives.index(entry["objective"])
                values[i, k] = _float_or_nan(entry["value"])
                std_errs[i, k] = _float_or_nan(entry.get("std_err", 0.0))
                if has_interval:
                    lo[i, k], hi[i, k] = _float_or_nan(entry["lo"]), _float_or_nan(entry["hi"])
                seen[i, k] = True
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed valuation result: {err}") from err
        if not seen.all():
            raise ValueError("malformed valuation result: some (player, objective) values are missing")
        budget = d.get("budget")
        return cls(
            method=str(d["method"]),
            players=players,
            objectives=objectives,
            values=values,
            std_errs=std_errs,
            budget=None if budget is None else int(budget),
            n_evaluations=int(d.get("n_evaluations", 0)),
            info=dict(d.get("info", {})),
            lo=lo if has_interval else None,
            hi=hi if has_interval else None,
        )


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _float_or_nan(x: object) -> float:
    return math.nan if x is None else float(x)  # type: ignore[arg-type]


def _jsonable(obj: object) -> object:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(float(obj))
    return obj
