"""Issue 14, items 2–4: what a ledger path may hold, amounts that fit, damage reported as damage.

* A ledger path is a payoutsim ledger or a new file: a CSV, a directory, an empty file, a foreign DuckDB
  database or another schema version → exit 2 naming the path, before any valuation or payout; "recorded"
  only after the run is read back from the file.
* Amounts beyond 2^63 − 1 minor units (the ledger's BIGINT) → exit 2 naming the field and the limit,
  when the scenario is read (nothing printed before).
* A damaged ledger (flipped bytes, truncated) → exit 2 "the ledger file is damaged", never "in use by
  another process" and never a traceback; a lock held by another process stays exit 3.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from test_market_ledger import record, write_scenario  # the ledger tests' scenario (tests/ is on sys.path)

from market import ledger
from market.cli import main
from market.ledger_file import BLOCKS_START
from market.money import MAX_MINOR, to_minor
from valuation.errors import InputError

# The three amounts: "1e30" as a TOML float (a quoted "1e30" is not a plain decimal string and is
# refused for its syntax before its size: tests/test_hostile_input.py).
TOO_LARGE = ("92233720368547758.08", "99999999999999999999999.99")


def no_valuation(*args: object, **kwargs: object) -> None:
    raise AssertionError("the valuation ran before the ledger path was checked")


def three_run_ledger(folder: Path) -> tuple[Path, Path]:
    """(scenario, ledger) with three runs: q1, q2 and q1 of a changed scenario."""
    scenario, db = write_scenario(folder), folder / "ledger.duckdb"
    record(scenario, db, "q1")
    record(scenario, db, "q2")
    scenario.write_text(scenario.read_text().replace('revenue = "1000.00"', 'revenue = "1500.00"'))
    record(scenario, db, "q1")
    scenario.write_text(scenario.read_text().replace('revenue = "1500.00"', 'revenue = "1700.00"'))
    return scenario, db


def tables_of(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------
# item 2: a ledger path is a payoutsim ledger or a new file


def test_payout_into_a_csv_records_nothing_and_says_so_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = write_scenario(tmp_path)
    csv_file = tmp_path / "existing.csv"
    csv_file.write_text("member,amount\nalice,1.00\n", encoding="utf-8")
    before = csv_file.read_bytes()
    code = main(["payout", str(scenario), "--period", "q1", "--ledger", str(csv_file)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert str(csv_file) in err and "not a DuckDB database file" in err
    assert "recorded" not in out and "alice" not in out  # no payout table, no "recorded run"
    assert csv_file.read_bytes() == before
    monkeypatch.setattr("market.run.load_inputs", no_valuation)  # refused before the valuation runs
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(csv_file)]) == 2
    assert main(["run", str(scenario), "--ledger", str(csv_file), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "not a DuckDB database file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _foreign(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER, name VARCHAR)")
    con.execute("INSERT INTO customers VALUES (1, 'x')")
    con.close()


def _other_version(path: Path) -> None:
    scenario = write_scenario(path.parent)
    record(scenario, path, "q1")
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()


BAD_PATHS = {
    "a directory": (lambda p: p.mkdir(), "is a directory, not a file"),
    "an empty file": (lambda p: p.write_bytes(b""), "is an empty file"),
    "a Parquet-like file": (lambda p: p.write_bytes(b"PAR1" + bytes(100)), "not a DuckDB database file"),
    "a foreign DuckDB database": (_foreign, "without the ledger's table(s)"),
    "another schema version": (_other_version, "schema version 2"),
}


@pytest.mark.parametrize("kind", list(BAD_PATHS))
def test_payout_refuses_what_is_not_a_ledger_before_any_work(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make, message = BAD_PATHS[kind]
    (tmp_path / "s").mkdir()
    scenario = write_scenario(tmp_path / "s")
    target = tmp_path / "target.duckdb"
    make(target)
    tables_before = tables_of(target) if "DuckDB" in kind or "version" in kind else None
    monkeypatch.setattr("market.run.load_inputs", no_valuation)
    code = main(["payout", str(scenario), "--period", "q2", "--ledger", str(target)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith(f"error: {target}: ") and message in err and len(err.strip().splitlines()) == 1
    assert out == ""
    if tables_before is not None:
        assert tables_of(target) == tables_before  # no ledger tables created inside someone else's database
    for command in (["ledger", "show"], ["ledger", "verify"]):
        assert main([*command, "--ledger", str(target)]) == 2
        assert message in capsys.readouterr().err


def test_an_empty_duckdb_database_becomes_a_ledger(tmp_path: Path) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    duckdb.connect(str(db)).close()  # no tables, no views: nothing in it to confuse or lose
    ledger.check_ledger(db)
    assert record(scenario, db, "q1").added
    assert ledger.verify(db).ok


def test_recorded_is_said_only_after_the_run_is_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    record(scenario, db, "q1")
    real_connect = ledger.connect
    writes: list[Path] = []

    def writes_go_elsewhere(path: Path, *, read_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        # each write transaction lands in a new file, not the ledger (what DuckDB 2.0 did with a CSV)
        if not read_only:
            writes.append(tmp_path / f"elsewhere{len(writes)}.duckdb")
        return real_connect(path if read_only else writes[-1], read_only=read_only)

    monkeypatch.setattr(ledger, "connect", writes_go_elsewhere)
    with pytest.raises(InputError, match="NOT recorded"):
        record(scenario, db, "q2")
    code = main(["payout", str(scenario), "--period", "q2", "--ledger", str(db)])
    out, err = capsys.readouterr()
    assert code == 2 and "NOT recorded" in err and "recorded run" not in out
    monkeypatch.undo()
    assert [r["period"] for r in ledger.list_runs(db)] == ["q1"]
    assert len(writes) == 2 and all(ledger.list_runs(w)[0]["period"] == "q2" for w in writes)


# ---------------------------------------------------------------------------------------------------
# item 3: amounts beyond the ledger's 64-bit minor units are refused up front


@pytest.mark.parametrize("revenue", [*(f'"{r}"' for r in TOO_LARGE), "1e30"])
@pytest.mark.parametrize("where", ["market", "periods"])
def test_too_large_revenue_is_refused_naming_field_and_limit(
    revenue: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    text = scenario.read_text()
    if where == "market":
        text = text.replace('revenue = "1000.00"', f"revenue = {revenue}")
        field = "market.revenue"
    else:
        text = text.replace('revenue = "2000.00"', f"revenue = {revenue}")
        field = "periods[2].revenue"
    scenario.write_text(text)
    code = main(["payout", str(scenario), "--ledger", str(db)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == ""  # nothing printed before the error
    assert f"field '{field}'" in err and "at most 92233720368547758.07 EUR" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not db.exists()


def test_the_largest_amount_is_paid_recorded_and_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, db = write_scenario(tmp_path), tmp_path / "ledger.duckdb"
    scenario.write_text(scenario.read_text().replace('revenue = "1000.00"', 'revenue = "92233720368547758.07"'))
    assert main(["payout", str(scenario), "--period", "q1", "--ledger", str(db)]) == 0
    assert "recorded run" in capsys.readouterr().out
    (run,) = ledger.list_runs(db)
    assert run["revenue_minor"] == MAX_MINOR
    assert sum(int(p["amount_minor"]) for p in ledger.run_payouts(db, run["run_id"])) == run["pool_minor"]
    assert ledger.verify(db).ok
    assert main(["ledger", "export", "--ledger", str(db), "--csv", str(tmp_path / "out.csv")]) == 0


def test_to_minor_limit_per_currency() -> None:
    assert to_minor(Decimal("92233720368547758.07"), "EUR") == MAX_MINOR
    assert to_minor(Decimal("9223372036854775807"), "JPY") == MAX_MINOR
    assert to_minor(Decimal("9223372036854775.807"), "KWD") == MAX_MINOR
    for amount, currency in (("92233720368547758.08", "EUR"), ("9223372036854775808", "JPY"), ("1e30", "KWD")):
        with pytest.raises(InputError, match="beyond the supported range") as info:
            to_minor(Decimal(amount), currency, field="revenue")
        assert info.value.field == "revenue"


# ---------------------------------------------------------------------------------------------------
# item 4: damage is reported as damage, a lock as a lock


def damage_offsets(db: Path) -> dict[str, int]:
    """Byte offsets to flip: DuckDB's three headers and the start of every block the tables use."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        block_size = int(con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])
        blocks = {int(r[0]) for r in con.execute("SELECT block_id FROM pragma_metadata_info()").fetchall()}
        for table in ledger.LEDGER_TABLES:
            blocks |= {
                int(r[0])
                for r in con.execute(f"SELECT DISTINCT block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0").fetchall()
            }
    finally:
        con.close()
    offsets = {"main header checksum": 0, "main header": 20, "database header 1": 4096 + 24, "database header 2": 8192 + 24}
    for b in sorted(blocks):
        offsets[f"block {b} checksum"] = BLOCKS_START + b * block_size + 3
        offsets[f"block {b} data"] = BLOCKS_START + b * block_size + 200
    return offsets


def test_damaged_ledgers_are_reported_as_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, good = three_run_ledger(tmp_path)
    expected = ledger.export_rows(good)
    data = good.read_bytes()
    cases: dict[str, bytes] = {"truncated to half": data[: len(data) // 2]}
    for name, offset in damage_offsets(good).items():
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        cases[name] = bytes(flipped)
    damaged, intact = [], []
    for i, (name, content) in enumerate(cases.items()):
        db = tmp_path / f"case{i}.duckdb"
        db.write_bytes(content)
        verify_code = main(["ledger", "verify", "--ledger", str(db)])
        _, verify_err = capsys.readouterr()
        show_code = main(["ledger", "show", "--ledger", str(db)])
        _, show_err = capsys.readouterr()
        payout_code = main(["payout", str(scenario), "--period", "q2", "--ledger", str(db)])
        payout_out, payout_err = capsys.readouterr()
        for err in (verify_err, show_err, payout_err):
            assert "in use by another process" not in err and "Traceback" not in err, (name, err)
        if verify_code == 0:  # DuckDB still reads every row and they are the original ones
            intact.append(name)
            assert ledger.export_rows(db) == expected, name
            continue
        damaged.append(name)
        assert verify_code == 2 and "damaged" in verify_err, (name, verify_err)
        assert show_code in (0, 2) and (show_code == 0 or "damaged" in show_err), (name, show_err)
        assert payout_code == 2 and "damaged" in payout_err and payout_out == "", (name, payout_out, payout_err)
    assert "truncated to half" in damaged
    assert {"main header checksum", "main header", "database header 1", "database header 2"} <= set(damaged)
    assert len(damaged) >= len(cases) // 2, (damaged, intact)


def test_a_truncated_ledger_is_damaged_for_show_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, good = three_run_ledger(tmp_path)
    half = tmp_path / "half.duckdb"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["ledger", "show", "--ledger", str(half)]) == 2
    assert "the ledger file is damaged" in capsys.readouterr().err
    with pytest.raises(ledger.LedgerDamagedError, match="truncated"):
        ledger.list_runs(half)


HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_a_lock_held_by_another_process_is_busy_not_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, db = three_run_ledger(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        for command in (["ledger", "show"], ["ledger", "verify"], ["payout", str(scenario), "--period", "q2"]):
            assert main([*command, "--ledger", str(db)]) == ledger.LedgerBusyError.exit_code == 3
            err = capsys.readouterr().err
            assert "in use by another process" in err and "damaged" not in err
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert ledger.verify(db).ok


def test_a_copy_of_a_good_ledger_stays_good(tmp_path: Path) -> None:
    _, good = three_run_ledger(tmp_path)
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(good, copy)
    ledger.check_ledger(copy)
    assert ledger.verify(copy).ok and ledger.verify(copy).n_runs == 3
