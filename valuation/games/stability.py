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
checked exhaustively over the ``2^n`` coalitions up to `CORE_MAX_MEMBERS` members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from valuation.games.coalitions import all_coalitions

CORE_MAX_MEMBERS = 16
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class StabilityReport:
    """The stability verdict of one payout.

    Attributes:
        members: member names (order of `allocation`).
        value_created: ``v'(N)``.
        allocation: ``x_i`` in utility units.
        individually_rational: every ``x_i ≥ v'({i})``.
        ir_violations: ``(member, x_i, v'({i}))`` for members better off alone.
        core_checked: False when there are more than `CORE_MAX_MEMBERS` members.
        in_core: no blocking coalition (None when not checked).
        blocking: ``(coalition members, excess)`` of every blocking coalition, largest excess first.
        least_core_epsilon: the game's least-core ε (None when not computed).
        tolerance: the comparison tolerance used.
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
        """JSON-safe summary (at most `max_blocking` blocking coalitions, the largest excesses)."""
        return {
            "stable": self.stable,
            "value_created": self.value_created,
            "individually_rational": self.individually_rational,
            "ir_violations": [{"member": m, "allocation": x, "alone": v} for m, x, v in self.ir_violations],
            "core_checked": self.core_checked,
            "in_core": self.in_core,
            "n_blocking": len(self.blocking),
            "blocking": [{"coalition": list(c), "excess": e} for c, e in self.blocking[:max_blocking]],
            "least_core_epsilon": self.least_core_epsilon,
            "tolerance": self.tolerance,
            "notes": list(self.notes),
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
) -> StabilityReport:
    """Judge the payout with `shares` on the scalar member game (module docstring for the definitions).

    Args:
        members: member names, n of them.
        table: the full scalar table ``float[2^n]`` (coalition-index order; player j = bit j) of the
            raw weighted game (normalised here), or None when n is too large for a full table: then only
            individual rationality is checked, from `singles` (``v'({i})``) and `grand` (``v'(N)``),
            both already normalised.
        shares: the rule's exact shares (sum 1, or all 0 for an empty pool).
        least_core_epsilon: the game's least-core ε, reported as is.
    """
    n = len(members)
    s = np.asarray(shares, dtype=float)
    if s.shape != (n,):
        raise ValueError(f"shares must have shape ({n},), got {s.shape}")
    notes: list[str] = []
    if table is not None:
        v = normalised_table(table)
        if v.shape != (2**n,):
            raise ValueError(f"table must have 2^{n} entries, got {v.shape}")
        total = float(v[-1])
        alone = v[1 << np.arange(n)]
        scale = float(np.max(np.abs(v))) if v.size else 0.0
    else:
        if singles is None or grand is None:
            raise ValueError("give either the full table or singles and grand")
        total = float(grand)
        alone = np.asarray(singles, dtype=float)
        scale = float(max(abs(total), float(np.max(np.abs(alone))) if n else 0.0))
    tol = RELATIVE_TOLERANCE * max(1.0, scale)
    x = s * total
    ir_bad = [(members[i], float(x[i]), float(alone[i])) for i in range(n) if x[i] < alone[i] - tol]

    core_checked = table is not None and n <= CORE_MAX_MEMBERS
    blocking: list[tuple[tuple[str, ...], float]] = []
    in_core: bool | None = None
    if core_checked:
        masks = all_coalitions(n)
        excess = v - masks.astype(float) @ x
        excess[0] = 0.0
        excess[-1] = 0.0
        idx = np.flatnonzero(excess > tol)
        order = sorted(idx.tolist(), key=lambda i: (-excess[i], i))
        blocking = [(tuple(m for m, b in zip(members, masks[i], strict=True) if b), float(excess[i])) for i in order]
        in_core = not blocking
    else:
        notes.append(f"core not checked: more than {CORE_MAX_MEMBERS} members")
    return StabilityReport(
        members=tuple(members),
        value_created=total,
        allocation=tuple(float(a) for a in x),
        individually_rational=not ir_bad,
        ir_violations=tuple(ir_bad),
        core_checked=core_checked,
        in_core=in_core,
        blocking=tuple(blocking),
        least_core_epsilon=least_core_epsilon,
        tolerance=tol,
        notes=tuple(notes),
    )


def verdict_text(summary: Mapping[str, Any], top: int = 3) -> str:
    """The stability verdict in words, from a `StabilityReport.to_json_dict` summary (the form the ledger
    stores, so the command line and the dashboard say the same thing): ``stable: …``, ``UNSTABLE: k blocking
    coalition(s)`` with the ``top`` largest excesses on a second line, or ``core not checked``; with the
    least-core ε when it was computed."""
    epsilon = summary.get("least_core_epsilon")
    eps = "" if epsilon is None else f"; least-core ε = {epsilon:.6g}"
    if summary.get("stable") is True:
        return f"stable: the payout is individually rational and in the core{eps}"
    if not summary.get("core_checked", summary.get("stable") is not None):
        ir = "individually rational" if summary.get("individually_rational") else "NOT individually rational"
        return f"{ir}; core not checked (more than {CORE_MAX_MEMBERS} members){eps}"
    blocking = summary.get("blocking", [])
    lines = [f"UNSTABLE: {summary.get('n_blocking', len(blocking))} blocking coalition(s){eps}"]
    worst = ", ".join(f"{'+'.join(b['coalition'])} (excess {b['excess']:.6g})" for b in blocking[:top])
    lines.append(f"  would do better on their own: {worst}")
    return "\n".join(lines)
