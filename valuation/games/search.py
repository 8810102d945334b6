"""Search for blocking coalitions when the ``2^n`` coalitions are too many to enumerate.

On a scalar game v normalised so the empty coalition creates nothing, ``v'(S) = v(S) − v(∅)``, and an
allocation x (normally efficient, ``Σ_i x_i = v'(N)``), the **excess** of a coalition is

    e(S) = v'(S) − x(S)

and S is *violating* when ``e(S) > threshold + tol`` (threshold 0: a **blocking coalition**, which would
gain by leaving; the least core's constraint generation uses threshold ε). `search_blocking` looks for
the coalitions of largest excess among the proper non-empty ones (∅ ≠ S ≠ N) with a budget of game
evaluations, every distinct coalition evaluated once:

1. ∅, N, every singleton {i} and every N∖{i} (``2n + 2`` evaluations);
2. random coalitions (`SAMPLE_FRACTION` of the rest of the budget): a size s uniform in 1 … n−1, then s
   members uniformly;
3. local search: steepest ascent from the best coalitions of steps 1–2, `CLIMBS_PER_BATCH` climbs at
   once; each step evaluates all n single-member flips (add or remove one member) of every active climb
   in one game call and moves each climb to its best flip while that raises the excess (or, when it is
   better, to the coalition with all the improving flips applied at once: one more evaluation, a long
   stride on a nearly additive excess); a climb ends at a local maximum and the next best start takes
   its place. When no start is left, step 2 draws a new batch. The search stops when the budget is
   spent.

When the budget covers all ``2^n`` coalitions (small n) they are all evaluated instead: the search is
then exhaustive and exact (``exhaustive`` is True). Otherwise finding no violating coalition is *not* a
proof that none exists. Deterministic for a seed. ``tol = RELATIVE_TOLERANCE · max(1, max |v'(S)|)``
over the coalitions evaluated, unless given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from valuation.errors import InputError
from valuation.games.coalitions import coalitions_of_indices

DEFAULT_SEARCH_BUDGET = 20_000  # game evaluations: ≈ 0.2–1 s at 64 players on a compact game
RELATIVE_TOLERANCE = 1e-9
SAMPLE_FRACTION = 0.25  # of the budget left after step 1, per sampling batch
CLIMBS_PER_BATCH = 8
MAX_REPORTED = 200  # violating coalitions kept (largest excess first)
EXHAUSTIVE_MAX_PLAYERS = 20

ScalarFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BlockingSearch:
    """What `search_blocking` found.

    Attributes:
        masks: ``bool[k, n]`` the violating coalitions (excess > threshold + tol), largest excess first,
            at most `MAX_REPORTED` (or the caller's cap).
        excess: ``float[k]`` their excesses.
        n_found: violating coalitions found before the cap.
        examined: K, the distinct proper non-empty coalitions whose excess was computed.
        evaluations: game evaluations (distinct coalitions, ∅ and N included); at most the budget.
        best_excess: the largest excess seen (−inf when n < 2: no proper non-empty coalition).
        best_mask: ``bool[n]`` a coalition with that excess (all False when none).
        threshold, tolerance: a coalition is violating when ``excess > threshold + tolerance``.
        exhaustive: every coalition was examined (the answer is exact).
        peaks: ``bool[p, n]`` the violating local maxima the climbs ended at (distinct regions of large
            excess, largest first; the least core's constraint generation adds them as cuts), with their
            excesses `peak_excess`.
    """

    masks: np.ndarray
    excess: np.ndarray
    n_found: int
    examined: int
    evaluations: int
    best_excess: float
    best_mask: np.ndarray
    threshold: float
    tolerance: float
    exhaustive: bool
    peaks: np.ndarray | None = None
    peak_excess: np.ndarray | None = None


class _Excesses:
    """The excess of every coalition evaluated so far, keyed by its packed bit mask; ∅ and N map to −inf
    (never a candidate). Counts game evaluations against the budget."""

    def __init__(self, fn: ScalarFn, x: np.ndarray, budget: int) -> None:
        self.fn, self.x, self.budget = fn, x, budget
        self.n = x.size
        self.used = 0
        self.scale = 0.0
        self.table: dict[bytes, float] = {}
        self.peaks: list[bytes] = []
        ends = np.stack([np.zeros(self.n, dtype=bool), np.ones(self.n, dtype=bool)])
        raw = self._call(ends)
        self.empty = float(raw[0])
        self.grand = float(raw[1]) - self.empty
        self.scale = abs(self.grand)
        for key in self.keys(ends):
            self.table[key] = -np.inf

    @property
    def left(self) -> int:
        return self.budget - self.used

    def _call(self, masks: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(masks), dtype=float)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != (masks.shape[0],):
            raise ValueError(f"the game returned shape {out.shape} for {masks.shape[0]} coalitions")
        self.used += masks.shape[0]
        return out

    @staticmethod
    def keys(masks: np.ndarray) -> list[bytes]:
        return [row.tobytes() for row in np.packbits(masks, axis=1)]

    def fresh(self, keys: list[bytes]) -> dict[bytes, int]:
        """key -> first row, for the keys not evaluated yet."""
        out: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.table and key not in out:
                out[key] = i
        return out

    def excess_of(self, masks: np.ndarray, keys: list[bytes] | None = None) -> np.ndarray:
        """Excess of every row (new rows evaluated in one game call; the caller checks the budget)."""
        keys = self.keys(masks) if keys is None else keys
        new = self.fresh(keys)
        if new:
            rows = masks[np.fromiter(new.values(), dtype=np.int64, count=len(new))]
            values = self._call(rows) - self.empty
            self.scale = max(self.scale, float(np.max(np.abs(values))))
            for key, e in zip(new, values - rows.astype(float) @ self.x, strict=True):
                self.table[key] = float(e)
        return np.array([self.table[k] for k in keys])


def search_blocking(
    game: Callable[[np.ndarray], np.ndarray],
    allocation: np.ndarray,
    *,
    budget: int = DEFAULT_SEARCH_BUDGET,
    seed: int = 0,
    threshold: float = 0.0,
    tol: float | None = None,
    max_reported: int = MAX_REPORTED,
    starts: np.ndarray | None = None,
) -> BlockingSearch:
    """Look for coalitions with ``v'(S) − x(S) > threshold + tol`` (module docstring).

    Args:
        game: ``masks bool[k, n] -> float[k]`` or ``float[k, 1]`` (a one-objective `Game` works), raw:
            ``v(∅)`` is subtracted here.
        allocation: x, ``float[n]``.
        budget: maximum game evaluations (distinct coalitions, ∅ and N included), at least ``2n + 2``.
        seed: seeds the sampling (same seed, same answer).
        threshold: 0 for blocking coalitions; the current ε for the least core's separation.
        tol: the comparison tolerance (default ``RELATIVE_TOLERANCE · max(1, max |v'(S)|)``).
        max_reported: cap on the violating coalitions returned.
        starts: ``bool[k, n]`` extra coalitions evaluated with the singletons and N∖{i}, and climbed from
            with them, best excess first (the least core passes the last round's additions).

    Raises:
        InputError: budget below ``2n + 2``; a multi-objective game.
    """
    x = np.asarray(allocation, dtype=float)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("allocation must be a finite float[n]")
    n = x.size
    objectives = getattr(game, "objectives", None)
    if objectives is not None and len(objectives) != 1:
        raise InputError(f"the blocking-coalition search needs a one-objective game, got {len(objectives)} "
                         "objectives (scalarise it first)", field="objectives")
    if budget < 2 * n + 2:
        raise InputError(f"search budget {budget} too small: it needs at least 2n + 2 = {2 * n + 2} evaluations "
                         "(∅, N, every singleton and every N∖{i})", field="budget")
    ex = _Excesses(game, x, budget)
    exhaustive = n <= EXHAUSTIVE_MAX_PLAYERS and 2**n <= budget
    if exhaustive:
        if n >= 2:
            ex.excess_of(coalitions_of_indices(np.arange(1, 2**n - 1, dtype=np.int64), n))
    elif n >= 2:
        _search(ex, np.random.default_rng(seed), starts)
    return _result(ex, threshold, tol, max_reported, exhaustive)


def _search(ex: _Excesses, rng: np.random.Generator, starts: np.ndarray | None) -> None:
    """Steps 1–3 of the module docstring, within ``ex.budget``."""
    n = ex.n
    eye = np.eye(n, dtype=bool)
    pool = [eye, ~eye]
    if starts is not None and len(starts):
        pool.insert(0, np.asarray(starts, dtype=bool).reshape(-1, n))
    first = np.concatenate(pool)
    first = first[_proper(first)]
    first_keys = ex.keys(first)
    take = _fitting_prefix(ex, first_keys)
    first, first_keys = first[:take], first_keys[:take]
    ex.excess_of(first, first_keys)
    explored: set[bytes] = set()
    masks, keys = first, first_keys
    while ex.left >= n:
        sample = _sample(ex, rng)
        if sample is None:
            break  # nothing new to draw within the budget, or the space is (nearly) exhausted
        masks, keys = np.concatenate([masks, sample[0]]), keys + sample[1]
        _climb_all(ex, (masks, keys), explored, eye)
        masks, keys = masks[:0], []


def _sample(ex: _Excesses, rng: np.random.Generator) -> tuple[np.ndarray, list[bytes]] | None:
    """Evaluate a batch of new random coalitions (`SAMPLE_FRACTION` of the budget left, keeping n
    evaluations for a climb step); None when none is new or none fits."""
    n = ex.n
    masks = random_coalitions(rng, max(n, int(SAMPLE_FRACTION * ex.left)), n)
    keys = ex.keys(masks)
    rows = np.fromiter(ex.fresh(keys).values(), dtype=np.int64)[: max(0, ex.left - n)]
    if rows.size == 0:
        return None
    masks, keys = masks[rows], [keys[i] for i in rows]
    ex.excess_of(masks, keys)
    return masks, keys


def _fitting_prefix(ex: _Excesses, keys: list[bytes]) -> int:
    """How many leading rows fit the budget left (counting only rows not evaluated yet)."""
    seen: set[bytes] = set()
    for i, key in enumerate(keys):
        if key not in ex.table and key not in seen:
            if len(seen) >= ex.left:
                return i
            seen.add(key)
    return len(keys)


def _proper(masks: np.ndarray) -> np.ndarray:
    sizes = masks.sum(axis=1)
    return (sizes > 0) & (sizes < masks.shape[1])


def random_coalitions(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """k coalitions: size uniform in 1 … n−1, then that many members uniformly (no repeats within a row)."""
    sizes = rng.integers(1, n, size=k)
    u = rng.random((k, n))
    kth = np.sort(u, axis=1)[np.arange(k), sizes - 1]
    return u <= kth[:, None]


def _climb_all(
    ex: _Excesses, candidates: tuple[np.ndarray, list[bytes]], explored: set[bytes], eye: np.ndarray
) -> None:
    """Steepest-ascent climbs from `candidates` (best excess first, skipping explored coalitions),
    `CLIMBS_PER_BATCH` at a time, each step one game call; stops when the budget does not cover a step."""
    masks, keys = candidates
    exc = np.array([ex.table[k] for k in keys])
    order = [i for i in np.argsort(-exc, kind="stable") if np.isfinite(exc[i])]
    queue = iter(order)
    active: list[tuple[np.ndarray, float]] = []
    while True:
        while len(active) < CLIMBS_PER_BATCH:
            i = next(queue, None)
            if i is None:
                break
            if keys[i] not in explored:
                explored.add(keys[i])
                active.append((masks[i], float(exc[i])))
        if not active:
            return
        active = _climb_step(ex, active, explored, eye)
        if active is None:
            return


def _climb_step(
    ex: _Excesses, active: list[tuple[np.ndarray, float]], explored: set[bytes], eye: np.ndarray
) -> list[tuple[np.ndarray, float]] | None:
    """One step of every active climb that fits the budget; returns the climbs still rising (None when
    not even the first climb's step fits)."""
    n = eye.shape[0]
    flips = [cur[None, :] ^ eye for cur, _ in active]
    flip_keys = [ex.keys(f) for f in flips]
    fit, pending = 0, set()
    for keys in flip_keys:
        new = {k for k in keys if k not in ex.table} - pending
        if len(pending) + len(new) > ex.left:
            break
        pending |= new
        fit += 1
    if fit == 0:
        return None
    batch = np.concatenate(flips[:fit])
    batch_keys = [k for keys in flip_keys[:fit] for k in keys]
    values = ex.excess_of(batch, batch_keys).reshape(fit, n)
    margin = 1e-12 * max(1.0, ex.scale)
    moves = [(flips[c][j], float(values[c, j])) for c, j in enumerate(np.argmax(values, axis=1))]
    moves = _compound_moves(ex, active[:fit], values, moves, margin)
    rising = []
    for c, (mask, value) in enumerate(moves):
        if value > active[c][1] + margin:
            explored.update(ex.keys(mask[None]))
            rising.append((mask, value))
        else:
            ex.peaks.extend(ex.keys(active[c][0][None]))
    return rising + active[fit:]


def _compound_moves(
    ex: _Excesses,
    active: list[tuple[np.ndarray, float]],
    values: np.ndarray,
    moves: list[tuple[np.ndarray, float]],
    margin: float,
) -> list[tuple[np.ndarray, float]]:
    """Try, for every climb with two or more improving flips, the coalition with all of them applied at
    once (one evaluation per climb, all in one game call, while the budget lasts); keep it where it beats
    the best single flip. On a nearly additive excess this walks to the local maximum in one step."""
    tries: list[tuple[int, np.ndarray]] = []
    for c, (cur, e) in enumerate(active):
        improving = values[c] > e + margin
        if improving.sum() >= 2:
            mask = cur ^ improving
            if 0 < mask.sum() < mask.size:
                tries.append((c, mask))
    if not tries:
        return moves
    masks = np.stack([m for _, m in tries])
    keys = ex.keys(masks)
    take = _fitting_prefix(ex, keys)
    if take == 0:
        return moves
    compound = ex.excess_of(masks[:take], keys[:take])
    out = list(moves)
    for (c, mask), e in zip(tries[:take], compound, strict=True):
        if e > out[c][1]:
            out[c] = (mask, float(e))
    return out


def _result(ex: _Excesses, threshold: float, tol: float | None, cap: int, exhaustive: bool) -> BlockingSearch:
    """Collect the violating coalitions (largest excess first, ties by mask) and the best one."""
    n = ex.n
    tolerance = RELATIVE_TOLERANCE * max(1.0, ex.scale) if tol is None else float(tol)
    items = [(e, k) for k, e in ex.table.items() if np.isfinite(e)]
    examined = len(items)
    violating = sorted(((e, k) for e, k in items if e > threshold + tolerance), key=lambda t: (-t[0], t[1]))
    kept = violating[:cap]

    def unpack(key: bytes) -> np.ndarray:
        return np.unpackbits(np.frombuffer(key, dtype=np.uint8))[:n].astype(bool)

    masks = np.array([unpack(k) for _, k in kept], dtype=bool).reshape(len(kept), n)
    if items:
        best_e, best_k = max(items, key=lambda t: (t[0], t[1]))
        best_mask = unpack(best_k)
    else:
        best_e, best_mask = -np.inf, np.zeros(n, dtype=bool)
    peak_keys = sorted({k for k in ex.peaks if ex.table[k] > threshold + tolerance}, key=lambda k: (-ex.table[k], k))
    peaks = np.array([unpack(k) for k in peak_keys], dtype=bool).reshape(len(peak_keys), n)
    return BlockingSearch(
        masks=masks,
        excess=np.array([e for e, _ in kept], dtype=float),
        n_found=len(violating),
        examined=examined,
        evaluations=ex.used,
        best_excess=float(best_e),
        best_mask=best_mask,
        threshold=float(threshold),
        tolerance=tolerance,
        exhaustive=exhaustive,
        peaks=peaks,
        peak_excess=np.array([ex.table[k] for k in peak_keys], dtype=float),
    )

