"""The DuckDB ledger: idempotency, crash safety, a second writer, verify, exports."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from market64_example import PERIODS, market64_inputs, synthetic_pair_game, write_market64

from market import ledger, read_model
from market.export import escape_cell, export_ledger
from market.period import run_period
from market.scenario.inputs import load_inputs
from market.scenario.schema import load_scenario
from valuation.coalition_utility.compact import PAIR_GAME_FORMAT, PairGame
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame

REPO = Path(__file__).resolve().parents[1]
TABLES = ("runs", "coalition_utilities", "valuations", "payouts")


def write_scenario(folder: Path, members: list[str] | None = None, revenue: str = "1000.00", rule: str = "shapley") -> Path:
    """A 3-source, 2-objective scenario with two periods (q1, q2) in `folder`."""
    members = members or ["alice", "bob", "carol"]
    masks = all_coalitions(3).astype(float)
    u = np.stack([0.5 + masks @ [0.10, 0.05, 0.02], 0.5 + masks @ [0.01, 0.08, 0.03]], axis=1)
    TableGame(["s0", "s1", "s2"], ["helpfulness", "harmlessness"], all_coalitions(3), u).to_csv(folder / "game.csv")
    member_tables = "".join(
        f"[[members]]\nname = {json.dumps(m)}\nsources = [\"s{i}\"]\n\n" for i, m in enumerate(members)
    )
    text = (
        f'[market]\nname = "ledger-test"\ncurrency = "EUR"\nrevenue = "{revenue}"\nplatform_fee = 0.1\n'
        f'rule = "{rule}"\n\n[objectives]\nhelpfulness = 0.5\nharmlessness = 0.5\n\n{member_tables}'
        '[valuation]\nutilities = "game.csv"\n\n[[periods]]\nname = "q1"\n\n[[periods]]\nname = "q2"\n'
        'revenue = "2000.00"\n'
    )
    path = folder / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def record(scenario: Path, db: Path, period: str) -> ledger.RecordResult:
    inputs = load_inputs(load_scenario(scenario))
    return ledger.record_run(db, inputs, run_period(inputs, period))


def row_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()


def test_same_scenario_and_period_twice_adds_nothing(tmp_path: Path) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    first = record(scenario, db, "q1")
    before = row_counts(db)
    again = record(scenario, db, "q1")
    assert first.added and not again.added
    assert again.run_id == first.run_id
    assert row_counts(db) == before
    assert before["runs"] == 1 and before["payouts"] == 3 and before["coalition_utilities"] == 8 * 2
    assert record(scenario, db, "q2").added  # another period is another run
    scenario.write_text(scenario.read_text().replace('revenue = "1000.00"', 'revenue = "1500.00"'))
    changed = record(scenario, db, "q1")  # a changed scenario is a new run
    assert changed.added and changed.seq == 3
    report = ledger.verify(db)
    assert report.ok, report.problems
    assert report.n_runs == 3


def test_run_rows_carry_provenance(tmp_path: Path) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    record(scenario, db, "q2")
    (run,) = ledger.list_runs(db)
    assert run["scenario_name"] == "ledger-test"
    assert len(run["scenario_sha256"]) == 64
    assert run["period"] == "q2" and run["rule"] == "shapley"
    assert json.loads(run["weights_json"]) == {"harmlessness": 0.5, "helpfulness": 0.5}
    assert json.loads(run["config_json"])["market"]["revenue"] == "1000.00"
    assert run["revenue_minor"] == 200000 and run["fee_minor"] == 20000 and run["pool_minor"] == 180000
    assert run["code_version"]
    assert run["prev_hash"] == "0" * 64
    payouts = ledger.run_payouts(db, run["run_id"])
    assert sum(p["amount_minor"] for p in payouts) == 180000


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import market.ledger as L
    from market.period import run_period
    from market.scenario.inputs import load_inputs
    from market.scenario.schema import load_scenario

    original = L._insert_children

    def crash(con, run_id, children):
        original(con, run_id, children)   # the run row and its children are written, not committed
        os.kill(os.getpid(), signal.SIGKILL)

    L._insert_children = crash
    inputs = load_inputs(load_scenario(sys.argv[1]))
    L.record_run(sys.argv[2], inputs, run_period(inputs, sys.argv[3]))
    """
)


def test_killing_the_process_mid_run_leaves_no_partial_run(tmp_path: Path) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(scenario), str(db), "q2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    report = ledger.verify(db)
    assert report.ok, report.problems
    assert [r["period"] for r in ledger.list_runs(db)] == ["q1"]
    assert row_counts(db)["payouts"] == 3
    assert record(scenario, db, "q2").added  # the interrupted run can simply be re-run
    assert ledger.verify(db).ok


HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_second_writer_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from market.cli import main

    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(ledger.LedgerBusyError, match="in use by another process"):
            record(scenario, db, "q2")
        code = main(["payout", str(scenario), "--period", "q2", "--ledger", str(db)])
        assert code == ledger.LedgerBusyError.exit_code
        assert "in use by another process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert ledger.verify(db).ok
    assert record(scenario, db, "q2").added


def test_verify_detects_tampering(tmp_path: Path) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    record(scenario, db, "q2")
    con = duckdb.connect(str(db))
    con.execute("UPDATE payouts SET amount_minor = amount_minor + 1 WHERE position = 0 AND run_id = "
                "(SELECT run_id FROM runs WHERE seq = 1)")
    with pytest.raises(duckdb.ConstraintException):  # orphans cannot even be written
        con.execute("INSERT INTO valuations VALUES ('nope', 0, 'x', 'h', 1.0, 0.0)")
    con.execute("UPDATE runs SET prev_hash = record_hash WHERE seq = 2")
    con.close()
    problems = ledger.verify(db).problems
    assert any("payouts sum to" in p for p in problems)
    assert any("record_hash" in p for p in problems)
    assert any("prev_hash" in p for p in problems)


def test_export_escapes_formulas_and_keeps_numbers_numeric(tmp_path: Path) -> None:
    members = ['=HYPERLINK("x")', "+1", "-cmd", "@x"]
    (tmp_path / "s").mkdir()
    masks = all_coalitions(4).astype(float)
    scenario = write_scenario(tmp_path / "s", members=members[:3])
    text = scenario.read_text().replace('sources = ["s2"]\n', 'sources = ["s2"]\n\n[[members]]\nname = "@x"\nsources = ["s3"]\n')
    scenario.write_text(text)
    u = np.stack([0.5 + masks @ [0.1, 0.05, 0.02, 0.04], 0.5 + masks @ [0.01, 0.08, 0.03, 0.02]], axis=1)
    TableGame(["s0", "s1", "s2", "s3"], ["helpfulness", "harmlessness"], all_coalitions(4), u).to_csv(
        tmp_path / "s" / "game.csv"
    )
    db = tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    assert export_ledger(db, csv=tmp_path / "out.csv", parquet=tmp_path / "out.parquet") == 4

    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["member"] for r in rows] == ["'" + m for m in members]
    for r in rows:
        float(r["value"]), float(r["share"]), int(r["amount_minor"])  # numeric columns parse as numbers
        assert not r["value"].startswith("'") and not r["amount"].startswith("'")
        assert r["amount"].count(".") == 1 and len(r["amount"].split(".")[1]) == 2
        assert r["currency"] == "EUR" and r["rule"] == "shapley" and r["period"] == "q1"
    assert sum(int(r["amount_minor"]) for r in rows) == 90000
    frame = pl.read_csv(tmp_path / "out.csv")
    assert frame.schema["value"] == pl.Float64 and frame.schema["amount_minor"] == pl.Int64
    parquet = pl.read_parquet(tmp_path / "out.parquet")
    assert parquet["member"].to_list() == members  # Parquet keeps the raw text
    assert {"run_id", "period", "member", "rule", "value", "share", "amount", "currency"} <= set(parquet.columns)
    assert not list(tmp_path.glob(".out*.tmp"))  # atomic writes leave no temp files


def test_escape_cell() -> None:
    for bad in ("=1+1", "+1", "-cmd", "@x", "\tx", "\rx"):
        assert escape_cell(bad) == "'" + bad
    assert escape_cell("alice") == "alice"
    assert escape_cell("") == ""


def test_identical_inputs_give_identical_ledgers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    exports = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        scenario, db = write_scenario(folder), folder / "ledger.duckdb"
        record(scenario, db, "q1")
        record(scenario, db, "q2")
        export_ledger(db, csv=folder / "out.csv")
        exports.append((folder / "out.csv").read_bytes())
        runs = ledger.list_runs(db)
        assert runs[0]["created_at"].isoformat() == "2026-01-01T00:00:00"
    assert exports[0] == exports[1]  # exact: the same code path runs twice on the same inputs
    con_rows = []
    for name in ("one", "two"):
        con = duckdb.connect(str(tmp_path / name / "ledger.duckdb"), read_only=True)
        con_rows.append([con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES])
        con.close()
    assert con_rows[0] == con_rows[1]


def test_read_commands_reject_a_missing_or_foreign_file(tmp_path: Path) -> None:
    from valuation.errors import InputError

    with pytest.raises(InputError, match="ledger not found"):
        ledger.verify(tmp_path / "none.duckdb")
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(InputError, match="not a payoutsim ledger"):
        ledger.list_runs(other)
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="not a DuckDB database file"):
        ledger.list_runs(garbage)


# ---------------------------------------------------------------------------------------------------
# the compact game of a large run (issue "Large markets", item 4)


def test_a_64_member_run_stores_its_compact_game_in_the_hash_chain(tmp_path: Path) -> None:
    """Above 16 members the ledger keeps the PairGame (no 2^n table): stored once per run with its sha256,
    read back equal, covered by the record hash; a small run in the same ledger stores none and keeps the
    hash it would have had without the table."""
    db = tmp_path / "ledger.duckdb"
    small = record(write_scenario(tmp_path), db, "q1")  # 3 members: the coalition table, no compact game
    inputs = market64_inputs(write_market64(tmp_path / "m64", budget=500, replicates=0))
    run = run_period(inputs, PERIODS[0])
    assert run.compact_game is not None and run.coalitions == ()
    big = ledger.record_run(db, inputs, run)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT run_id, position, format, sha256, data FROM compact_games").fetchall()
        table_rows = con.execute("SELECT count(*) FROM coalition_utilities WHERE run_id = ?", [big.run_id]).fetchone()
    finally:
        con.close()
    assert table_rows == (0,)
    assert [(r[0], r[1], r[2]) for r in rows] == [(big.run_id, 0, PAIR_GAME_FORMAT)]
    data = bytes(rows[0][4])
    assert rows[0][3] == hashlib.sha256(data).hexdigest() and 50_000 < len(data) < 400_000
    stored, original = PairGame.from_bytes(data), synthetic_pair_game()
    assert stored.players == original.players and stored.objectives == original.objectives
    for a, b in zip(stored.deltas, original.deltas, strict=True):
        np.testing.assert_array_equal(a, b)
    report = ledger.verify(db)
    assert report.ok, report.problems
    assert small.added and big.added and big.seq == 2
    # the small run's record hash is the one computed from its rows without the compact_games table at all
    # (as before the table existed); the big run's changes when its compact game is left out
    for run_id, has_game in ((small.run_id, False), (big.run_id, True)):
        row, children = stored_run(db, run_id)
        without = {t: r for t, r in children.items() if t != "compact_games"}
        assert (ledger.record_hash(row, without) == row["record_hash"]) is not has_game
        assert ledger.record_hash(row, children) == row["record_hash"]


def stored_run(db: Path, run_id: str) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    """The run row and its child rows (every child table, by position) as stored in `db`."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = ", ".join(ledger.RUN_COLUMNS)
        row = dict(zip(ledger.RUN_COLUMNS, con.execute(f"SELECT {cols} FROM runs WHERE run_id = ?", [run_id]).fetchone(), strict=True))
        children = {
            table: [tuple(r) for r in con.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = ? ORDER BY position", [run_id]).fetchall()]
            for table, columns in ledger._CHILD_TABLES.items()
        }
    finally:
        con.close()
    return row, children


def test_verify_detects_an_edited_or_removed_compact_game(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    inputs = market64_inputs(write_market64(tmp_path / "m64", n=20, budget=300, replicates=0))
    ledger.record_run(db, inputs, run_period(inputs, PERIODS[0]))
    assert ledger.verify(db).ok
    pristine = db.read_bytes()
    con = duckdb.connect(str(db))
    try:  # a changed byte with its sha256 column updated: only the record hash catches it
        data = bytearray(con.execute("SELECT data FROM compact_games").fetchone()[0])
        data[-30] ^= 0xFF
        con.execute("UPDATE compact_games SET data = ?, sha256 = ?", [bytes(data), hashlib.sha256(data).hexdigest()])
    finally:
        con.close()
    problems = ledger.verify(db).problems
    assert len(problems) == 1 and "record_hash does not match" in problems[0]
    db.write_bytes(pristine)
    con = duckdb.connect(str(db))
    try:  # bytes changed, sha256 column not: both checks fire
        con.execute("UPDATE compact_games SET data = ?", [b"not a game"])
    finally:
        con.close()
    problems = ledger.verify(db).problems
    assert any("compact game's bytes do not match" in p for p in problems)
    assert any("record_hash does not match" in p for p in problems)
    db.write_bytes(pristine)
    con = duckdb.connect(str(db))
    try:
        con.execute("DELETE FROM compact_games")
    finally:
        con.close()
    assert any("record_hash does not match" in p for p in ledger.verify(db).problems)


def test_ledgers_without_the_compact_games_table_still_verify_and_take_runs(tmp_path: Path) -> None:
    """A ledger written before the table existed (dropped here): verifies, loads, gets the table (empty)
    when opened for writing, and its earlier runs keep verifying."""
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    first = record(scenario, db, "q1")
    con = duckdb.connect(str(db))
    try:
        con.execute("DROP TABLE compact_games")
    finally:
        con.close()
    assert ledger.verify(db).ok
    assert read_model.load_run(db, first.run_id).compact is None
    assert record(scenario, db, "q2").added
    report = ledger.verify(db)
    assert report.ok and report.n_runs == 2
