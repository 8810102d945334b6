"""The compact form of the ``preference`` game: per-pair log-ratio margins that describe all 2ⁿ coalitions.

For the ``preference`` utility (`valuation.coalition_utility.preference`) a coalition's utility on objective
k is a function of one matrix only, Δ_k ``[n, p_k]`` (each source's implicit-reward margin on each of the
objective's eval pairs, `valuation.composition.arithmetic.preference_deltas`):

    u_k(S) = Σ_i c_i · score(Σ_{ℓ∈S} w_ℓ^S Δ_k[ℓ, i]) / Σ_i c_i

with the arithmetic's weights w^S (``sum``, ``mean`` or ``size``), the utility's per-pair score (``bt``,
``accuracy``, ``loglik`` with β) and pair weights c (all 1 for the point game; multinomial counts for a
bootstrap replicate). So n × Σ_k p_k numbers (64 sources × 400 pairs ≈ 200 KiB) stand for the whole game:
a run keeps them (``RUN/game.npz``, `PairGame.save`) and any later what-if — another estimator, a member
subset, a replicate — needs no model. Evaluating k coalitions costs one ``[k, n] @ [n, p]`` product per
objective (≈ 10 µs per coalition at n = 64, p = 200 on 2 cores).

`PairGame` implements the engine's `valuation.games.game.Game` contract; `PairReplicates` (its bootstrap
over eval pairs, jointly across coalitions) implements the replicate contract the uncertainty code uses
(`valuation.games.replicates.ReplicateGames`).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from valuation.coalition_utility.preference import PREFERENCE_METRICS, pair_scores
from valuation.composition.arithmetic import WEIGHTINGS, coalition_weights
from valuation.errors import InputError
from valuation.files import atomic_write_bytes, require_file
from valuation.games.coalitions import check_masks, validate_names

PAIR_GAME_FORMAT = "payoutsim-pairgame/1"
BLOCK_ROWS = 4096  # coalitions per block: [block, p] scores never exceed a few MiB


class PairGame:
    """The ``preference`` game from its per-pair margins (module docstring).

    Args:
        players: source names (n).
        objectives: objective names (m).
        deltas: per objective Δ_k ``float[n, p_k]`` (finite).
        weighting: ``sum``, ``mean`` or ``size`` (`valuation.composition.arithmetic`).
        sizes: |D_ℓ| per source (needed by ``size``; kept for the record otherwise).
        metric, beta: the per-pair score (`valuation.coalition_utility.preference.pair_scores`).
        pair_weights: per objective ``float[p_k]`` non-negative weights c (None: all 1).
    """

    def __init__(
        self,
        players: Sequence[str],
        objectives: Sequence[str],
        deltas: Sequence[np.ndarray],
        *,
        weighting: str = "sum",
        sizes: Sequence[float] | None = None,
        metric: str = "bt",
        beta: float = 0.1,
        pair_weights: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.players = validate_names(players, "player")
        self.objectives = validate_names(objectives, "objective")
        n = len(self.players)
        if len(deltas) != len(self.objectives):
            raise ValueError(f"one delta matrix per objective: {len(self.objectives)} objectives, {len(deltas)} matrices")
        self.deltas = tuple(np.ascontiguousarray(d, dtype=np.float64) for d in deltas)
        for objective, d in zip(self.objectives, self.deltas, strict=True):
            if d.ndim != 2 or d.shape[0] != n or d.shape[1] == 0:
                raise ValueError(f"deltas of {objective!r} must be [{n}, pairs] with pairs ≥ 1, got {d.shape}")
            if not np.all(np.isfinite(d)):
                raise InputError(f"the per-pair margins of {objective!r} hold NaN or infinity")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        if metric not in PREFERENCE_METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(PREFERENCE_METRICS)}")
        self.weighting, self.metric, self.beta = weighting, metric, float(beta)
        self.sizes = None if sizes is None else np.asarray(sizes, dtype=np.float64)
        if weighting == "size" and (self.sizes is None or self.sizes.shape != (n,)):
            raise ValueError("weighting 'size' needs one data size per source")
        if pair_weights is None:
            self.pair_weights = tuple(np.ones(d.shape[1]) for d in self.deltas)
        else:
            self.pair_weights = tuple(np.asarray(c, dtype=np.float64) for c in pair_weights)
            for d, c in zip(self.deltas, self.pair_weights, strict=True):
                if c.shape != (d.shape[1],) or np.any(c < 0) or not c.sum() > 0:
                    raise ValueError(f"pair weights must be [{d.shape[1]}] non-negative with a positive sum")

    @property
    def n_pairs(self) -> tuple[int, ...]:
        """Eval pairs per objective."""
        return tuple(int(d.shape[1]) for d in self.deltas)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """``float[k, m]``: u_k(S) of every row of ``bool[k, n]`` (module docstring)."""
        masks = check_masks(coalitions, len(self.players))
        out = np.empty((masks.shape[0], len(self.objectives)))
        for start in range(0, masks.shape[0], BLOCK_ROWS):
            block = masks[start : start + BLOCK_ROWS]
            for j in range(len(self.objectives)):
                scores = self.scores(block, j)
                out[start : start + block.shape[0], j] = scores @ self.pair_weights[j] / self.pair_weights[j].sum()
        return out

    def scores(self, coalitions: np.ndarray, objective: int) -> np.ndarray:
        """``float[k, p]``: the per-pair scores of objective index `objective` for every coalition row."""
        weights = coalition_weights(coalitions, self.weighting, self.sizes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the loglik warning is given once per run
            return pair_scores(weights @ self.deltas[objective], self.metric, self.beta)

    def with_pair_weights(self, pair_weights: Sequence[np.ndarray]) -> PairGame:
        """The same game on re-weighted eval pairs (a bootstrap replicate: multinomial counts)."""
        return PairGame(
            self.players, self.objectives, self.deltas, weighting=self.weighting, sizes=self.sizes,
            metric=self.metric, beta=self.beta, pair_weights=pair_weights,
        )

    def bootstrap(self, n_replicates: int, seed: int = 0) -> PairReplicates:
        """`n_replicates` bootstrap games: each objective's pairs drawn with replacement (multinomial counts),
        the same draw for every coalition (common random numbers); objectives independently. Seeded."""
        rng = np.random.default_rng(seed)
        counts = [
            rng.multinomial(p, np.full(p, 1.0 / p), size=n_replicates).astype(np.float64) for p in self.n_pairs
        ]
        return PairReplicates(self, tuple(counts), seed)

    def describe(self) -> dict[str, Any]:
        """What the game is, JSON-ready (for run.json and the ledger)."""
        return {
            "format": PAIR_GAME_FORMAT,
            "players": len(self.players),
            "pairs": dict(zip(self.objectives, self.n_pairs, strict=True)),
            "weighting": self.weighting,
            "metric": self.metric,
            "beta": self.beta,
        }

    def content_sha256(self) -> str:
        """SHA-256 of what the game is (names, settings, margins and pair weights as float64 bytes): equal
        games hash equal, unlike the compressed file's bytes, which carry zip timestamps."""
        digest = hashlib.sha256()
        digest.update(json.dumps({**self.describe(), "players": list(self.players), "objectives": list(self.objectives),
                                  "sizes": None if self.sizes is None else self.sizes.tolist()}).encode())
        for d, c in zip(self.deltas, self.pair_weights, strict=True):
            digest.update(np.ascontiguousarray(d, dtype="<f8").tobytes())
            digest.update(np.ascontiguousarray(c, dtype="<f8").tobytes())
        return digest.hexdigest()

    # -- files ---------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The game as one compressed ``.npz`` (format `PAIR_GAME_FORMAT`; point game, pair weights kept)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(PAIR_GAME_FORMAT),
            "players": np.array(self.players),
            "objectives": np.array(self.objectives),
            "weighting": np.array(self.weighting),
            "metric": np.array(self.metric),
            "beta": np.array(self.beta),
            "sizes": np.array([]) if self.sizes is None else self.sizes,
        }
        for j in range(len(self.objectives)):
            arrays[f"delta_{j}"] = self.deltas[j]
            arrays[f"weights_{j}"] = self.pair_weights[j]
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write `to_bytes` atomically to `path`."""
        atomic_write_bytes(path, self.to_bytes())
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes, *, file: str | Path | None = None, field: str | None = None) -> PairGame:
        """Read what `to_bytes` wrote; `InputError` naming `file` for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                if str(arrays["format"]) != PAIR_GAME_FORMAT:
                    raise InputError(f"not a payoutsim pair game (format {arrays['format']!s})", file=file, field=field)
                objectives = tuple(str(x) for x in arrays["objectives"])
                sizes = np.asarray(arrays["sizes"], dtype=np.float64)
                return cls(
                    tuple(str(x) for x in arrays["players"]),
                    objectives,
                    [np.asarray(arrays[f"delta_{j}"]) for j in range(len(objectives))],
                    weighting=str(arrays["weighting"]),
                    sizes=sizes if sizes.size else None,
                    metric=str(arrays["metric"]),
                    beta=float(arrays["beta"]),
                    pair_weights=[np.asarray(arrays[f"weights_{j}"]) for j in range(len(objectives))],
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"cannot read the pair game: {err}", file=file, field=field) from None

    @classmethod
    def load(cls, path: str | Path, *, field: str | None = None) -> PairGame:
        """Read a file written by `save`."""
        path = require_file(path, field=field)
        return cls.from_bytes(Path(path).read_bytes(), file=path, field=field)


class PairReplicates:
    """B bootstrap replicates of a `PairGame` (`PairGame.bootstrap`): replicate b re-weights the pairs by
    multinomial counts ``counts[k][b]``. Implements `valuation.games.replicates.ReplicateGames`."""

    def __init__(self, game: PairGame, counts: tuple[np.ndarray, ...], seed: int) -> None:
        self.point = game
        self.counts = counts
        self.seed = seed
        self.players, self.objectives = game.players, game.objectives
        per_objective = ", ".join(f"{p} {o}" for p, o in zip(game.n_pairs, game.objectives, strict=True))
        self.kind = f"bootstrap over eval pairs ({per_objective}; jointly across coalitions)"

    @property
    def n_replicates(self) -> int:
        return int(self.counts[0].shape[0])

    def is_complete(self) -> bool:
        """Never a complete table: every value of a replicate is estimated by sampling."""
        return False

    def game(self, b: int) -> PairGame:
        """Replicate `b` as a `PairGame`."""
        return self.point.with_pair_weights([c[b] for c in self.counts])

    def stacked_game(self) -> StackedPairGame:
        """All replicates as one game with ``B·m`` objectives ``r<b>_<k>`` (replicate-major): a linear
        estimator values every replicate on the same sampled coalitions in one pass (`unstack`)."""
        return StackedPairGame(self)

    def unstack(self, values: np.ndarray) -> np.ndarray:
        """``float[n, B·m]`` values of `stacked_game` as ``float[B, n, m]``."""
        v = np.asarray(values, dtype=float)
        return v.reshape(v.shape[0], self.n_replicates, len(self.objectives)).transpose(1, 0, 2)


class StackedPairGame:
    """Every replicate of a `PairReplicates` at once: ``u[S, b·m + k]`` = replicate b's utility on objective
    k; the per-pair scores are computed once per coalition and re-weighted by a ``[p, B]`` product."""

    def __init__(self, replicates: PairReplicates) -> None:
        self.replicates = replicates
        self.players = replicates.players
        b, m = replicates.n_replicates, len(replicates.objectives)
        self.objectives = tuple(f"r{i}_{j}" for i in range(b) for j in range(m))
        self._weights = [c.T / c.sum(axis=1)[None, :] for c in replicates.counts]  # [p_k, B] each

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        point = self.replicates.point
        masks = check_masks(coalitions, len(self.players))
        b, m = self.replicates.n_replicates, len(point.objectives)
        out = np.empty((masks.shape[0], b, m))
        for start in range(0, masks.shape[0], BLOCK_ROWS):
            block = masks[start : start + BLOCK_ROWS]
            for j in range(m):
                out[start : start + block.shape[0], :, j] = point.scores(block, j) @ self._weights[j]
        return out.reshape(masks.shape[0], b * m)


__all__ = ["PAIR_GAME_FORMAT", "PairGame", "PairReplicates", "StackedPairGame"]
