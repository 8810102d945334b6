"""The market layer's read API for exploring a ledger (used by the dashboard; no training code).

(Over 500 lines on purpose: the dashboard's one read API, which its pages and tests call as
``read_model.X``: the ledger's runs and the what-ifs computed from a loaded `RunData` belong together.)

Everything here reads the ledger read-only (`market.ledger.connect(..., read_only=True)`) and builds on
the market modules' public functions: `market.rules` (`RuleContext`, `rule_values`, `compute_payout`,
`allocate`), `valuation.games.stability.check_stability`, `market.ledger` (`list_runs`, `export_rows`) and
`market.export` (`write_csv`, `write_parquet`). The member-level coalition table stored with each run
(``coalition_utilities``; kept for runs of at most `valuation.games.stability.CORE_MAX_MEMBERS` members) is the
"cached game": what-ifs, re-weightings and marginal contributions are computed from it, never by
retraining.

Large runs. A run of more than 16 members has no table; when its game was a `PairGame`
(`valuation.coalition_utility.compact`) the ledger keeps that compact source-level game instead
(``compact_games``), and `RunData.member_game` is the member game grouped from it. Nothing enumerates
2^n coalitions then: the coalitions shown are a seeded sample (`market.coalition_samples`: ∅, N, every
singleton and leave-one-out, coalitions of random sizes), marginal contributions are sampled by size (a
stratified estimate of the value), and a what-if pool of more than `EXACT_POOL_MEMBERS` members is valued
with the sampled estimators and a budget of `WHAT_IF_BUDGET` evaluations (``shapley``:
`market.rules.SAMPLED_SHAPLEY_METHOD`), its split as `market.rules.compute_payout` does above 20
members, and its stability checked for individual rationality only (as `market.period.run_period` does
above 16). The full pool under the run's own rule is the recorded payout.

Re-weighting by linearity. For the linear rules (``shapley``, ``banzhaf``, ``loo``) a member's claim under
objective weights ``a`` is ``Σ_k a_k φ_k`` with the stored per-objective values φ_k; the pool is then split
exactly as `market.rules.compute_payout` does (the run's negative policy, largest-remainder rounding in
`market.money`, snap-to-zero scale and null members from the re-weighted coalition table), so the run's
own weights reproduce the stored amounts. ``robust_shapley`` multiplies positive Shapley values by a
per-member factor that depends only on data similarity; the factor is recovered from the stored run. The
least core is not linear: it is re-solved on the stored table. ``proportional`` and ``equal`` do not depend
on the weights.

Uncertainty. A run recorded with its uncertainty (`market.uncertainty`; the ledger's optional tables
``uncertainty``, ``valuation_intervals``, ``payout_intervals``) is loaded as `RunData.uncertainty`
(`RunUncertainty`: amount and share std errs and intervals, value intervals per objective, the rank
matrix and what was resampled); runs recorded without it, and ledgers written before those tables
existed, load with None. The intervals belong to the recorded weights and rule: a re-weighted payout
(`weighted_payout` with other weights, see `same_weights`) or a what-if pool has no recorded interval.

Sub-pool pricing (what-if). As in `market.pooling`, a pool S of the run's members earns
``revenue(S) = P · max(0, v'(S)) / v'(N)`` (P the run's pot, ``v'(S) = v(S) − v(∅)`` the objective-weighted
value created; half-to-even to a minor unit), and splits it with the chosen rule on its own member game.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import factorial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from market.coalition_samples import marginal_samples, sampled_coalition_rows
from market.defaults import LEDGER_ENV as LEDGER_ENV  # re-exported for the dashboard and its tests
from market.export import write_csv, write_parquet
from market.ledger import (
    DEFAULT_LEDGER,
    EXPORT_COLUMNS,
    UNCERTAINTY_TABLES,
    LedgerBusyError,
    connect,
    export_rows,
    list_runs,
    present_tables,
)
from market.rules import (
    LINEAR_RULES,
    SAMPLED_SHAPLEY_METHOD,
    Payout,
    RuleContext,
    allocate,
    compute_payout,
    is_sampled,
    rule_values,
)
from valuation.coalition_utility.compact import PAIR_GAME_FORMAT, PairGame
from valuation.errors import InputError, PayoutsimError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate, exact_shapley
from valuation.games.game import Game, GroupedGame, TableGame
from valuation.games.players import null_players
from valuation.games.stability import StabilityReport, check_stability, verdict_text

WEIGHTED = "weighted"
WHAT_IF_RULES: tuple[str, ...] = ("shapley", "banzhaf", "loo", "least_core", "proportional", "equal")
EXAMPLE_COMMAND = "payoutsim payout data/scenarios/example.toml"
#: Utility evaluations of a sampled what-if (a pool of more than `EXACT_POOL_MEMBERS` members of a run
#: with a compact game): ≈ 0.2 s for the regression estimator at 64 members on 2 cores (README).
WHAT_IF_BUDGET = 2000
#: A what-if pool of a compact game up to this many members is solved exactly, as on a stored table
#: (2^10 coalitions); larger pools are sampled.
EXACT_POOL_MEMBERS = 10
#: Sampled coalitions shown for a run without a table (besides ∅, N, singletons and leave-one-outs), and
#: sampled coalitions per size behind one member's marginal contributions.
SAMPLED_COALITIONS = 200
MARGINALS_PER_SIZE = 8

LedgerState = Literal["ok", "missing", "empty", "busy", "invalid"]


# ---------------------------------------------------------------------------------------------------
# the ledger file


def stability_verdict(stability: Mapping[str, Any] | StabilityReport) -> tuple[bool | None, str]:
    """``(stable, text)`` of a stored stability verdict (`StabilityReport.to_json_dict`, as the ledger keeps
    it) or of a fresh `StabilityReport`: ``stable`` is True, False or None (core not checked); ``text`` is
    the same words `payoutsim payout` prints (`valuation.games.stability.verdict_text`)."""
    summary = stability.to_json_dict() if isinstance(stability, StabilityReport) else stability
    return summary.get("stable"), verdict_text(summary)


def ledger_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ledger to read: `explicit`, else ``$PAYOUTSIM_LEDGER``, else ``runs/ledger.duckdb``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(LEDGER_ENV)
    return Path(env) if env else DEFAULT_LEDGER


def ledger_version(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    """A cache key that changes whenever the ledger changes: (mtime_ns, size) of the file and its WAL
    (zeros for a missing file)."""
    out: list[int] = []
    for p in (Path(path), Path(f"{path}.wal")):
        try:
            st = p.stat()
            out += [st.st_mtime_ns, st.st_size]
        except OSError:
            out += [0, 0]
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class LedgerStatus:
    """Whether the ledger can be shown: ``state`` is ``ok`` (``n_runs`` ≥ 1), ``missing`` (no file),
    ``empty`` (no run yet), ``busy`` (a writer holds DuckDB's lock: retry) or ``invalid`` (not a ledger);
    ``message`` says what to do."""

    path: Path
    state: LedgerState
    message: str
    n_runs: int = 0


def ledger_status(path: str | os.PathLike[str]) -> LedgerStatus:
    """Check the ledger without raising (see `LedgerStatus`)."""
    p = Path(path)
    if not p.is_file():
        return LedgerStatus(p, "missing", f"No ledger at {p} yet. Fill one with `{EXAMPLE_COMMAND} --ledger {p}`.")
    try:
        with connect(p, read_only=True) as con:
            row = con.execute("SELECT count(*) FROM runs").fetchone()
    except LedgerBusyError:
        return LedgerStatus(
            p, "busy", f"{p} is being written by another process (DuckDB allows one writer at a time). Retry in a moment."
        )
    except PayoutsimError as err:
        return LedgerStatus(p, "invalid", f"Cannot read {p}: {err}")
    n = int(row[0]) if row else 0
    if n == 0:
        return LedgerStatus(p, "empty", f"The ledger {p} has no run yet. Record one with `{EXAMPLE_COMMAND} --ledger {p}`.")
    return LedgerStatus(p, "ok", f"{n} run(s) in {p}", n)


# ---------------------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class RunSummary:
    """One recorded run, for pickers: ``label`` is ``"#seq scenario · period · rule"``."""

    run_id: str
    seq: int
    scenario: str
    period: str
    rule: str
    currency: str
    pool_minor: int
    stable: bool | None
    created_at: str

    @property
    def label(self) -> str:
        return f"#{self.seq} {self.scenario} · {self.period} · {self.rule}"


def runs(path: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run of the ledger in recording order (`market.ledger.list_runs`)."""
    out = []
    for r in list_runs(path):
        out.append(
            RunSummary(
                run_id=str(r["run_id"]),
                seq=int(r["seq"]),
                scenario=str(r["scenario_name"]),
                period=str(r["period"]),
                rule=str(r["rule"]),
                currency=str(r["currency"]),
                pool_minor=int(r["pool_minor"]),
                stable=json.loads(r["stability_json"]).get("stable"),
                created_at=r["created_at"].isoformat(timespec="seconds"),
            )
        )
    return out


#: A pair of members is resolved when P(one is paid more than the other) is outside (1 − this, this).
RESOLVED = 0.95


@dataclass(frozen=True)
class RunUncertainty:
    """A run's recorded uncertainty (`market.uncertainty`, the ledger's optional tables), as arrays
    aligned with the run's ``members`` (and ``objectives`` for ``phi_lo``/``phi_hi``); NaN where the ledger
    has no figure.

    Attributes:
        method: the stored method (``uncertainty.method_json``: ``resampled``, ``replicates``, ``level``,
            ``seed``, ``refused``, ``held``).
        amount_se: the amount's standard error in minor units (a float).
        amount_lo, amount_hi: the amount's interval, whole minor units.
        share_se, share_lo, share_hi: the share's standard error and interval (fractions of the pool).
        value_lo, value_hi: the interval of the rule's weighted value (the payout's claim).
        phi_lo, phi_hi: ``float[n, k]`` the interval of each per-objective value (the trade-off plane).
        rank: ``float[n, n]``, ``rank[i, j]`` = P(member i is paid more than member j) over the replicates
            (ties half; the diagonal NaN).
    """

    method: dict[str, Any]
    amount_se: np.ndarray
    amount_lo: tuple[int, ...]
    amount_hi: tuple[int, ...]
    share_se: np.ndarray
    share_lo: np.ndarray
    share_hi: np.ndarray
    value_lo: np.ndarray
    value_hi: np.ndarray
    phi_lo: np.ndarray
    phi_hi: np.ndarray
    rank: np.ndarray

    @property
    def level(self) -> float:
        return float(self.method.get("level", 0.95))

    @property
    def replicates(self) -> int:
        return int(self.method.get("replicates", 0))

    @property
    def resampled(self) -> str:
        return str(self.method.get("resampled", "unknown"))

    @property
    def has_objective_intervals(self) -> bool:
        return self.phi_lo.size > 0 and bool(np.isfinite(self.phi_lo).all() and np.isfinite(self.phi_hi).all())

    def describe(self) -> str:
        """One sentence: ``"95% intervals from 200 replicate payouts; resampled: bootstrap over …"``, plus
        the replicates refused (``negative = "error"``) or held, when any."""
        text = f"{100 * self.level:g}% intervals from {self.replicates} replicate payouts; resampled: {self.resampled}"
        extra = []
        if int(self.method.get("refused", 0)):
            extra.append(f"{self.method['refused']} replicate(s) had a negative value the rule would refuse to pay")
        if int(self.method.get("held", 0)):
            extra.append(f"in {self.method['held']} replicate(s) the pool was held")
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def unresolved(self, members: Sequence[str], resolved: float = RESOLVED) -> list[tuple[str, str, float]]:
        """The pairs ``(a, b, P(a paid more than b))``, each once (i < j), whose order is not resolved:
        ``1 − resolved < P < resolved`` (pairs paid the same in every replicate, `always_tied`, are not
        listed)."""
        out = []
        for i, a in enumerate(members):
            for j in range(i + 1, len(members)):
                p = float(self.rank[i, j])
                if np.isfinite(p) and 1.0 - resolved < p < resolved and not always_tied(self, i, j):
                    out.append((a, members[j], p))
        return out


def always_tied(unc: RunUncertainty, i: int, j: int) -> bool:
    """Members i and j were paid the same amount in every replicate (both intervals one and the same
    point, e.g. 0 – 0): their P = 0.5 is a tie, not an unresolved order."""
    return unc.amount_lo[i] == unc.amount_hi[i] == unc.amount_lo[j] == unc.amount_hi[j]


@dataclass(frozen=True)
class RunData:
    """Everything stored about one run, as arrays aligned with ``members``.

    Attributes:
        members: member names in payout order; ``sources[i]`` the sources member i owns.
        values, std_errs, shares, amounts: the stored payout (the rule's claim, its std err, the share and
            the integer minor units; ``Σ amounts + held_minor == pool_minor``).
        no_value: the run's no-value policy (``hold`` | ``equal``; runs recorded before the policy existed
            were paid under ``equal``).
        weights: the run's objective weights.
        objectives: objectives with stored per-member values; ``phi[i, k]`` / ``phi_se[i, k]`` the rule's
            value of member i for objective k (empty for rules that have none, e.g. ``equal``).
        table_objectives, table: the member-level coalition table ``float[2^n, m]`` in coalition-index
            order (member j = bit j), or None when the ledger has none (more than 16 members); without a
            table ``table_objectives`` are the compact game's objectives.
        sizes: member -> preference pairs (from the scenario's ``[sizes]``), or None.
        stability: the stored stability verdict (`StabilityReport.to_json_dict`).
        uncertainty: the payout's recorded uncertainty (`RunUncertainty`), or None: a run recorded
            without it (exact values of a table without standard errors) or a ledger written before it.
        compact: the stored compact source-level game (`PairGame`, the ledger's ``compact_games``) of a
            run of more than 16 members, or None.
    """

    run_id: str
    seq: int
    scenario: str
    period: str
    rule: str
    negative: str
    currency: str
    revenue_minor: int
    fee_minor: int
    pool_minor: int
    weights: dict[str, float]
    members: tuple[str, ...]
    sources: tuple[tuple[str, ...], ...]
    values: np.ndarray
    std_errs: np.ndarray
    shares: np.ndarray
    amounts: tuple[int, ...]
    objectives: tuple[str, ...]
    phi: np.ndarray
    phi_se: np.ndarray
    table_objectives: tuple[str, ...]
    table: np.ndarray | None
    sizes: dict[str, int] | None
    stability: dict[str, Any]
    warnings: tuple[str, ...]
    seed: int = 0
    budget: int | None = None
    max_exact_members: int = 12
    no_value: str = "equal"
    uncertainty: RunUncertainty | None = None
    compact: PairGame | None = None

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def held_minor(self) -> int:
        """Minor units of the pool not paid out (``hold``: no member created value), else 0."""
        return self.pool_minor - int(sum(self.amounts))

    @property
    def is_linear(self) -> bool:
        """The payout re-weights by linearity (Σ a_k φ_k) rather than by re-solving."""
        return self.rule in LINEAR_RULES

    @property
    def has_table(self) -> bool:
        return self.table is not None

    @property
    def has_game(self) -> bool:
        """The member game can be evaluated: a stored table or a stored compact game."""
        return self.table is not None or self.compact is not None

    @property
    def is_compact(self) -> bool:
        """No 2^n table, but the compact game: coalitions are sampled (module docstring: large runs)."""
        return self.table is None and self.compact is not None

    def member_game(self) -> Game:
        """The run's member-level game, players ``#0 … #n−1`` (member i is ``#i``), objectives
        `table_objectives`: the stored 2^n table (`TableGame`) or, without one, the stored compact game
        grouped by the members' sources (`GroupedGame`, ``v(T) = u(∪_{m∈T} sources(m))``). `InputError`
        when the run has neither."""
        aliases = [f"#{i}" for i in range(self.n)]
        if self.table is not None:
            return TableGame(aliases, self.table_objectives, all_coalitions(self.n), self.table, source="ledger")
        if self.compact is None:
            raise InputError(
                "this run has no stored coalition table and no compact game (more than 16 members and a "
                "game that is not a PairGame): what-ifs need one",
                field="run",
            )
        return GroupedGame(self.compact, {a: tuple(s) for a, s in zip(aliases, self.sources, strict=True)})


def load_run(path: str | os.PathLike[str], run_id: str) -> RunData:
    """Read one run with its payouts, per-objective values and coalition table (`InputError` if unknown)."""
    row, pay, vals, coal, unc, compact_rows = _stored_rows(path, run_id)
    (seq, scen, period, rule, negative, currency, rev, fee, pool, weights_json, config_json, stab_json, warn_json) = row
    members = tuple(str(p[0]) for p in pay)
    index = {m: i for i, m in enumerate(members)}
    objectives, phi, phi_se = _stored_values(vals, index)
    table_objectives, table = _stored_table(coal, index)
    compact = _stored_compact(compact_rows, path) if table is None else None
    if compact is not None:
        table_objectives = tuple(compact.objectives)
    config = json.loads(config_json)
    member_sources = tuple(tuple(json.loads(p[1])) for p in pay)
    valuation = config.get("valuation", {})
    return RunData(
        run_id=run_id,
        seq=int(seq),
        scenario=str(scen),
        period=str(period),
        rule=str(rule),
        negative=str(negative),
        currency=str(currency),
        revenue_minor=int(rev),
        fee_minor=int(fee),
        pool_minor=int(pool),
        weights={k: float(v) for k, v in json.loads(weights_json).items()},
        members=members,
        sources=member_sources,
        values=np.array([float(p[2]) for p in pay]),
        std_errs=np.array([np.nan if p[3] is None else float(p[3]) for p in pay]),
        shares=np.array([float(p[4]) for p in pay]),
        amounts=tuple(int(p[5]) for p in pay),
        objectives=objectives,
        phi=phi,
        phi_se=phi_se,
        table_objectives=table_objectives,
        table=table,
        sizes=_member_sizes(config.get("sizes"), members, member_sources),
        stability=json.loads(stab_json),
        warnings=tuple(json.loads(warn_json)),
        seed=int(valuation.get("seed") or 0),
        budget=valuation.get("budget"),
        max_exact_members=int(valuation.get("max_exact_members") or 12),
        no_value=str(config.get("market", {}).get("no_value", "equal")),
        uncertainty=_stored_uncertainty(unc, index, objectives),
        compact=compact,
    )


def _stored_rows(path: str | os.PathLike[str], run_id: str) -> tuple[Any, ...]:
    """The run's row of ``runs`` and its rows of ``payouts``, ``valuations`` and ``coalition_utilities``
    (in position order), its rows of those `UNCERTAINTY_TABLES` the ledger has (old ledgers: none) and its
    ``compact_games`` rows (none in old ledgers), read in one read-only connection; `InputError` for an
    unknown run id."""
    with connect(path, read_only=True) as con:
        row = con.execute(
            "SELECT seq, scenario_name, period, rule, negative, currency, revenue_minor, fee_minor, pool_minor, "
            "weights_json, config_json, stability_json, warnings_json FROM runs WHERE run_id = ?",
            [run_id],
        ).fetchone()
        if row is None:
            raise InputError(f"no run {run_id!r} in the ledger", file=path, field="run")
        pay = con.execute(
            "SELECT member, sources, value, std_err, share, amount_minor FROM payouts WHERE run_id = ? ORDER BY position",
            [run_id],
        ).fetchall()
        vals = con.execute(
            "SELECT player, objective, value, std_err FROM valuations WHERE run_id = ? ORDER BY position", [run_id]
        ).fetchall()
        coal = con.execute(
            "SELECT coalition, objective, utility FROM coalition_utilities WHERE run_id = ? ORDER BY position",
            [run_id],
        ).fetchall()
        unc: dict[str, list[Any]] = {}
        queries = {
            "uncertainty": "SELECT method_json FROM uncertainty",
            "valuation_intervals": "SELECT player, objective, lo, hi FROM valuation_intervals",
            "payout_intervals": "SELECT member, share_se, share_lo, share_hi, amount_se, amount_lo_minor, "
            "amount_hi_minor, rank_json FROM payout_intervals",
        }
        for table in present_tables(con, UNCERTAINTY_TABLES):
            unc[table] = con.execute(f"{queries[table]} WHERE run_id = ? ORDER BY position", [run_id]).fetchall()
        compact: list[tuple[Any, ...]] = []
        if present_tables(con, ("compact_games",)):
            compact = con.execute(
                "SELECT format, sha256, data FROM compact_games WHERE run_id = ? ORDER BY position", [run_id]
            ).fetchall()
    return row, pay, vals, coal, unc, compact


def _stored_compact(rows: Sequence[tuple[Any, ...]], path: str | os.PathLike[str]) -> PairGame | None:
    """The run's compact game from its ``compact_games`` row (`PairGame.from_bytes`), or None without
    one; `InputError` when its bytes do not match the stored sha256 or its format is unknown."""
    if not rows:
        return None
    fmt, digest, data = rows[0]
    data = bytes(data)
    if fmt != PAIR_GAME_FORMAT or hashlib.sha256(data).hexdigest() != digest:
        raise InputError(
            f"the run's compact game does not match its sha256 or has an unknown format ({fmt!r}); "
            "run `payoutsim ledger verify`",
            file=path,
            field="compact_games",
        )
    return PairGame.from_bytes(data, file=path, field="compact_games")


def _stored_uncertainty(
    unc: Mapping[str, Sequence[tuple[Any, ...]]], index: Mapping[str, int], objectives: Sequence[str]
) -> RunUncertainty | None:
    """`RunUncertainty` from the rows of the uncertainty tables (`_stored_rows`), or None when the run has
    no method row or no payout interval (old ledgers, runs recorded without uncertainty)."""
    method_rows, pay_rows = unc.get("uncertainty", []), unc.get("payout_intervals", [])
    if not method_rows or not pay_rows:
        return None
    n, k = len(index), len(objectives)

    def nan(shape: tuple[int, ...] | int) -> np.ndarray:
        return np.full(shape, np.nan)

    def num(x: Any) -> float:
        return np.nan if x is None else float(x)

    amount_se, share_se, share_lo, share_hi = nan(n), nan(n), nan(n), nan(n)
    amount_lo, amount_hi = [0] * n, [0] * n
    rank = nan((n, n))
    for member, s_se, s_lo, s_hi, a_se, a_lo, a_hi, rank_json in pay_rows:
        if member not in index:
            continue
        i = index[member]
        share_se[i], share_lo[i], share_hi[i], amount_se[i] = num(s_se), num(s_lo), num(s_hi), num(a_se)
        amount_lo[i], amount_hi[i] = int(a_lo), int(a_hi)
        for other, p in json.loads(rank_json).items():
            if other in index:
                rank[i, index[other]] = float(p)
    value_lo, value_hi, phi_lo, phi_hi = nan(n), nan(n), nan((n, k)), nan((n, k))
    for player, obj, lo, hi in unc.get("valuation_intervals", []):
        if player not in index:
            continue
        i = index[player]
        if obj == WEIGHTED:
            value_lo[i], value_hi[i] = num(lo), num(hi)
        elif obj in objectives:
            phi_lo[i, objectives.index(obj)], phi_hi[i, objectives.index(obj)] = num(lo), num(hi)
    return RunUncertainty(
        method=dict(json.loads(method_rows[0][0])),
        amount_se=amount_se,
        amount_lo=tuple(amount_lo),
        amount_hi=tuple(amount_hi),
        share_se=share_se,
        share_lo=share_lo,
        share_hi=share_hi,
        value_lo=value_lo,
        value_hi=value_hi,
        phi_lo=phi_lo,
        phi_hi=phi_hi,
        rank=rank,
    )


def _stored_values(
    vals: Sequence[tuple[Any, ...]], index: Mapping[str, int]
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """``(objectives, phi, phi_se)`` from the ``valuations`` rows: the per-objective values of the members
    in `index` (the ``weighted`` rows are the payout's claims, not an objective; a missing std err is NaN)."""
    objectives = tuple(dict.fromkeys(str(v[1]) for v in vals if v[1] != WEIGHTED))
    phi = np.zeros((len(index), len(objectives)))
    phi_se = np.zeros((len(index), len(objectives)))
    for player, obj, value, se in vals:
        if obj != WEIGHTED and player in index:
            k = objectives.index(obj)
            phi[index[player], k] = float(value)
            phi_se[index[player], k] = np.nan if se is None else float(se)
    return objectives, phi, phi_se


def _stored_table(
    coal: Sequence[tuple[Any, ...]], index: Mapping[str, int]
) -> tuple[tuple[str, ...], np.ndarray | None]:
    """``(table_objectives, table)`` from the ``coalition_utilities`` rows: ``float[2^n, m]`` in
    coalition-index order (member j = bit j), or None when there are none, n > 20 or a cell is missing."""
    n = len(index)
    table_objectives = tuple(dict.fromkeys(str(c[1]) for c in coal))
    table: np.ndarray | None = None
    if coal and n <= 20:
        table = np.full((2**n, len(table_objectives)), np.nan)
        for label, obj, utility in coal:
            idx = sum(1 << index[m] for m in json.loads(label))
            table[idx, table_objectives.index(obj)] = float(utility)
        if np.isnan(table).any():
            table = None
    return table_objectives, table


def _member_sizes(
    source_sizes: Mapping[str, Any] | None, members: Sequence[str], member_sources: Sequence[Sequence[str]]
) -> dict[str, int] | None:
    """member -> Σ pairs of its sources (the scenario's ``[sizes]``), or None unless every member's
    sources all have a size."""
    if not source_sizes:
        return None
    sizes = {}
    for m, srcs in zip(members, member_sources, strict=True):
        if all(s in source_sizes for s in srcs):
            sizes[m] = int(sum(int(source_sizes[s]) for s in srcs))
    return sizes if len(sizes) == len(members) else None


# ---------------------------------------------------------------------------------------------------
# the member game from the stored table (or the stored compact game)


def what_if_budget(run: RunData) -> int:
    """The evaluations a sampled what-if of a compact-game run may spend: the run's own budget when it is
    at most `WHAT_IF_BUDGET` (so the run's own setting reproduces its payout), else `WHAT_IF_BUDGET`."""
    return min(int(run.budget), WHAT_IF_BUDGET) if run.budget else WHAT_IF_BUDGET


def member_context(
    run: RunData, rule: str | None = None, weights: Mapping[str, float] | None = None, *, budget: int | None = None
) -> RuleContext:
    """A `market.rules.RuleContext` whose game is the run's member game (`RunData.member_game`: the stored
    table, or the compact game grouped by sources).

    Players are positional aliases ``#0 … #n−1`` (member i owns source ``#i``); sizes are the members'
    pair counts; the sampled estimators' budget is `budget`, else the run's. `InputError` when the run has
    neither a table nor a compact game.
    """
    game = run.member_game()
    aliases = list(game.players)
    return RuleContext(
        game=game,
        groups={m: (a,) for m, a in zip(run.members, aliases, strict=True)},
        weights=dict(run.weights if weights is None else weights),
        rule=rule or run.rule,
        negative=run.negative,
        no_value=run.no_value,
        sizes=None if run.sizes is None else {a: run.sizes[m] for m, a in zip(run.members, aliases, strict=True)},
        seed=run.seed,
        budget=run.budget if budget is None else budget,
        max_exact_members=run.max_exact_members,
    )


def objective_values(run: RunData) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, str]:
    """Per-member, per-objective values for the trade-off view: ``(objectives, values, std_errs, method)``.

    The stored values of the run's rule when it has them (``method`` = the rule); otherwise (least core,
    proportional, equal) the exact Shapley values of the stored member table (``method`` = ``shapley``),
    or, with a compact game only, the sampled Shapley values (`SAMPLED_SHAPLEY_METHOD`, `what_if_budget`
    evaluations, the run's seed; ``method`` = ``shapley (sampled)``); empty when the run has none of them.
    """
    if run.objectives:
        return run.objectives, run.phi, np.nan_to_num(run.phi_se), run.rule
    if run.table is not None:
        values = np.asarray(exact_shapley(run.table), dtype=float)
        return run.table_objectives, values, np.zeros_like(values), "shapley"
    if run.compact is not None:
        result = approximate(run.member_game(), SAMPLED_SHAPLEY_METHOD, what_if_budget(run), seed=run.seed)
        return run.table_objectives, result.values, np.nan_to_num(result.std_errs), "shapley (sampled)"
    return (), np.zeros((run.n, 0)), np.zeros((run.n, 0)), run.rule


def objective_intervals(run: RunData) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(lo, hi, level)``, ``float[n, k]`` each: the recorded intervals of the per-objective values that
    `objective_values` returns, or None when the run has none for them (no uncertainty, an old ledger, or
    a rule whose trade-off values are recomputed here: least core, proportional, equal)."""
    unc = run.uncertainty
    if unc is None or not run.objectives or not unc.has_objective_intervals:
        return None
    return unc.phi_lo, unc.phi_hi, unc.level


def same_weights(run: RunData, weights: Mapping[str, float], tol: float = 1e-9) -> bool:
    """True when `weights` are the run's recorded objective weights (absent objectives count as 0): only
    then do the run's recorded intervals describe a re-weighted payout (`weighted_payout`)."""
    keys = set(run.weights) | set(weights)
    return all(abs(float(run.weights.get(o, 0.0)) - float(weights.get(o, 0.0))) <= tol for o in keys)


def scalar_values(run: RunData, masks: np.ndarray, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """``float[k]``: the objective-weighted member game ``Σ_k a_k v_k(S)`` of each row of ``bool[k, n]``
    (the run's weights by default), on the stored table or the compact game (`RunData.member_game`)."""
    game = run.member_game()
    w = run.weights if weights is None else weights
    a = np.array([float(w.get(o, 0.0)) for o in game.objectives])
    return np.asarray(game(np.asarray(masks, dtype=bool)), dtype=float) @ a


def scalar_table(run: RunData, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The objective-weighted member table ``Σ_k a_k v_k(S)`` as ``float[2^n]`` (`InputError` without a table)."""
    if run.table is None:
        raise InputError("this run has no stored coalition table", field="run")
    w = run.weights if weights is None else weights
    a = np.array([float(w.get(o, 0.0)) for o in run.table_objectives])
    return run.table @ a


# ---------------------------------------------------------------------------------------------------
# re-weighting


@dataclass(frozen=True)
class WeightedPayout:
    """The run's pool split under other objective weights.

    ``method`` says how the claims were obtained: ``linear`` (Σ a_k φ_k of the stored values),
    ``re-solved`` (least core on the stored table) or ``unchanged`` (proportional / equal).
    """

    weights: dict[str, float]
    values: np.ndarray
    std_errs: np.ndarray
    shares: np.ndarray
    amounts: tuple[int, ...]
    method: str
    warnings: tuple[str, ...] = field(default=())
    held_minor: int = 0


def linear_values(run: RunData, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """``(Σ_k a_k φ_k, Σ_k |a_k| se_k)`` per member from the stored per-objective values."""
    a = np.array([float(weights.get(o, 0.0)) for o in run.objectives])
    se = np.nan_to_num(run.phi_se, nan=0.0)
    return run.phi @ a, np.abs(se) @ np.abs(a)


def weighted_payout(run: RunData, weights: Mapping[str, float]) -> WeightedPayout:
    """Split the run's pool with objective weights `weights` (module docstring: re-weighting by linearity)."""
    weights = {str(k): float(v) for k, v in weights.items()}
    notes: list[str] = []
    if run.rule in ("proportional", "equal") or (not run.objectives and run.rule != "least_core"):
        values, std_errs, method = run.values.copy(), np.nan_to_num(run.std_errs), "unchanged"
    elif run.rule == "least_core":
        ctx = member_context(run, weights=weights, budget=what_if_budget(run) if run.is_compact else None)
        rv = rule_values(ctx, run.members)
        values, std_errs, method = rv.values, rv.std_errs, "re-solved"
    else:
        values, std_errs = linear_values(run, weights)
        method = "linear"
        if run.rule == "robust_shapley":
            base, _ = linear_values(run, run.weights)
            factor = np.ones(run.n)
            known = base > 0
            factor[known] = run.values[known] / base[known]
            if np.any((values > 0) & ~known):
                notes.append("robust factor unknown for members with no positive value in the run: taken as 1")
            values = np.where(values > 0, values * factor, values)
            std_errs = std_errs * np.abs(factor)
    scale = None
    null = None
    if run.table is not None and run.rule not in ("proportional", "equal"):
        table = scalar_table(run, weights)
        scale = float(np.max(np.abs(table - table[0])))
        null = null_players(table)
    alloc = allocate(run.members, values, run.pool_minor, run.negative, no_value=run.no_value, scale=scale, null=null)
    return WeightedPayout(
        weights, np.asarray(values, float), np.asarray(std_errs, float), alloc.shares, alloc.amounts, method,
        tuple(notes) + alloc.warnings, alloc.held,
    )


def two_objective_weights(run: RunData, x: str, y: str, a: float) -> dict[str, float]:
    """Weights ``{x: a, y: 1 − a}`` (every other objective 0)."""
    weights = {o: 0.0 for o in (run.objectives or run.table_objectives)}
    weights[x] = float(a)
    weights[y] = 1.0 - float(a)
    return weights


def payout_curve(run: RunData, x: str, y: str, steps: int = 21) -> list[dict[str, Any]]:
    """Each member's payout across the weight range: rows ``{weight, member, amount_minor, share}`` for
    ``a = 0, 1/(steps−1), …, 1`` with weights ``{x: a, y: 1 − a}``."""
    rows = []
    for a in np.linspace(0.0, 1.0, steps):
        wp = weighted_payout(run, two_objective_weights(run, x, y, float(a)))
        for m, amount, share in zip(run.members, wp.amounts, wp.shares, strict=True):
            rows.append({"weight": float(a), "member": m, "amount_minor": int(amount), "share": float(share)})
    return rows


# ---------------------------------------------------------------------------------------------------
# what-if pools


@dataclass(frozen=True)
class WhatIf:
    """A sub-pool of the run's members under a rule: value created ``v'(S)`` (utility units), its revenue
    (`revenue_minor`, priced as in `market.pooling`), the payout and the stability report.

    ``method`` says how the pool was valued: ``exact`` (no sampling: every coalition of the pool on a
    stored table or a compact game's pool of at most `EXACT_POOL_MEMBERS` members; or a rule that needs no
    sampling, ``loo``, ``equal``, ``proportional``, on a larger pool), ``recorded`` (the run's own pool and
    rule: the recorded claims), or ``sampled`` (the rule's sampled estimator with `budget` evaluations).
    ``full_stability`` is False for a large pool of a compact game (any ``method``): its stability is
    checked for individual rationality only (no core, no blocking coalitions, no least-core ε).
    """

    members: tuple[str, ...]
    rule: str
    value_created: float
    grand_value: float
    revenue_minor: int
    payout: Payout
    stability: StabilityReport
    method: str = "exact"
    budget: int | None = None
    full_stability: bool = True


def what_if_rules(run: RunData) -> list[str]:
    """The rules a what-if can use on this run (``proportional`` needs sizes)."""
    return [r for r in WHAT_IF_RULES if r != "proportional" or run.sizes is not None]


def what_if(run: RunData, members: Sequence[str], rule: str | None = None) -> WhatIf:
    """Pool only `members` (a subset of the run's) under `rule` (default: the run's); see module docstring
    (exactly on a stored table or a small pool; sampled for a large pool of a compact game)."""
    chosen = tuple(m for m in run.members if m in set(members))
    unknown = [m for m in members if m not in run.members]
    if unknown:
        raise InputError(f"unknown member {unknown[0]!r}", field="members")
    if not chosen:
        raise InputError("no members in the pool: pick at least one", field="members")
    rule = rule or run.rule
    if rule not in what_if_rules(run):
        raise InputError(f"rule {rule!r} is not available for a what-if on this run", field="rule")
    if run.table is not None:
        full = scalar_table(run)
        idx = sum(1 << run.members.index(m) for m in chosen)
        base, grand_raw, pool_raw = float(full[0]), float(full[-1]), float(full[idx])
    else:
        mask = np.array([m in chosen for m in run.members])
        ends = scalar_values(run, np.stack([np.zeros_like(mask), np.ones_like(mask), mask]))
        base, grand_raw, pool_raw = (float(x) for x in ends)
    grand, created = grand_raw - base, pool_raw - base
    if len(chosen) == run.n:
        revenue = run.pool_minor
    elif grand <= 0:
        revenue = 0
    else:
        revenue = round(run.pool_minor * Fraction(max(0.0, created)) / Fraction(grand))
    if run.table is not None or len(chosen) <= EXACT_POOL_MEMBERS:
        payout, stability = _exact_pool(run, chosen, rule, int(revenue))
        return WhatIf(chosen, rule, created, grand, int(revenue), payout, stability)
    budget = what_if_budget(run)
    payout, method = _sampled_pool_payout(run, chosen, rule, int(revenue), budget)
    singles = scalar_values(run, np.eye(run.n, dtype=bool)[[run.members.index(m) for m in chosen]]) - base
    stability = check_stability(chosen, None, payout.shares, singles=singles, grand=created)
    return WhatIf(chosen, rule, created, grand, int(revenue), payout, stability, method, budget, False)


def _exact_pool(run: RunData, chosen: tuple[str, ...], rule: str, revenue: int) -> tuple[Payout, StabilityReport]:
    """The payout of `chosen` under `rule` and its full stability report, from every coalition of the
    pool (`market.rules.compute_payout`, `check_stability` with the least-core ε)."""
    ctx = member_context(run, rule=rule)
    payout = compute_payout(ctx, chosen, revenue, run.currency)
    sub = np.asarray(ctx.scalar_game(chosen)(all_coalitions(len(chosen))), float)[:, 0]
    eps = (
        float(payout.info["epsilon"])
        if rule == "least_core"
        else float(approximate(ctx.scalar_game(chosen), "least_core").info["epsilon"][0])
    )
    return payout, check_stability(chosen, sub, payout.shares, least_core_epsilon=eps)


def _sampled_pool_payout(
    run: RunData, chosen: tuple[str, ...], rule: str, revenue: int, budget: int
) -> tuple[Payout, str]:
    """``(payout, method)`` of a large pool of a compact-game run: the recorded claims for the run's own
    pool and rule (``recorded``), else the rule's values with `budget` evaluations (``sampled`` when the
    rule samples, `market.rules.is_sampled`; ``exact`` for ``loo``, ``equal``, ``proportional``); split as
    `market.rules.compute_payout` does above 20 members (snap scale max |value|, no null-player scan)."""
    if rule == run.rule and len(chosen) == run.n:
        values, std_errs, result, info, method = run.values, np.nan_to_num(run.std_errs), None, {}, "recorded"
    else:
        ctx = member_context(run, rule=rule, budget=budget)
        rv = rule_values(ctx, chosen)
        method = "sampled" if is_sampled(ctx, len(chosen)) else "exact"
        values, std_errs, result, info = rv.values, rv.std_errs, rv.result, rv.info
    alloc = allocate(chosen, values, revenue, run.negative, no_value=run.no_value)
    payout = Payout(
        members=chosen, rule=rule, currency=run.currency, pool_minor=revenue, values=np.asarray(values, float),
        std_errs=np.asarray(std_errs, float), shares=alloc.shares, amounts=alloc.amounts, result=result,
        warnings=alloc.warnings, info=info, held_minor=alloc.held,
    )
    return payout, method


# ---------------------------------------------------------------------------------------------------
# coalitions


def coalition_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per (coalition, objective) of the stored table, plus ``weighted`` with the run's weights:
    ``{index, coalition, size, objective, utility, created}`` with ``created = v(S) − v(∅)``. Without a
    table but with a compact game: the sampled coalitions of `market.coalition_samples.sampled_coalition_rows`
    (`SAMPLED_COALITIONS`, seeded by the run's seed; columns ``kind`` and ``members`` added); else none."""
    if run.table is None:
        if run.compact is None:
            return []
        game = run.member_game()
        weights = np.array([float(run.weights.get(o, 0.0)) for o in game.objectives])
        return sampled_coalition_rows(game, run.members, weights, count=SAMPLED_COALITIONS, seed=run.seed)
    rows = []
    objs = [*run.table_objectives, WEIGHTED] if len(run.table_objectives) > 1 else list(run.table_objectives)
    cols = [run.table[:, k] for k in range(len(run.table_objectives))]
    if len(run.table_objectives) > 1:
        cols.append(scalar_table(run))
    for idx in range(2**run.n):
        names = [m for j, m in enumerate(run.members) if idx >> j & 1]
        label = "+".join(names) if names else "∅ (base model)"
        for obj, col in zip(objs, cols, strict=True):
            rows.append(
                {
                    "index": idx,
                    "coalition": label,
                    "size": len(names),
                    "objective": obj,
                    "utility": float(col[idx]),
                    "created": float(col[idx] - col[0]),
                }
            )
    return rows


def marginal_contributions(run: RunData, member: str, objective: str = WEIGHTED) -> list[dict[str, Any]]:
    """The marginal contributions behind `member`'s Shapley value for `objective` (``weighted``: the run's
    weights): rows ``{coalition, size, before, after, marginal, weight, contribution}`` for every
    S ⊆ N∖{i}, with ``marginal = v(S ∪ i) − v(S)``, ``weight = |S|!(n−|S|−1)!/n!`` and
    ``contribution = weight · marginal``; the contributions sum to φ_i. Without a table but with a compact
    game: `MARGINALS_PER_SIZE` sampled coalitions per size (`market.coalition_samples.marginal_samples`,
    seeded by the run's seed; a ``members`` column added) whose contributions sum to the stratified
    estimate of φ_i; else none."""
    if run.table is None:
        if run.compact is None:
            return []
        game = run.member_game()
        if objective == WEIGHTED:
            weights = np.array([float(run.weights.get(o, 0.0)) for o in game.objectives])
        else:
            weights = np.array([float(o == objective) for o in game.objectives])
        return marginal_samples(game, run.members, member, weights, per_size=MARGINALS_PER_SIZE, seed=run.seed)
    i = run.members.index(member)
    col = scalar_table(run) if objective == WEIGHTED else run.table[:, run.table_objectives.index(objective)]
    n = run.n
    rows = []
    for idx in range(2**n):
        if idx >> i & 1:
            continue
        size = idx.bit_count()
        weight = factorial(size) * factorial(n - size - 1) / factorial(n)
        names = [m for j, m in enumerate(run.members) if idx >> j & 1]
        marginal = float(col[idx | (1 << i)] - col[idx])
        rows.append(
            {
                "coalition": "+".join(names) if names else "∅",
                "size": size,
                "before": float(col[idx]),
                "after": float(col[idx | (1 << i)]),
                "marginal": marginal,
                "weight": weight,
                "contribution": weight * marginal,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# ledger rows and export


def ledger_rows(
    path: str | os.PathLike[str],
    *,
    run_ids: Sequence[str] | None = None,
    periods: Sequence[str] | None = None,
    members: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The export rows (`market.ledger.export_rows`, columns `EXPORT_COLUMNS`) filtered by run, period and
    member; a filter that is None or empty keeps everything."""
    rows = export_rows(path)
    if run_ids:
        keep = set(run_ids)
        rows = [r for r in rows if r["run_id"] in keep]
    if periods:
        keep = set(periods)
        rows = [r for r in rows if r["period"] in keep]
    if members:
        keep = set(members)
        rows = [r for r in rows if r["member"] in keep]
    return rows


def export_bytes(rows: Sequence[Mapping[str, Any]], fmt: Literal["csv", "parquet"]) -> bytes:
    """`rows` as the CLI's safe export (`market.export.write_csv` with formula escaping, or
    `write_parquet`), returned as bytes (written to a temporary folder first)."""
    writer = {"csv": write_csv, "parquet": write_parquet}[fmt]
    with tempfile.TemporaryDirectory(prefix="payoutsim-export-") as tmp:
        out = writer(rows, Path(tmp) / f"payouts.{fmt}", EXPORT_COLUMNS)
        return out.read_bytes()
