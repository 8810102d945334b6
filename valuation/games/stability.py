"""Stability of a pooling agreement: individual rationality, the core, blocking coalitions, least-core ε.

Everything is in utility units of the objective-weighted member game, normalised so the empty pool
creates nothing: ``v'(S) = v(S) − v(∅)`` (v(∅) is the base model's utility, not value created by
anybody). A payout with shares ``s_i`` (summing to 1) gives member i the utility-unit allocation

    x_i = s_i · v'(N)                                   (so Σ_i x_i = v'(N))

and the agreement is judged by the excess of every coalition S, ``e(S) = v'(S) − x(S)``:

* individually rational ⇔ ``x_i ≥ v'({i})`` for every member (nobody is better off alone);
* in the core ⇔ ``e(S) ≤ 0`` for every coalition S ≠ ∅ (no group is better off on its own); a coalition
  with ``e(S) > 0`` is a **blocking coalition** and its excess is how much it would gain by leaving;
* the least-core ε is ``min_x max_{∅≠S⊊N} e(S)`` over efficient allocations: ε ≤ 0 ⇔ the core is
  non-empty (some agreement is stable), ε > 0 is the smallest subsidy per coalition that would make one.

Comparisons use the tolerance ``1e-9 · max(1, max_S |v'(S)|)``. The shares are the rule's exact shares
(before rounding to minor units; rounding moves each payout by less than one minor unit). The core is
checked exhaustively over the ``2^n`` coalitions up to `CORE_MAX_MEMBERS` members. Above, given the
game, blocking coalitions are **searched for** (`valuation.games.search.search_blocking`: sampled
coalitions and local search, `DEFAULT_SEARCH_BUDGET` evaluations): a coalition found is a proof of
instability (``stable`` is False), finding none is not a proof of stability (``stable`` stays None, and
the verdict says how many coalitions were examined). The tolerance is then taken over ``v'(N)`` and the
singletons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuation.games.coalitions import all_coalitions
from valuation.games.search import DEFAULT_SEARCH_BUDGET, RELATIVE_TOLERANCE, search_blocking

CORE_MAX_MEMBERS = 16
__all__ = ["CORE_MAX_MEMBERS", "DEFAULT_SEARCH_BUDGET", "RELATIVE_TOLERANCE", "StabilityReport", "check_stability",
           "normalised_table", "verdict_text"]


@dataclass(frozen=True)
class StabilityReport:
    """The stability verdict of one payout.

    Attributes:
        members: member names (order of `allocation`).
        value_created: ``v'(N)``.
        allocation: ``x_i`` in utility units.
        individually_rational: every ``x_i ≥ v'({i})``.
        ir_violations: ``(member, x_i, v'({i}))`` for members better off alone.
        core_checked: every coalition was checked (False when there are more than `CORE_MAX_MEMBERS`
            members, searched or not).
        in_core: no blocking coalition (None when not checked, or searched without finding one).
        blocking: ``(coalition members, excess)`` of every blocking coalition, largest excess first (after a
            search: those found, at most `valuation.games.search.MAX_REPORTED`).
        least_core_epsilon: the game's least-core ε (None when not computed).
        tolerance: the comparison tolerance used.
        notes: what was not done, and how the core was searched.
        search_examined: K, the distinct coalitions the search examined (None when there was no search).
        search_best_excess: the largest excess the search saw (None when there was no search).
        blocking_found: the blocking coalitions the search found (may exceed ``len(blocking)``; None
            without a search).
    """

    members: tuple[str, ...]
    value_created: float
    allocation: tuple[float, ...]
    individually_rational: bool
    ir_violations: tuple[tuple[str, float, float], ...]
    core_checked: bool
    in_core: bool | None
    blocking: tuple[tuple[tuple[str, ...], float], ...]
    least_core_epsilon: float | None
    tolerance: float
    notes: tuple[str, ...] = field(default=())
    search_examined: int | None = None
    search_best_excess: float | None = None
    blocking_found: int | None = None

    @property
    def stable(self) -> bool | None:
        """In the core (which implies individual rationality); None when the core was not checked."""
        if not self.individually_rational:
            return False
        return self.in_core

    def verdict(self, top: int = 3) -> str:
        """One or two human lines: stable / unstable with the worst blocking coalitions and ε (`verdict_text`)."""
        return verdict_text(self.to_json_dict(max_blocking=top), top)

    def to_json_dict(self, max_blocking: int = 50) -> dict:
        """JSON-safe summary (at most `max_blocking` blocking coalitions, the largest excesses). Keys are only
        ever added (the ledger stores this form): ``search_examined`` and ``search_best_excess`` are None
        unless the core was searched."""
        n_blocking = len(self.blocking) if self.blocking_found is None else self.blocking_found
        return {
            "stable": self.stable,
            "value_created": self.value_created,
            "individually_rational": self.individually_rational,
            "ir_violations": [{"member": m, "allocation": x, "alone": v} for m, x, v in self.ir_violations],
            "core_checked": self.core_checked,
            "in_core": self.in_core,
            "n_blocking": n_blocking,
            "blocking": [{"coalition": list(c), "excess": e} for c, e in self.blocking[:max_blocking]],
            "least_core_epsilon": self.least_core_epsilon,
            "tolerance": self.tolerance,
            "notes": list(self.notes),
            "search_examined": self.search_examined,
            "search_best_excess": self.search_best_excess,
        }


def normalised_table(table: np.ndarray) -> np.ndarray:
    """``v'(S) = v(S) − v(∅)`` of a full scalar table ``float[2^n]`` in coalition-index order."""
    v = np.asarray(table, dtype=float)
    return v - v[0]


def check_stability(
    members: Sequence[str],
    table: np.ndarray | None,
    shares: np.ndarray,
    *,
    singles: np.ndarray | None = None,
    grand: float | None = None,
    least_core_epsilon: float | None = None,
    game: Callable[[np.ndarray], np.ndarray] | None = None,
    search_budget: int = DEFAULT_SEARCH_BUDGET,
    seed: int = 0,
) -> StabilityReport:
    """Judge the payout with `shares` on the scalar member game (module docstring for the definitions).

    Args:
        members: member names, n of them.
        table: the full scalar table ``float[2^n]`` (coalition-index order; player j = bit j) of the
            raw weighted game (normalised here), or None when n is too large for a full table: then
            individual rationality is checked from `singles` (``v'({i})``) and `grand` (``v'(N)``), both
            already normalised, or from `game` when they are not given.
        shares: the rule's exact shares (sum 1, or all 0 for an empty pool).
        least_core_epsilon: the game's least-core ε, reported as is.
        game: the raw scalar member game (``bool[k, n] -> float[k]`` or ``float[k, 1]``), used when
            `table` is None: blocking coalitions are searched for with `search_budget` evaluations and
            `seed` (`valuation.games.search.search_blocking`).
    """
    n = len(members)
    s = np.asarray(shares, dtype=float)
    if s.shape != (n,):
        raise ValueError(f"shares must have shape ({n},), got {s.shape}")
    if table is None:
        if game is None:
            return _ir_only(members, s, singles, grand, least_core_epsilon)
        return _searched(members, s, game, singles, grand, least_core_epsilon, search_budget, seed)
    v = normalised_table(table)
    if v.shape != (2**n,):
        raise ValueError(f"table must have 2^{n} entries, got {v.shape}")
    total = float(v[-1])
    tol = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(v))) if v.size else 0.0)
    x = s * total
    ir_bad = _ir_violations(members, x, v[1 << np.arange(n)], tol)
    if n > CORE_MAX_MEMBERS:
        return _report(members, total, x, ir_bad, None, [], least_core_epsilon, tol,
                       [f"core not checked: more than {CORE_MAX_MEMBERS} members"])
    masks = all_coalitions(n)
    excess = v - masks.astype(float) @ x
    excess[0] = 0.0
    excess[-1] = 0.0
    idx = np.flatnonzero(excess > tol)
    order = sorted(idx.tolist(), key=lambda i: (-excess[i], i))
    blocking = [(tuple(m for m, b in zip(members, masks[i], strict=True) if b), float(excess[i])) for i in order]
    return _report(members, total, x, ir_bad, not blocking, blocking, least_core_epsilon, tol, [], core_checked=True)


def _ir_violations(
    members: Sequence[str], x: np.ndarray, alone: np.ndarray, tol: float
) -> list[tuple[str, float, float]]:
    return [(members[i], float(x[i]), float(alone[i])) for i in range(len(members)) if x[i] < alone[i] - tol]


def _tolerance(total: float, alone: np.ndarray) -> float:
    scale = max(abs(total), float(np.max(np.abs(alone))) if alone.size else 0.0)
    return RELATIVE_TOLERANCE * max(1.0, scale)


def _ir_only(
    members: Sequence[str], s: np.ndarray, singles: np.ndarray | None, grand: float | None, epsilon: float | None
) -> StabilityReport:
    """Individual rationality only, from the normalised singles and grand value (no game to search)."""
    if singles is None or grand is None:
        raise ValueError("give the full table, the game, or singles and grand")
    total, alone = float(grand), np.asarray(singles, dtype=float)
    tol = _tolerance(total, alone)
    x = s * total
    return _report(members, total, x, _ir_violations(members, x, alone, tol), None, [], epsilon, tol,
                   [f"core not checked: more than {CORE_MAX_MEMBERS} members"])


def _searched(
    members: Sequence[str],
    s: np.ndarray,
    game: Callable[[np.ndarray], np.ndarray],
    singles: np.ndarray | None,
    grand: float | None,
    epsilon: float | None,
    budget: int,
    seed: int,
) -> StabilityReport:
    """IR and a search for blocking coalitions (`search_blocking`): a blocking coalition found makes the
    payout unstable; none found leaves ``in_core`` None (the search is not a proof)."""
    n = len(members)
    if singles is None or grand is None:
        masks = np.concatenate([np.zeros((1, n), bool), np.ones((1, n), bool), np.eye(n, dtype=bool)])
        raw = np.asarray(game(masks), dtype=float).reshape(n + 2)
        grand, singles = float(raw[1] - raw[0]), raw[2:] - raw[0]
    total, alone = float(grand), np.asarray(singles, dtype=float)
    tol = _tolerance(total, alone)
    x = s * total
    found = search_blocking(game, x, budget=budget, seed=seed, tol=tol)
    blocking = [
        (tuple(m for m, b in zip(members, row, strict=True) if b), float(e))
        for row, e in zip(found.masks, found.excess, strict=True)
    ]
    how = "exhaustively" if found.exhaustive else f"by search (budget {budget}, seed {seed}; not a proof)"
    note = f"core searched {how}: {found.examined} coalitions examined, {found.n_found} blocking"
    in_core = False if blocking else (True if found.exhaustive else None)
    return _report(members, total, x, _ir_violations(members, x, alone, tol), in_core, blocking, epsilon, tol, [note],
                   core_checked=found.exhaustive, search=(found.examined, found.best_excess, found.n_found))


def _report(
    members: Sequence[str],
    total: float,
    x: np.ndarray,
    ir_bad: list[tuple[str, float, float]],
    in_core: bool | None,
    blocking: list[tuple[tuple[str, ...], float]],
    epsilon: float | None,
    tol: float,
    notes: list[str],
    *,
    core_checked: bool = False,
    search: tuple[int, float, int] | None = None,
) -> StabilityReport:
    examined, best, found = search if search is not None else (None, None, None)
    return StabilityReport(
        members=tuple(members),
        value_created=total,
        allocation=tuple(float(a) for a in x),
        individually_rational=not ir_bad,
        ir_violations=tuple(ir_bad),
        core_checked=core_checked,
        in_core=in_core,
        blocking=tuple(blocking),
        least_core_epsilon=epsilon,
        tolerance=tol,
        notes=tuple(notes),
        search_examined=examined,
        search_best_excess=None if best is None or not np.isfinite(best) else float(best),
        blocking_found=found,
    )


def verdict_text(summary: Mapping[str, Any], top: int = 3) -> str:
    """The stability verdict in words, from a `StabilityReport.to_json_dict` summary (the form the ledger
    stores, so the command line and the dashboard say the same thing): ``stable: …``, ``UNSTABLE: k blocking
    coalition(s)`` with the ``top`` largest excesses on a second line, or ``core not checked``; after a
    search (``search_examined`` set): ``UNSTABLE: k blocking coalition(s) found by search among K examined``
    or ``no blocking coalition found among K examined (search, not a proof)``, with individual rationality.
    The least-core ε is added when it was computed. Summaries stored before the search existed read as
    before."""
    epsilon = summary.get("least_core_epsilon")
    eps = "" if epsilon is None else f"; least-core ε = {epsilon:.6g}"
    ir = "individually rational" if summary.get("individually_rational") else "NOT individually rational"
    examined = summary.get("search_examined")
    blocking = summary.get("blocking", [])
    n_blocking = summary.get("n_blocking", len(blocking))
    if summary.get("stable") is True:
        how = "" if examined is None else f" (all {examined} coalitions examined)"
        return f"stable: the payout is individually rational and in the core{how}{eps}"
    if examined is not None and not summary.get("core_checked"):
        if not n_blocking:
            return f"{ir}; no blocking coalition found among {examined} examined (search, not a proof){eps}"
        head = f"UNSTABLE: {n_blocking} blocking coalition(s) found by search among {examined} examined; {ir}{eps}"
        return "\n".join([head, _worst_line(blocking, top)])
    if not summary.get("core_checked", summary.get("stable") is not None):
        return f"{ir}; core not checked (more than {CORE_MAX_MEMBERS} members){eps}"
    return "\n".join([f"UNSTABLE: {n_blocking} blocking coalition(s){eps}", _worst_line(blocking, top)])


def _worst_line(blocking: Sequence[Mapping[str, Any]], top: int) -> str:
    worst = ", ".join(f"{'+'.join(b['coalition'])} (excess {b['excess']:.6g})" for b in blocking[:top])
    return f"  would do better on their own: {worst}"
