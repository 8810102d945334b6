"""Tamper evidence beyond the self-consistent hash chain (issue 14, item 5): receipts, heads, the keyed MAC.

The attacker in these tests can write the ledger file and knows the project's code: they move money
between members (or delete the last run) and recompute every ``prev_hash``/``record_hash`` with
`market.ledger.record_hash`, so the chain alone still verifies. A receipt a member kept, a head hash, or
the MAC key must expose them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_market_ledger import write_scenario

from market import ledger, ledger_mac, receipts
from market.cli import main
from market.period import run_period
from market.scenario.inputs import load_inputs
from market.scenario.schema import load_scenario

KEY = b"a-members-secret-key-0123456789"
# What the attacker reads from the file: the run columns and the child tables' columns (their layout is no secret).
CHILD_COLUMNS: dict[str, tuple[str, ...]] = {
    "coalition_utilities": ("position", "coalition", "objective", "utility"),
    "valuations": ("position", "player", "objective", "value", "std_err"),
    "payouts": ("position", "member", "sources", "value", "std_err", "share", "amount_minor", "currency"),
}


def record(scenario: Path, db: Path, period: str, key: bytes | None = None) -> ledger.RecordResult:
    inputs = load_inputs(load_scenario(scenario))
    return ledger.record_run(db, inputs, run_period(inputs, period), key=key)


def three_runs(tmp_path: Path, key: bytes | None = None) -> tuple[Path, Path]:
    """A ledger with runs q1, q2 (scenario A) and q1 of a changed scenario: seq 1, 2, 3; 100,000.00 EUR revenue."""
    scenario, db = write_scenario(tmp_path, revenue="100000.00"), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1", key)
    record(scenario, db, "q2", key)
    scenario.write_text(scenario.read_text().replace('revenue = "100000.00"', 'revenue = "150000.00"'))
    record(scenario, db, "q1", key)
    return scenario, db


def rehash_from(con: duckdb.DuckDBPyConnection, first_seq: int) -> None:
    """Recompute record_hash and prev_hash of every run from `first_seq` on with the project's own function."""
    prev = ledger.GENESIS_HASH
    for (seq,) in con.execute("SELECT seq FROM runs ORDER BY seq").fetchall():
        cols = ", ".join(ledger.RUN_COLUMNS)
        row = dict(zip(ledger.RUN_COLUMNS, con.execute(f"SELECT {cols} FROM runs WHERE seq = ?", [seq]).fetchone(), strict=True))
        if seq >= first_seq:
            children: dict[str, list[tuple[Any, ...]]] = {}
            for table, columns in CHILD_COLUMNS.items():
                children[table] = [
                    tuple(r)
                    for r in con.execute(
                        f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = ? ORDER BY position", [row["run_id"]]
                    ).fetchall()
                ]
            row["prev_hash"] = prev
            row["record_hash"] = ledger.record_hash(row, children)
            con.execute("UPDATE runs SET prev_hash = ?, record_hash = ? WHERE seq = ?", [prev, row["record_hash"], seq])
        prev = row["record_hash"]


def move_5000_eur(db: Path, seq: int = 1) -> None:
    """Move 5,000.00 EUR from the first member to the second in run `seq`, then make the chain consistent."""
    con = duckdb.connect(str(db))
    try:
        run_id = con.execute("SELECT run_id FROM runs WHERE seq = ?", [seq]).fetchone()[0]
        con.execute("UPDATE payouts SET amount_minor = amount_minor - 500000 WHERE run_id = ? AND position = 0", [run_id])
        con.execute("UPDATE payouts SET amount_minor = amount_minor + 500000 WHERE run_id = ? AND position = 1", [run_id])
        rehash_from(con, seq)
    finally:
        con.close()


def delete_last_run(db: Path) -> None:
    con = duckdb.connect(str(db))
    try:
        run_id = con.execute("SELECT run_id FROM runs ORDER BY seq DESC LIMIT 1").fetchone()[0]
        for table in (*CHILD_COLUMNS, "run_macs"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    finally:
        con.close()


def run_hash(db: Path, seq: int) -> str:
    (run,) = [r for r in ledger.list_runs(db) if r["seq"] == seq]
    return str(run["record_hash"])


# ---------------------------------------------------------------------------------------------------
# the attacks the chain alone does not see


def test_the_chain_alone_cannot_see_a_consistent_rewrite(tmp_path: Path) -> None:
    """Documents the limit (README): without a receipt or key, a consistent rewrite verifies."""
    _, db = three_runs(tmp_path)
    move_5000_eur(db)
    assert ledger.verify(db).ok
    check = receipts.check_history(db)
    assert check.ok
    assert any("anyone who can write the file" in n for n in check.notes)


def test_moving_5000_eur_with_recomputed_hashes_fails_verify_with_a_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario, db = write_scenario(tmp_path, revenue="100000.00"), tmp_path / "ledger.duckdb"
    receipt = tmp_path / "q1-receipt.json"
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(db), "--receipt", str(receipt)]) == 0
    out = capsys.readouterr().out
    data = json.loads(receipt.read_text())
    assert data["runs"][0]["seq"] == 1 and data["runs"][0]["record_hash"] in out and data["head"]["record_hash"] in out
    assert main(["payout", str(scenario), "--period", "q2", "--ledger", str(db)]) == 0
    capsys.readouterr()

    move_5000_eur(db, seq=1)
    assert ledger.verify(db).ok  # the chain is consistent again
    assert main(["ledger", "verify", "--ledger", str(db)]) == 0
    capsys.readouterr()
    assert main(["ledger", "verify", "--ledger", str(db), "--receipt", str(receipt)]) == 1
    err = capsys.readouterr().err
    assert "seq 1" in err and "record hash" in err and "FAILED" in err


def test_moving_5000_eur_with_recomputed_hashes_fails_verify_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, db = three_runs(tmp_path, key=KEY)
    assert receipts.check_history(db, key=KEY).ok
    move_5000_eur(db, seq=2)
    assert ledger.verify(db).ok
    check = receipts.check_history(db, key=KEY)
    assert not check.ok
    assert any("MAC" in p and "seq 2" in p for p in check.problems)
    assert any("MAC" in p and "seq 3" in p for p in check.problems)
    assert not any("seq 1" in p for p in check.problems)  # run 1 was not touched
    monkeypatch.setenv(ledger_mac.KEY_ENV, KEY.decode())
    assert main(["ledger", "verify", "--ledger", str(db)]) == 1
    assert "MAC does not match" in capsys.readouterr().err
    monkeypatch.delenv(ledger_mac.KEY_ENV)
    key_file = tmp_path / "ledger.key"
    key_file.write_bytes(KEY + b"\n")
    assert main(["ledger", "verify", "--ledger", str(db), "--key-file", str(key_file)]) == 1
    capsys.readouterr()


def test_a_forger_with_another_key_fails_and_stripping_the_macs_fails(tmp_path: Path) -> None:
    _, db = three_runs(tmp_path, key=KEY)
    move_5000_eur(db)
    con = duckdb.connect(str(db))
    for run_id, record_hash in con.execute("SELECT run_id, record_hash FROM runs").fetchall():
        con.execute("UPDATE run_macs SET mac = ? WHERE run_id = ?", [ledger_mac.run_mac(b"forger-key-0123456789", record_hash), run_id])
    con.close()
    assert not receipts.check_history(db, key=KEY).ok
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM run_macs")
    con.close()
    problems = receipts.check_history(db, key=KEY).problems
    assert any("no run carries a MAC" in p for p in problems)


def test_deleting_the_last_run_fails_verify_with_its_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, db = three_runs(tmp_path)
    last = receipts.issue_receipt(db, [r["run_id"] for r in ledger.list_runs(db) if r["seq"] == 3])
    path = receipts.write_receipt(tmp_path / "receipts" / "last.json", last)
    head = run_hash(db, 3)
    assert main(["ledger", "verify", "--ledger", str(db), "--receipt", str(path), "--head", head]) == 0
    assert "intact" in capsys.readouterr().out

    delete_last_run(db)
    assert ledger.verify(db).ok  # nothing inside the file shows the deletion
    assert main(["ledger", "verify", "--ledger", str(db), "--receipt", str(path)]) == 1
    err = capsys.readouterr().err
    assert "seq 3" in err and "2 run(s)" in err
    assert main(["ledger", "verify", "--ledger", str(db), "--head", head]) == 1
    assert "no run has record hash" in capsys.readouterr().err


def test_deleting_the_last_run_is_not_seen_by_the_mac_alone(tmp_path: Path) -> None:
    """Documents the limit (README): the MAC authenticates what is there, not what was removed at the end."""
    _, db = three_runs(tmp_path, key=KEY)
    delete_last_run(db)
    assert receipts.check_history(db, key=KEY).ok


# ---------------------------------------------------------------------------------------------------
# receipts and heads that match


def test_receipts_and_heads_of_an_untouched_ledger_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, db = write_scenario(tmp_path, revenue="100000.00"), tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario), "--ledger", str(db)]) == 0  # q1 and q2: seq 1 and 2
    out = capsys.readouterr().out
    default = tmp_path / "receipts" / "ledger-seq2.json"
    assert f"receipt: {default}" in out
    data = json.loads(default.read_text())
    assert data["format"] == receipts.RECEIPT_FORMAT
    assert [r["seq"] for r in data["runs"]] == [1, 2]
    assert data["head"] == {"seq": 2, "record_hash": run_hash(db, 2)}
    assert data["ledger"] == str(db)
    # later runs do not invalidate earlier receipts and heads
    scenario.write_text(scenario.read_text().replace('revenue = "100000.00"', 'revenue = "150000.00"'))
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(db)]) == 0
    capsys.readouterr()
    args = ["ledger", "verify", "--ledger", str(db), "--receipt", str(default)]
    args += ["--receipt", str(tmp_path / "receipts" / "ledger-seq3.json"), "--head", run_hash(db, 1), "--head", run_hash(db, 3)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(": intact") == 7  # receipt 1: runs 1, 2 and its head; receipt 2: run 3 and its head; two heads
    assert "MACs: not checked" in out
    # an already-recorded run gets a receipt too (the head is the ledger's current one)
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(db)]) == 0
    assert "already recorded" in capsys.readouterr().out


def test_truncating_below_a_receipt_or_editing_before_it_fails_and_after_it_does_not(tmp_path: Path) -> None:
    _, db = three_runs(tmp_path)
    first = receipts.issue_receipt(db, [ledger.list_runs(db)[0]["run_id"]])
    assert first.head.seq == 3
    run1 = receipts.Receipt(first.ledger, first.runs, receipts.Head(1, run_hash(db, 1)))
    move_5000_eur(db, seq=3)  # after the receipted run: the receipt of run 1 still holds
    check = receipts.check_history(db, receipts=[run1])
    assert check.ok, check.problems
    check = receipts.check_history(db, receipts=[first])  # its head (seq 3) was rewritten
    assert not check.ok
    assert any("head" in p and "seq 3" in p for p in check.problems)


def test_a_broken_chain_before_the_receipt_fails_it(tmp_path: Path) -> None:
    _, db = three_runs(tmp_path)
    receipt = receipts.issue_receipt(db, [r["run_id"] for r in ledger.list_runs(db)])
    con = duckdb.connect(str(db))
    con.execute("UPDATE payouts SET share = share WHERE false")  # no-op write: still intact
    con.execute("UPDATE runs SET scenario_name = 'renamed' WHERE seq = 1")  # not re-hashed
    con.close()
    check = receipts.check_history(db, receipts=[receipt])
    assert not check.ok
    assert any("receipt" in p and "seq 2" in p and "chain" in p for p in check.problems)


def test_bad_receipts_and_heads_are_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, db = three_runs(tmp_path)
    bad = tmp_path / "bad.json"
    for text, field in (
        ("not json", None),
        ('{"format": "something else"}', "format"),
        (json.dumps({"format": receipts.RECEIPT_FORMAT, "ledger": "x", "runs": [], "head": {"seq": 0, "record_hash": "0" * 64}}), "head.seq"),
        (json.dumps({"format": receipts.RECEIPT_FORMAT, "ledger": "x", "runs": [{"run_id": "a", "seq": 1, "record_hash": "xyz"}],
                     "head": {"seq": 1, "record_hash": "0" * 64}}), "runs[1].record_hash"),
    ):
        bad.write_text(text)
        assert main(["ledger", "verify", "--ledger", str(db), "--receipt", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "bad.json" in err and len(err.strip().splitlines()) == 1
        if field:
            assert field in err
    assert main(["ledger", "verify", "--ledger", str(db), "--receipt", str(tmp_path / "missing.json")]) == 2
    assert main(["ledger", "verify", "--ledger", str(db), "--head", "abc"]) == 2
    assert "--head" in capsys.readouterr().err
    assert main(["payout", str(write_scenario(tmp_path)), "--no-ledger", "--receipt", str(tmp_path / "r.json")]) == 2
    assert "--receipt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# the MAC: writing, keys, old ledgers


def test_runs_recorded_with_a_key_carry_a_mac_and_the_key_is_not_stored(tmp_path: Path) -> None:
    _, db = three_runs(tmp_path, key=KEY)
    con = duckdb.connect(str(db), read_only=True)
    macs = dict(con.execute("SELECT run_id, mac FROM run_macs").fetchall())
    dump = repr(con.execute("SELECT * FROM runs").fetchall()) + repr(con.execute("SELECT * FROM meta").fetchall())
    con.close()
    runs = ledger.list_runs(db)
    assert len(macs) == 3
    for run in runs:
        assert macs[run["run_id"]] == ledger_mac.run_mac(KEY, run["record_hash"])
    assert KEY.decode() not in dump and KEY.decode() not in repr(macs)
    assert KEY not in db.read_bytes()
    check = receipts.check_history(db, key=KEY)
    assert check.ok and any("MACs: 3 of 3" in n for n in check.notes)
    without = receipts.check_history(db)
    assert without.ok and any("MACs: not checked" in n for n in without.notes)


def test_a_ledger_with_macs_refuses_a_run_without_the_key_or_with_another_key(tmp_path: Path) -> None:
    scenario, db = three_runs(tmp_path, key=KEY)
    scenario.write_text(scenario.read_text().replace('revenue = "150000.00"', 'revenue = "170000.00"'))
    with pytest.raises(ledger_mac.LedgerKeyError, match="carry a MAC"):
        record(scenario, db, "q1")
    with pytest.raises(ledger_mac.LedgerKeyError, match="does not match"):
        record(scenario, db, "q1", key=b"another-key-0123456789")
    assert len(ledger.list_runs(db)) == 3  # nothing written
    assert record(scenario, db, "q1", key=KEY).seq == 4
    assert receipts.check_history(db, key=KEY).ok


def test_keys_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(ledger_mac.KEY_ENV, raising=False)
    assert ledger_mac.ledger_key(None) is None
    monkeypatch.setenv(ledger_mac.KEY_ENV, KEY.decode())
    assert ledger_mac.ledger_key(None) == KEY
    key_file = tmp_path / "k"
    key_file.write_bytes(b"file-key-0123456789abcdef\r\n")
    assert ledger_mac.ledger_key(key_file) == b"file-key-0123456789abcdef"  # the file wins; the newline is dropped
    monkeypatch.setenv(ledger_mac.KEY_ENV, "short")
    with pytest.raises(ledger_mac.LedgerKeyError, match="16 bytes"):
        ledger_mac.ledger_key(None)
    with pytest.raises(ledger_mac.LedgerKeyError, match="not found"):
        ledger_mac.ledger_key(tmp_path / "nope")
    with pytest.raises(ledger_mac.LedgerKeyError, match="directory"):
        ledger_mac.ledger_key(tmp_path)
    monkeypatch.setenv(ledger_mac.KEY_ENV, KEY.decode())
    scenario, db = write_scenario(tmp_path, revenue="100000.00"), tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(db)]) == 0
    assert "MAC" in capsys.readouterr().out
    assert main(["ledger", "verify", "--ledger", str(db)]) == 0
    assert "MACs: 1 of 1" in capsys.readouterr().out
    monkeypatch.delenv(ledger_mac.KEY_ENV)
    assert main(["payout", str(scenario), "--period", "q2", "--ledger", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and ledger_mac.KEY_ENV in err
    assert len(ledger.list_runs(db)) == 1


def test_an_old_ledger_without_the_mac_table_opens_shows_verifies_and_takes_new_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario, db = write_scenario(tmp_path, revenue="100000.00"), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE run_macs")  # the schema before the MAC: exactly the old tables
    con.close()
    head = run_hash(db, 1)
    assert main(["ledger", "show", "--ledger", str(db)]) == 0
    assert main(["ledger", "verify", "--ledger", str(db), "--head", head]) == 0
    assert "MACs: not checked" in capsys.readouterr().out
    assert not receipts.check_history(db, key=KEY).ok  # a key was given but no run carries a MAC
    record(scenario, db, "q2", key=KEY)  # opening for writing adds the table; later runs carry a MAC
    check = receipts.check_history(db, key=KEY, heads=[head])
    assert check.ok, check.problems
    assert any("MACs: 1 of 2" in n for n in check.notes)


def test_run_writes_a_receipt_next_to_its_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = write_scenario(tmp_path, revenue="100000.00")
    out = tmp_path / "out"
    assert main(["run", str(scenario), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    receipt = out / "receipt.json"
    data = json.loads(receipt.read_text())
    assert [r["seq"] for r in data["runs"]] == [1, 2]
    assert data["head"]["record_hash"] in text and str(receipt) in text
    assert main(["ledger", "verify", "--ledger", str(out / "ledger.duckdb"), "--receipt", str(receipt)]) == 0
