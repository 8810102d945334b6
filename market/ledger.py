"""The payout ledger: an append-only DuckDB file with full provenance of every run.

(Over 500 lines on purpose: the schema and its check on opening, the writer, the readers and the verifier
of one file share its columns and its hash chain; what a path holds and DuckDB's errors are in
`market.ledger_file`.) duckdb is imported inside `connect`: ``import duckdb`` takes about 0.1 s, which
commands that never open a ledger (``payoutsim --help``, the valuation commands) would pay.

Tables (created on first use; ``meta`` holds the schema version):

* ``runs`` — one row per (scenario, period) payout: ``run_id``, ``seq`` (1, 2, … in recording order),
  scenario name, file and hash, period, rule, negative policy, currency, revenue / fee / pool in minor
  units, objective weights (JSON), the validated scenario (config JSON), input hashes (JSON; with the
  valuation run's provenance when the scenario ran the pipeline: see `inputs_provenance`), base model,
  code version and git commit, the stability verdict (JSON), warnings (JSON), ``created_at`` (UTC),
  ``prev_hash`` and ``record_hash``.
* ``coalition_utilities`` — the member-level game used: ``(run_id, position, coalition, objective, utility)``
  with ``coalition`` a JSON array of member names (``[]`` is the base model).
* ``valuations`` — value and standard error per player and objective (``objective = "weighted"`` is the
  rule's objective-weighted claim the payout was split by).
* ``payouts`` — ``(run_id, position, member, sources, value, std_err, share, amount_minor, currency)``.
* ``run_macs`` — ``(run_id, mac)``: the optional keyed MAC of a run's record hash (`market.ledger_mac`;
  absent in ledgers written before it, created empty when one is opened for writing).
* the payout's uncertainty (`market.uncertainty`; absent in ledgers written before it and created empty when
  one is opened for writing; a run without uncertainty has no rows there):
  ``uncertainty`` — ``(run_id, position, method_json)``: what was resampled, replicates, level, seed;
  ``valuation_intervals`` — ``(run_id, position, player, objective, lo, hi)``: the interval of each
  ``valuations`` row (same position); ``payout_intervals`` — ``(run_id, position, member, share_se,
  share_lo, share_hi, amount_se, amount_lo_minor, amount_hi_minor, rank_json)``: per member the share's and
  the amount's standard error and interval (amounts in minor units) and ``rank_json``, ``{other member:
  P(this member is paid more)}``.
* ``compact_games`` — ``(run_id, position, format, sha256, data)``: for a run of more than
  `valuation.games.stability.CORE_MAX_MEMBERS` members whose game is a `PairGame`
  (`valuation.coalition_utility.compact`), the source-level game itself (``data``: `PairGame.to_bytes`, a
  compressed ``.npz`` of about 100–200 KiB at 64 sources; ``format`` its format tag, ``sha256`` its
  digest) — what ``coalition_utilities`` is for smaller runs: every what-if of the run needs only it
  (`market.read_model.RunData.member_game`). Absent in ledgers written before it (created empty when one is
  opened for writing); a run without it has no row there.

Guarantees:

* **Append-only.** This module only ever INSERTs; corrections are new runs (change the scenario).
* **One transaction per run.** A crash mid-run leaves no trace of the run (DuckDB's WAL discards the
  uncommitted transaction); child tables reference ``runs(run_id)``.
* **Idempotent.** The key is (scenario hash, period): ``scenario_sha256`` covers the scenario file and
  the content of the files it references, so re-running the same scenario and period adds nothing,
  and any change to the scenario or its inputs is a new run.
* **Hash-chained.** ``record_hash = sha256(prev_hash ‖ canonical JSON of the run row and all its child
  rows)`` (an optional table — the uncertainty tables, ``compact_games`` — enters only when the run has
  rows in it, so runs recorded before those tables existed keep their hashes; a BLOB enters as the
  SHA-256 of its bytes, so the compact game's bytes are covered), chained through ``prev_hash`` (the previous run's ``record_hash``; 64 zeros for the first), so
  `verify` detects an edited, deleted or re-ordered row *that was not re-hashed*. The chain alone proves
  nothing against whoever can write the file (they can recompute every hash): tamper evidence comes from
  outside the file — receipts and head hashes members keep (`market.receipts`) and the optional keyed MAC
  (`market.ledger_mac`, ``key=`` of `record_run`).
* **One writer at a time.** DuckDB locks the file across processes; a second writer gets `LedgerBusyError`.
* **Only ledgers are written.** A ledger path is a new file or an existing payoutsim ledger of this schema
  version (`check_ledger`, run by the commands before any valuation or payout, and `connect`): a directory,
  a CSV or other non-DuckDB file, a DuckDB database with other tables, another schema version or a damaged
  file is refused (`market.ledger_file`). A DuckDB database with no tables and no views at all holds
  nothing to lose and becomes a ledger. `record_run` returns only after the commit and after reading the
  run back through a new connection.
* **Damage is reported as damage.** A checksum mismatch or a truncated file is `LedgerDamagedError` (exit 2),
  a lock held by another process `LedgerBusyError` (exit 3); `verify` reads every row, so it fails on
  damage anywhere in the tables, while `show` and the dashboard notice damage in what they read and a
  truncated file on opening.
* **Amounts fit.** Minor units are BIGINT; amounts beyond 2^63 − 1 minor units are refused when the
  scenario is read (`market.money.to_minor`).

``created_at`` is the current UTC time, or ``SOURCE_DATE_EPOCH`` (seconds) when that variable is set, so
identical inputs can give byte-identical ledgers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from market.defaults import DEFAULT_LEDGER as DEFAULT_LEDGER  # re-exported: the ledger's default path
from market.ledger_file import (
    LedgerBusyError,
    check_complete,
    check_ledger_file,
    check_on_disk,
    close_quietly,
    ledger_error,
    read_every_row,
    rollback_quietly,
)
from market.ledger_file import LedgerDamagedError as LedgerDamagedError  # re-exported for callers
from market.ledger_mac import MAC_SCHEMA, check_writer_key, insert_mac, read_macs
from market.money import format_minor, minor_to_units
from market.period import PeriodRun
from market.rules import Payout
from market.scenario.inputs import ScenarioInputs
from market.scenario.schema import scenario_config_json
from valuation.coalition_utility.compact import PAIR_GAME_FORMAT
from valuation.errors import InputError, OutputError

if TYPE_CHECKING:
    import duckdb

SCHEMA_VERSION = "1"
GENESIS_HASH = "0" * 64
LEDGER_TABLES: tuple[str, ...] = ("meta", "runs", "coalition_utilities", "valuations", "payouts")

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "seq",
    "scenario_name",
    "scenario_file",
    "scenario_sha256",
    "period",
    "rule",
    "negative",
    "currency",
    "revenue_minor",
    "fee_minor",
    "pool_minor",
    "weights_json",
    "config_json",
    "inputs_json",
    "base_model",
    "code_version",
    "git_commit",
    "stability_json",
    "warnings_json",
    "created_at",
    "prev_hash",
    "record_hash",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    scenario_name VARCHAR NOT NULL,
    scenario_file VARCHAR NOT NULL,
    scenario_sha256 VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    negative VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    revenue_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    pool_minor BIGINT NOT NULL,
    weights_json VARCHAR NOT NULL,
    config_json VARCHAR NOT NULL,
    inputs_json VARCHAR NOT NULL,
    base_model VARCHAR,
    code_version VARCHAR NOT NULL,
    git_commit VARCHAR,
    stability_json VARCHAR NOT NULL,
    warnings_json VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    prev_hash VARCHAR NOT NULL,
    record_hash VARCHAR NOT NULL,
    UNIQUE (scenario_sha256, period)
);
CREATE TABLE IF NOT EXISTS coalition_utilities (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    coalition VARCHAR NOT NULL,
    objective VARCHAR NOT NULL,
    utility DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS valuations (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    player VARCHAR NOT NULL,
    objective VARCHAR NOT NULL,
    value DOUBLE NOT NULL,
    std_err DOUBLE
);
CREATE TABLE IF NOT EXISTS payouts (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    member VARCHAR NOT NULL,
    sources VARCHAR NOT NULL,
    value DOUBLE NOT NULL,
    std_err DOUBLE,
    share DOUBLE NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS uncertainty (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    method_json VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS valuation_intervals (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    player VARCHAR NOT NULL,
    objective VARCHAR NOT NULL,
    lo DOUBLE,
    hi DOUBLE
);
CREATE TABLE IF NOT EXISTS payout_intervals (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    member VARCHAR NOT NULL,
    share_se DOUBLE,
    share_lo DOUBLE,
    share_hi DOUBLE,
    amount_se DOUBLE,
    amount_lo_minor BIGINT NOT NULL,
    amount_hi_minor BIGINT NOT NULL,
    rank_json VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS compact_games (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id),
    position INTEGER NOT NULL,
    format VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    data BLOB NOT NULL
);
""" + MAC_SCHEMA

_CHILD_TABLES: dict[str, tuple[str, ...]] = {
    "coalition_utilities": ("position", "coalition", "objective", "utility"),
    "valuations": ("position", "player", "objective", "value", "std_err"),
    "payouts": ("position", "member", "sources", "value", "std_err", "share", "amount_minor", "currency"),
    "uncertainty": ("position", "method_json"),
    "valuation_intervals": ("position", "player", "objective", "lo", "hi"),
    "payout_intervals": (
        "position", "member", "share_se", "share_lo", "share_hi", "amount_se", "amount_lo_minor",
        "amount_hi_minor", "rank_json",
    ),
    "compact_games": ("position", "format", "sha256", "data"),
}
#: Child tables added after the first ledgers: absent in old files (created when one is opened for
#: writing), and hashed into a run only when it has rows there.
UNCERTAINTY_TABLES: tuple[str, ...] = ("uncertainty", "valuation_intervals", "payout_intervals")
#: Every optional child table (the same rules): the uncertainty tables and the compact game.
OPTIONAL_TABLES: tuple[str, ...] = (*UNCERTAINTY_TABLES, "compact_games")


# ---------------------------------------------------------------------------------------------------
# connections


@contextmanager
def connect(path: str | Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the ledger (creating it and its schema unless `read_only`), closing it afterwards.

    Raises `LedgerBusyError` when another process holds the file's lock (also from queries in the
    ``with`` block), `LedgerDamagedError` when DuckDB finds the file damaged (on opening or in any query
    of the block), `InputError` when the file is missing (read-only) or is not a payoutsim ledger of
    `SCHEMA_VERSION` (a directory, a non-DuckDB file, a DuckDB database with other tables; see
    `market.ledger_file`).
    """
    import duckdb

    path = Path(path)
    if read_only and not path.exists():
        raise InputError("ledger not found (run `payoutsim payout` first)", file=path)
    check_ledger_file(path)
    new_file = not read_only and not path.exists()
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as err:
        known = ledger_error(err, path)
        if new_file and isinstance(known, OutputError):
            _remove_new_ledger(path)
        raise known or InputError(f"cannot open the ledger: {str(err).splitlines()[0]}", file=path) from None
    try:
        _check_schema(con, path, create=not read_only)
        yield con
    except duckdb.Error as err:
        close_quietly(con)
        known = ledger_error(err, path)
        if known is None:
            raise
        if new_file and isinstance(known, OutputError):
            _remove_new_ledger(path)  # a ledger this call began and could not write holds no run: no stub left
        raise known from None
    except BaseException:
        close_quietly(con)
        raise
    try:
        con.close()
    except duckdb.Error as err:
        known = ledger_error(err, path)
        if known is None:
            raise
        raise known from None



def _remove_new_ledger(path: Path) -> None:
    """Delete a ledger file (and its WAL) that `connect` created but could not write: it holds no run."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)

class EmptyDatabaseError(InputError):
    """A DuckDB database with no tables and no views: not a ledger yet (`connect` for writing makes it one)."""


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path, *, create: bool) -> None:
    """Check that `con` is a payoutsim ledger of `SCHEMA_VERSION` whose file is complete; in an empty
    database with `create`, create the schema (one transaction). `InputError` otherwise."""
    import duckdb

    check_on_disk(con, path)
    where = "WHERE database_name = current_database()"
    tables = [str(r[0]) for r in con.execute(f"SELECT table_name FROM duckdb_tables() {where}").fetchall()]
    views = con.execute(f"SELECT count(*) FROM duckdb_views() {where} AND NOT internal").fetchone()
    if not tables and not (views and views[0]):
        if not create:
            raise EmptyDatabaseError("not a payoutsim ledger (no 'runs' table; an empty DuckDB database)", file=path)
        con.begin()
        con.execute(_SCHEMA)
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        con.commit()
        return
    missing = [t for t in LEDGER_TABLES if t not in tables]
    if missing:
        has = ", ".join(sorted(tables)) or "only views"
        raise InputError(
            f"not a payoutsim ledger: a DuckDB database without the ledger's table(s) {', '.join(missing)} "
            f"(it has: {has}); give an existing ledger or a new file",
            file=path,
        )
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except (duckdb.BinderException, duckdb.CatalogException):
        row = None
    if row is None or str(row[0]) != SCHEMA_VERSION:
        found = "no schema version" if row is None else f"schema version {row[0]}"
        raise InputError(
            f"not a ledger this payoutsim can use: it has {found}, this payoutsim reads and writes version "
            f"{SCHEMA_VERSION}",
            file=path,
        )
    check_complete(con, path, tables)
    if create:
        con.execute(_SCHEMA)  # IF NOT EXISTS: creates nothing in a complete ledger


def check_ledger(path: str | Path) -> None:
    """Fail early, before any valuation or payout, unless `path` can be the ledger a run is recorded in.

    Passes when `path` is absent (the ledger is created when the first run is recorded), a DuckDB
    database with no tables (it becomes the ledger), or an undamaged payoutsim ledger of `SCHEMA_VERSION`
    (every row is read, so a damaged block anywhere is found now, not after the payout); also when
    another process holds it right now (recording reports `LedgerBusyError` then). Raises `InputError`
    (`LedgerDamagedError` for a damaged file) otherwise.
    """
    path = Path(path)
    check_ledger_file(path)
    if not path.exists():
        return
    try:
        with connect(path, read_only=True) as con:
            read_every_row(con, [*LEDGER_TABLES, *present_tables(con, OPTIONAL_TABLES)])
    except (LedgerBusyError, EmptyDatabaseError):
        return


# ---------------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class RecordResult:
    """Outcome of `record_run`: the run's id and whether rows were added (False: already recorded)."""

    run_id: str
    added: bool
    seq: int


def run_id_for(scenario_sha256: str, period: str) -> str:
    """Deterministic run id: the first 16 hex digits of ``sha256(scenario_sha256 + "\\n" + period)``."""
    return hashlib.sha256(f"{scenario_sha256}\n{period}".encode()).hexdigest()[:16]


def find_run(path: str | Path, scenario_sha256: str, period: str) -> str | None:
    """The id of the run recorded for (scenario hash, period), or None (also when there is no ledger)."""
    if not Path(path).is_file():
        return None
    with connect(path, read_only=True) as con:
        row = con.execute(
            "SELECT run_id FROM runs WHERE scenario_sha256 = ? AND period = ?", [scenario_sha256, period]
        ).fetchone()
    return None if row is None else str(row[0])


def record_run(
    path: str | Path, inputs: ScenarioInputs, run: PeriodRun, *, now: datetime | None = None, key: bytes | None = None
) -> RecordResult:
    """Append one period's payout to the ledger in a single transaction; idempotent on (scenario, period).

    The run row (`run_row`) and its child rows (`child_rows`) are built first; inside the transaction the
    (scenario hash, period) key is looked up (found: nothing is written, ``added`` False), then ``seq``,
    ``prev_hash`` and ``record_hash`` are set from the last run and every row is inserted. With `key` the
    run's MAC is stored too (`market.ledger_mac`); a ledger that holds MACs takes a run only with the
    key that made them (`market.ledger_mac.LedgerKeyError` otherwise, nothing written). After the
    commit (durable: DuckDB syncs its write-ahead log) the run is read back through a new connection
    (`confirm_recorded`); only then does this return, so "recorded" is never said of a lost run.
    """
    row = run_row(inputs, run, now=now)
    children = child_rows(inputs, run)
    with connect(path) as con:
        con.begin()
        try:
            existing = con.execute(
                "SELECT run_id, seq FROM runs WHERE scenario_sha256 = ? AND period = ?",
                [inputs.scenario_sha256, run.period],
            ).fetchone()
            if existing is not None:
                con.rollback()
                return RecordResult(str(existing[0]), False, int(existing[1]))
            check_writer_key(con, key, path)
            last = con.execute("SELECT seq, record_hash FROM runs ORDER BY seq DESC LIMIT 1").fetchone()
            row["seq"] = 1 if last is None else int(last[0]) + 1
            row["prev_hash"] = GENESIS_HASH if last is None else str(last[1])
            row["record_hash"] = record_hash(row, children)
            placeholders = ", ".join("?" for _ in RUN_COLUMNS)
            con.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders})",
                [row[c] for c in RUN_COLUMNS],
            )
            _insert_children(con, row["run_id"], children)
            if key is not None:
                insert_mac(con, row["run_id"], row["record_hash"], key)
            con.commit()
        except BaseException:
            rollback_quietly(con)  # a failed commit has rolled back already: keep the first error
            raise
    confirm_recorded(path, row["run_id"], row["record_hash"])
    return RecordResult(row["run_id"], True, int(row["seq"]))


def confirm_recorded(path: str | Path, run_id: str, expected_hash: str, *, wait_s: float = 5.0) -> None:
    """Read run `run_id` back from the ledger file through a new read-only connection and check its
    ``record_hash``; `InputError` when it is not there (the write did not reach the file).

    Another writer may take the file between the commit and the read: the read is retried for `wait_s`
    seconds, then `LedgerBusyError` says the run was committed but not yet read back.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with connect(path, read_only=True) as con:
                got = con.execute("SELECT record_hash FROM runs WHERE run_id = ?", [run_id]).fetchone()
            break
        except LedgerBusyError:
            if time.monotonic() >= deadline:
                raise LedgerBusyError(
                    f"{path}: run {run_id} was committed, but the ledger is in use by another process and could not "
                    "be read back to confirm it; check with `payoutsim ledger show` when that process has finished"
                ) from None
            time.sleep(0.1)
    if got is None or str(got[0]) != expected_hash:
        what = "it is not there" if got is None else "a different record is there"
        raise InputError(f"run {run_id} was committed but reading the file back, {what}: it is NOT recorded", file=path)


def run_row(inputs: ScenarioInputs, run: PeriodRun, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``runs`` row of one period (`RUN_COLUMNS`), with ``seq``, ``prev_hash`` and ``record_hash``
    still unset (0 and empty: `record_run` sets them inside its transaction)."""
    sc = inputs.scenario
    payout = run.payout
    version, commit = code_version()
    return {
        "run_id": run_id_for(inputs.scenario_sha256, run.period),
        "seq": 0,  # set inside the transaction
        "scenario_name": sc.market.name,
        "scenario_file": inputs.loaded.path.name,
        "scenario_sha256": inputs.scenario_sha256,
        "period": run.period,
        "rule": payout.rule,
        "negative": sc.market.negative,
        "currency": payout.currency,
        "revenue_minor": run.revenue_minor,
        "fee_minor": run.fee_minor,
        "pool_minor": run.pool_minor,
        "weights_json": _dumps(dict(sorted(inputs.weights.items()))),
        "config_json": scenario_config_json(sc),
        "inputs_json": _dumps(inputs_provenance(inputs)),
        "base_model": inputs.base_model if inputs.base_model is not None else sc.valuation.base_model,
        "code_version": version,
        "git_commit": commit,
        "stability_json": _dumps(run.stability.to_json_dict()),
        "warnings_json": _dumps(list(payout.warnings)),
        "created_at": _created_at(now),
        "prev_hash": "",
        "record_hash": "",
    }


def child_rows(inputs: ScenarioInputs, run: PeriodRun) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the child tables of one period (`_CHILD_TABLES`, without ``run_id``): the member-level
    coalition utilities, the values per player and objective, and the payouts."""
    payout = run.payout
    groups = inputs.scenario.groups()
    return {
        "coalition_utilities": [
            (i * len(run.objectives) + k, label, obj, float(run.utilities[i, k]))
            for i, label in enumerate(run.coalitions)
            for k, obj in enumerate(run.objectives)
        ],
        "valuations": _valuation_rows(payout),
        **_uncertainty_rows(run),
        "compact_games": _compact_game_rows(run),
        "payouts": [
            (
                i,
                m,
                _dumps(list(groups[m])),
                float(payout.values[i]),
                _float_or_none(payout.std_errs[i]),
                float(payout.shares[i]),
                int(payout.amounts[i]),
                payout.currency,
            )
            for i, m in enumerate(payout.members)
        ],
    }


def _uncertainty_rows(run: PeriodRun) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of `UNCERTAINTY_TABLES` for one period (all empty without uncertainty)."""
    unc = run.uncertainty
    if unc is None:
        return {t: [] for t in UNCERTAINTY_TABLES}
    payout = run.payout
    intervals: list[tuple[Any, ...]] = []
    result = payout.result
    v_lo, v_hi = unc.value_interval()
    pos = 0
    for i, member in enumerate(payout.members):
        if result is not None:
            for k, obj in enumerate(result.objectives):
                lo = None if result.lo is None else _float_or_none(result.lo[i, k])
                hi = None if result.hi is None else _float_or_none(result.hi[i, k])
                intervals.append((pos, member, obj, lo, hi))
                pos += 1
        intervals.append((pos, member, "weighted", _float_or_none(v_lo[i]), _float_or_none(v_hi[i])))
        pos += 1
    s_lo, s_hi = unc.share_interval()
    a_lo, a_hi = unc.amount_interval()
    share_se, amount_se, rank = unc.share_se, unc.amount_se, unc.rank
    payouts = [
        (
            i, m, _float_or_none(share_se[i]), _float_or_none(s_lo[i]), _float_or_none(s_hi[i]),
            _float_or_none(amount_se[i]), int(a_lo[i]), int(a_hi[i]),
            _dumps({o: float(rank[i, j]) for j, o in enumerate(payout.members) if j != i}),
        )
        for i, m in enumerate(payout.members)
    ]
    return {
        "uncertainty": [(0, _dumps(unc.describe()))],
        "valuation_intervals": intervals,
        "payout_intervals": payouts,
    }


def _compact_game_rows(run: PeriodRun) -> list[tuple[Any, ...]]:
    """The ``compact_games`` row of one period: ``(0, format, sha256, bytes)`` of `PeriodRun.compact_game`
    (none without one)."""
    data = run.compact_game
    if data is None:
        return []
    return [(0, PAIR_GAME_FORMAT, hashlib.sha256(data).hexdigest(), bytes(data))]


def present_tables(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...]) -> list[str]:
    """Those of `tables` that exist in the ledger (`OPTIONAL_TABLES` are absent in old ledgers)."""
    where = "WHERE database_name = current_database()"
    existing = {str(r[0]) for r in con.execute(f"SELECT table_name FROM duckdb_tables() {where}").fetchall()}
    return [t for t in tables if t in existing]


def _insert_children(con: duckdb.DuckDBPyConnection, run_id: str, children: dict[str, list[tuple[Any, ...]]]) -> None:
    for table, columns in _CHILD_TABLES.items():
        rows = [(run_id, *r) for r in children[table]]
        if not rows:
            continue
        placeholders = ", ".join("?" for _ in range(len(columns) + 1))
        con.executemany(f"INSERT INTO {table} (run_id, {', '.join(columns)}) VALUES ({placeholders})", rows)


def _valuation_rows(payout: Payout) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    result = payout.result
    pos = 0
    for i, member in enumerate(payout.members):
        if result is not None:
            for k, obj in enumerate(result.objectives):
                rows.append((pos, member, obj, float(result.values[i, k]), _float_or_none(result.std_errs[i, k])))
                pos += 1
        rows.append((pos, member, "weighted", float(payout.values[i]), _float_or_none(payout.std_errs[i])))
        pos += 1
    return rows


# ---------------------------------------------------------------------------------------------------
# hashing, provenance


def record_hash(run_row: dict[str, Any], children: dict[str, list[tuple[Any, ...]]]) -> str:
    """``sha256(prev_hash ‖ canonical JSON(run row without record_hash, child rows by position))``; an
    optional table (`OPTIONAL_TABLES`) enters only when the run has rows in it, a BLOB as ``sha256:<hex>``
    of its bytes."""
    body = {c: _canonical(run_row[c]) for c in RUN_COLUMNS if c not in ("record_hash",)}
    kids = {
        t: [[_canonical(x) for x in r] for r in sorted(rows, key=lambda r: r[0])]
        for t, rows in children.items()
        if rows or t not in OPTIONAL_TABLES
    }
    text = json.dumps({"run": body, "children": kids}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((str(run_row["prev_hash"]) + "\n" + text).encode("utf-8")).hexdigest()


def _canonical(x: Any) -> Any:
    if isinstance(x, datetime):
        return x.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(x, float):
        return repr(x) if not math.isfinite(x) else x
    if isinstance(x, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(bytes(x)).hexdigest()
    return x


def code_version() -> tuple[str, str | None]:
    """(installed payoutsim version, git commit of the source tree or None)."""
    try:
        version = importlib.metadata.version("payoutsim")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        commit = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return version, commit


def inputs_provenance(inputs: ScenarioInputs) -> dict[str, Any]:
    """What ``runs.inputs_json`` holds: the input hashes and, when the scenario ran the valuation pipeline,
    ``"valuation"``: its provenance (run dir, config, base model, adapter/data/eval hashes)."""
    out: dict[str, Any] = dict(inputs.input_hashes)
    if inputs.provenance:
        out["valuation"] = inputs.provenance
    return out


def _created_at(now: datetime | None) -> datetime:
    if now is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        now = datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now


def _dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _float_or_none(x: Any) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------
# reading


def list_runs(path: str | Path) -> list[dict[str, Any]]:
    """Every run row (dicts keyed by `RUN_COLUMNS`), in recording order."""
    with connect(path, read_only=True) as con:
        cur = con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY seq")
        return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in cur.fetchall()]


def run_payouts(path: str | Path, run_id: str) -> list[dict[str, Any]]:
    """The payout rows of one run, in member order (`InputError` for an unknown run id)."""
    with connect(path, read_only=True) as con:
        if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
            raise InputError(f"no run {run_id!r} in the ledger", file=path, field="run")
        cols = _CHILD_TABLES["payouts"]
        cur = con.execute(f"SELECT {', '.join(cols)} FROM payouts WHERE run_id = ? ORDER BY position", [run_id])
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


EXPORT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "seq",
    "period",
    "scenario",
    "scenario_sha256",
    "created_at",
    "member",
    "rule",
    "value",
    "std_err",
    "value_lo",
    "value_hi",
    "share",
    "amount",
    "amount_minor",
    "amount_se",
    "amount_lo",
    "amount_hi",
    "currency",
    "line",
)


def export_rows(path: str | Path) -> list[dict[str, Any]]:
    """One row per (run, member) with `EXPORT_COLUMNS`; ``amount`` is a decimal string with the
    currency's minor digits (``amount_minor`` the integer), ``created_at`` ISO 8601 UTC, ``line``
    ``"payout"``. The uncertainty (`market.uncertainty`; empty for runs recorded without it):
    ``value_lo``/``value_hi`` the interval of the weighted value, ``amount_se`` the amount's standard
    error in currency units, ``amount_lo``/``amount_hi`` its interval as decimal strings. A run whose
    payouts do not add up to its pool (``no_value = "hold"``: nothing paid) gets one more row after its
    members, ``line`` ``"held"``, with no member, value or share and the held amount, so a run's
    ``amount_minor`` always sums to its pool (paid + held = pool)."""
    with connect(path, read_only=True) as con:
        present = set(present_tables(con, UNCERTAINTY_TABLES))
        pi = "payout_intervals" in present and "valuation_intervals" in present
        extra = (
            "pi.amount_se, pi.amount_lo_minor, pi.amount_hi_minor, vi.lo, vi.hi"
            if pi
            else "NULL, NULL, NULL, NULL, NULL"
        )
        joins = (
            """LEFT JOIN payout_intervals pi ON pi.run_id = p.run_id AND pi.position = p.position
               LEFT JOIN valuation_intervals vi
                 ON vi.run_id = p.run_id AND vi.player = p.member AND vi.objective = 'weighted'"""
            if pi
            else ""
        )
        cur = con.execute(
            f"""
            SELECT r.run_id, r.seq, r.period, r.scenario_name, r.scenario_sha256, r.created_at,
                   p.member, r.rule, p.value, p.std_err, p.share, p.amount_minor, p.currency, r.pool_minor, {extra}
            FROM payouts p JOIN runs r USING (run_id) {joins}
            ORDER BY r.seq, p.position
            """
        )
        out: list[dict[str, Any]] = []
        paid: dict[str, int] = {}
        for (
            run_id, seq, period, scen, sha, created, member, rule, value, se, share, minor, cur_, pool,
            amount_se, amount_lo, amount_hi, value_lo, value_hi,
        ) in cur.fetchall():
            if out and out[-1]["run_id"] != run_id:
                out.extend(_held_row(out[-1], paid))
            paid[run_id] = paid.get(run_id, 0) + int(minor)
            out.append(
                {
                    "run_id": run_id,
                    "seq": int(seq),
                    "period": period,
                    "scenario": scen,
                    "scenario_sha256": sha,
                    "created_at": created.isoformat(timespec="microseconds") + "Z",
                    "member": member,
                    "rule": rule,
                    "value": float(value),
                    "std_err": None if se is None else float(se),
                    "value_lo": None if value_lo is None else float(value_lo),
                    "value_hi": None if value_hi is None else float(value_hi),
                    "share": float(share),
                    "amount": format_minor(int(minor), cur_),
                    "amount_minor": int(minor),
                    "amount_se": None if amount_se is None else minor_to_units(float(amount_se), cur_),
                    "amount_lo": None if amount_lo is None else format_minor(int(amount_lo), cur_),
                    "amount_hi": None if amount_hi is None else format_minor(int(amount_hi), cur_),
                    "currency": cur_,
                    "line": "payout",
                    "_pool": int(pool),
                }
            )
        if out:
            out.extend(_held_row(out[-1], paid))
        for row in out:
            row.pop("_pool", None)
        return out


def _held_row(last: dict[str, Any], paid: Mapping[str, int]) -> list[dict[str, Any]]:
    """[the ``held`` export row of ``last``'s run: pool − Σ payouts] when that is not 0, else []."""
    held = int(last["_pool"]) - paid[last["run_id"]]
    if held == 0:
        return []
    row = dict(last)
    row.update(
        member=None, value=None, std_err=None, value_lo=None, value_hi=None, share=None,
        amount=format_minor(held, last["currency"]), amount_minor=held, amount_se=None, amount_lo=None,
        amount_hi=None, line="held",
    )
    return [row]


# ---------------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class ChainLink:
    """One run as `verify` found it: its stored ``seq``, ``run_id`` and ``record_hash``; ``intact``: its
    record hash recomputes from its rows, its ``prev_hash`` is the previous run's hash and its seq is its
    position (1, 2, …)."""

    seq: int
    run_id: str
    record_hash: str
    intact: bool


@dataclass
class VerifyReport:
    """What `verify` found: the number of runs checked, every broken invariant (empty: all good), the
    chain run by run and the stored MACs, ``run_id → mac`` (what receipts and the key are checked
    against: `market.receipts`)."""

    n_runs: int = 0
    problems: list[str] = field(default_factory=list)
    chain: list[ChainLink] = field(default_factory=list)
    macs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _held_run(run: Mapping[str, Any], payouts: list[tuple[Any, ...]]) -> bool:
    """The run held its pool (`market.rules`, ``no_value = "hold"``: no member created value): its scenario
    says ``no_value = "hold"`` and every payout row has amount 0 and share 0."""
    try:
        policy = json.loads(run["config_json"]).get("market", {}).get("no_value")
    except (TypeError, ValueError, AttributeError):
        return False
    return policy == "hold" and all(int(p[6]) == 0 and float(p[5]) == 0.0 for p in payouts)


def verify(path: str | Path) -> VerifyReport:
    """Re-check the ledger's invariants.

    Per run: payouts sum exactly to the pool, or the pool is held whole (`_held_run`: nothing paid, every
    share 0, under ``no_value = "hold"``), so paid + held = pool; pool = revenue − fee; at least one payout,
    in the run's currency; shares sum to 1; ``record_hash`` recomputes from the stored rows; ``prev_hash`` is the
    previous run's hash and ``seq`` is 1, 2, …; the run id matches its (scenario hash, period); a stored
    compact game's bytes match its ``sha256`` and format. Globally:
    no child row without its run (orphans), no duplicated (scenario hash, period).
    """
    report = VerifyReport()
    with connect(path, read_only=True) as con:
        runs = [
            dict(zip(RUN_COLUMNS, r, strict=True))
            for r in con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY seq").fetchall()
        ]
        report.n_runs = len(runs)
        report.macs = read_macs(con)
        children: dict[str, dict[str, list[tuple[Any, ...]]]] = {r["run_id"]: {t: [] for t in _CHILD_TABLES} for r in runs}
        present = set(present_tables(con, OPTIONAL_TABLES))
        for table, columns in _CHILD_TABLES.items():
            if table in OPTIONAL_TABLES and table not in present:
                continue
            for rec in con.execute(f"SELECT run_id, {', '.join(columns)} FROM {table} ORDER BY run_id, position").fetchall():
                run_id = rec[0]
                if run_id not in children:
                    report.problems.append(f"{table}: orphan row for unknown run {run_id!r}")
                    continue
                children[run_id][table].append(tuple(rec[1:]))
    prev = GENESIS_HASH
    seen: set[tuple[str, str]] = set()
    for expected_seq, run in enumerate(runs, start=1):
        rid = run["run_id"]
        where = f"run {rid} (seq {run['seq']}, period {run['period']!r})"
        before = len(report.problems)
        if run["seq"] != expected_seq:
            report.problems.append(f"{where}: seq should be {expected_seq} (a run is missing)")
        key = (run["scenario_sha256"], run["period"])
        if key in seen:
            report.problems.append(f"{where}: scenario hash and period recorded twice")
        seen.add(key)
        if rid != run_id_for(run["scenario_sha256"], run["period"]):
            report.problems.append(f"{where}: run id does not match its scenario hash and period")
        if run["prev_hash"] != prev:
            report.problems.append(f"{where}: prev_hash does not match the previous run's record_hash")
        payouts = children[rid]["payouts"]
        if not payouts:
            report.problems.append(f"{where}: no payout rows")
        total = sum(int(p[6]) for p in payouts)
        held_run = _held_run(run, payouts)
        held = run["pool_minor"] - total if held_run else 0
        if total + held != run["pool_minor"]:
            report.problems.append(f"{where}: payouts sum to {total} minor units, the pool is {run['pool_minor']}")
        if run["revenue_minor"] - run["fee_minor"] != run["pool_minor"]:
            report.problems.append(f"{where}: pool != revenue - fee")
        if any(p[7] != run["currency"] for p in payouts):
            report.problems.append(f"{where}: payout currency differs from the run's {run['currency']}")
        if payouts and not held_run and abs(sum(float(p[5]) for p in payouts) - 1.0) > 1e-9:
            report.problems.append(f"{where}: shares do not sum to 1")
        for _, fmt, digest, data in children[rid].get("compact_games", []):
            if hashlib.sha256(bytes(data)).hexdigest() != digest or fmt != PAIR_GAME_FORMAT:
                report.problems.append(f"{where}: the compact game's bytes do not match its sha256 or format")
        if record_hash(run, children[rid]) != run["record_hash"]:
            report.problems.append(f"{where}: record_hash does not match the stored rows (edited?)")
        report.chain.append(ChainLink(int(run["seq"]), rid, str(run["record_hash"]), len(report.problems) == before))
        prev = run["record_hash"]
    return report
