"""Hostile input (issue 14, items 7, 8 and 10): lenient numbers, duplicated columns, BOMs, control
characters and markup in names, reversible CSV escaping, directories given where a file is expected."""

from __future__ import annotations

import csv
import io
import tomllib
import unicodedata
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest
from scenario_texts import small_scenario
from tiny_lm import TINY_PRESET_TOML

from market.cli import main
from market.export import escape_cell, unescape_cell
from market.money import parse_decimal
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame
from valuation.games.table_io import read_game_csv
from valuation.pipeline.config import load_valuation_config, parse_valuation_config

BASE = small_scenario("hostile")


def write_game(folder: Path, players: tuple[str, ...] = ("s0", "s1", "s2")) -> Path:
    masks = all_coalitions(3).astype(float)
    u = np.stack([0.5 + masks @ [0.1, 0.05, 0.02], 0.5 + masks @ [0.01, 0.08, 0.03]], axis=1)
    path = folder / "game.csv"
    TableGame(list(players), ["helpfulness", "harmlessness"], all_coalitions(3), u).to_csv(path)
    return path


def write_scenario(folder: Path, text: str = BASE, *, bom: bool = False) -> Path:
    write_game(folder)
    path = folder / "scenario.toml"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def payout_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `payout --no-ledger`, expect exit 2 and return the one error line."""
    assert main(["payout", str(path), "--no-ledger"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------------
# item 7: numbers are plain ASCII decimals; a duplicated column is an error; a BOM is named


GAME_HEADER = "coalition,helpfulness\n"
GAME_ROWS = ["", "a", "b", "a+b"]


def game_text(cells: list[str], header: str = GAME_HEADER) -> str:
    return header + "".join(f"{c},{v}\n" for c, v in zip(GAME_ROWS, cells, strict=True))


@pytest.mark.parametrize("bad", ["1_000", "０.６５", "٣", "0.5\u00a0", "1,5".replace(",", "\u066b"), "0x1p-2", "½"])
def test_game_csv_rejects_numbers_that_are_not_plain_ascii_decimals(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "game.csv"
    path.write_text(game_text(["0", "0.25", bad, "1"]), encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_game_csv(path)
    assert info.value.file == str(path)
    assert info.value.row == "row 4"
    assert info.value.field == "helpfulness"
    assert "plain decimal number" in info.value.message


@pytest.mark.parametrize(
    ("cell", "value"),
    [("0.65", 0.65), ("+0.5", 0.5), ("-.5", -0.5), ("1.", 1.0), ("1e-3", 1e-3), ("2.5E+2", 250.0), (" 0.75 ", 0.75)],
)
def test_game_csv_accepts_plain_decimals_with_exponents(tmp_path: Path, cell: str, value: float) -> None:
    path = tmp_path / "game.csv"
    path.write_text(game_text(["0", "0.25", cell, "1"]), encoding="utf-8")
    assert read_game_csv(path).utilities[2, 0] == pytest.approx(value, rel=1e-15)


def test_game_csv_utility_error_exits_2_naming_file_row_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "game.csv"
    path.write_text(game_text(["0", "1_000", "0.5", "1"]), encoding="utf-8")
    assert main(["shapley", "--utilities", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: row 3: field 'helpfulness': ")
    assert "'1_000'" in err


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("coalition,helpfulness,helpfulness\n", "helpfulness"),
        ("coalition,coalition,helpfulness\n", "coalition"),
        ("coalition,helpfulness,harmlessness,helpfulness\n", "helpfulness"),
    ],
)
def test_game_csv_duplicated_column_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str, column: str
) -> None:
    n_values = header.count(",") - 1
    body = "".join(f"{c},{','.join(['0.5'] * n_values)}\n" for c in GAME_ROWS)
    path = tmp_path / "game.csv"
    path.write_text(header + body, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_game_csv(path)
    assert info.value.field == column
    assert "duplicated column" in info.value.message
    assert "_duplicated_" not in info.value.message
    assert main(["shapley", "--utilities", str(path)]) == 2
    assert f"duplicated column '{column}'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["1_000.00", "１０００.００", "1e3", "1000.00\u3000", "٣٠٠", "0x10", "1 000.00"])
def test_scenario_revenue_must_be_a_plain_ascii_decimal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    path = write_scenario(tmp_path, BASE.replace('revenue = "1000.00"', f'revenue = "{bad}"'))
    err = payout_error(path, capsys)
    assert err.startswith(f"error: {path}: field 'market.revenue': ")
    assert "plain decimal number" in err


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("platform_fee = 0.1", 'platform_fee = "０.１"', "market.platform_fee"),
        ("platform_fee = 0.1", 'platform_fee = "0_.1"', "market.platform_fee"),
        ("helpfulness = 0.5", 'helpfulness = "0.5_0"', "objectives"),
        ("helpfulness = 0.5", 'helpfulness = "０.５"', "objectives"),
        ('utilities = "game.csv"', 'utilities = "game.csv"\n\n[[periods]]\nname = "q1"\nrevenue = "9_0"', "periods[1].revenue"),
    ],
)
def test_scenario_fee_weights_and_period_revenue_must_be_plain_ascii_decimals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, field: str
) -> None:
    path = write_scenario(tmp_path, BASE.replace(old, new))
    err = payout_error(path, capsys)
    assert f"field '{field}" in err
    assert "plain decimal number" in err


def test_parse_decimal_accepts_plain_strings_and_typed_numbers() -> None:
    assert parse_decimal("100000.00") == Decimal("100000.00")
    assert parse_decimal(" -0.5 ") == Decimal("-0.5")
    assert parse_decimal("+.25") == Decimal("0.25")
    assert parse_decimal(Decimal("1E+3")) == Decimal(1000)  # a TOML number: TOML's own grammar applies
    assert parse_decimal(5) == Decimal(5)
    for bad in ("1_000", "１", "1e3", "NaN", "Infinity", "", "."):
        with pytest.raises(InputError):
            parse_decimal(bad, field="x")


def test_scenario_with_a_bom_says_bom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_scenario(tmp_path, bom=True)
    err = payout_error(path, capsys)
    assert err.startswith(f"error: {path}: ")
    assert "BOM" in err and "UTF-8 without BOM" in err


def test_valuation_config_with_a_bom_says_bom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "valuation.toml"
    path.write_bytes(b"\xef\xbb\xbf[data]\npath = 'pairs.jsonl'\n")
    with pytest.raises(InputError) as info:
        load_valuation_config(path)
    assert "BOM" in str(info.value)
    scenario_path = write_scenario(tmp_path, BASE.replace('utilities = "game.csv"', 'config = "valuation.toml"'))
    err = payout_error(scenario_path, capsys)
    assert "BOM" in err


# ---------------------------------------------------------------------------------------------------
# item 8: control characters are rejected in names and never reach the terminal; markup prints literally


CONTROL_NAMES = ["\\u001b[31mevil", "ev\\u0000il", "\\tbob", "bob\\r", "a\\nb", "x\\u007f", "x\\u009b31m"]


@pytest.mark.parametrize("name", CONTROL_NAMES)
def test_control_characters_in_member_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = write_scenario(tmp_path, BASE.replace('name = "bob"', f'name = "{name}"'))
    err = payout_error(path, capsys)
    assert "field 'members[2].name'" in err
    assert "control character" in err
    assert "\x1b" not in err and "\x00" not in err and "\x9b" not in err


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('sources = ["s0"]', 'sources = ["\\ts0"]', "members[1].sources"),
        ('sources = ["s0"]', 'sources = ["s0\\u001b[2J"]', "members[1].sources"),
        ('name = "hostile"', 'name = "host\\u001b]0;pwned\\u0007ile"', "market.name"),
        ('utilities = "game.csv"', 'utilities = "game.csv"\n\n[[periods]]\nname = "q1\\r"', "periods[1].name"),
    ],
)
def test_control_characters_in_source_scenario_and_period_names_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, field: str
) -> None:
    path = write_scenario(tmp_path, BASE.replace(old, new))
    err = payout_error(path, capsys)
    assert f"field '{field}'" in err
    assert "control character" in err
    assert not any(unicodedata.category(c) == "Cc" for c in err.rstrip("\n"))


@pytest.mark.parametrize("cell", ["\ta", "a\x1b[31m", "a+\x00b"])
def test_control_characters_in_game_csv_player_names_exit_2(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "game.csv"
    path.write_text(f'coalition,helpfulness\n,0\n"{cell}",1\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_game_csv(path)
    assert info.value.row == "row 3"
    assert info.value.field == "coalition"
    assert "control character" in info.value.message
    assert not any(unicodedata.category(c) == "Cc" for c in str(info.value))


def test_control_characters_in_an_objective_column_name_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "game.csv"
    path.write_text('coalition,"help\x1b[1m"\n,0\na,1\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_game_csv(path)
    assert "control character" in info.value.message
    assert "\x1b" not in str(info.value)


def test_control_characters_in_a_valuation_config_objective_name_exit_2(tmp_path: Path) -> None:
    raw = tomllib.loads(TINY_PRESET_TOML)
    raw["data"] = {"path": "pairs.jsonl"}
    raw["output"] = {"dir": "run"}
    raw.setdefault("utility", {})["objectives"] = ["help\x1b[8mful"]
    with pytest.raises(InputError) as info:
        parse_valuation_config(raw, base_dir=tmp_path, file=tmp_path / "valuation.toml")
    assert info.value.field == "utility.objectives"
    assert "control character" in info.value.message
    assert "\x1b" not in str(info.value)


def test_error_messages_never_echo_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "evil\x1b[31m\x07.toml"
    assert main(["payout", str(hostile), "--no-ledger"]) == 2
    err = capsys.readouterr().err
    assert "\\x1b[31m\\x07.toml" in err
    assert not any(unicodedata.category(c) == "Cc" for c in err.rstrip("\n"))


def test_markup_and_emoji_codes_in_names_print_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace('name = "alice"', 'name = "[bold]x[/]"').replace('name = "bob"', 'name = ":thumbs_up: [red]"')
    text = text.replace('name = "hostile"', 'name = "[blink]market[/blink]"')
    path = write_scenario(tmp_path, text)
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(path), "--ledger", str(db)]) == 0
    out = capsys.readouterr().out
    assert "[bold]x[/]" in out
    assert ":thumbs_up: [red]" in out
    assert "[blink]market[/blink]" in out
    assert main(["ledger", "show", "--ledger", str(db)]) == 0
    assert "[blink]market[/blink]" in capsys.readouterr().out
    assert main(["pool", "compare", str(path)]) == 0
    assert "[bold]x[/]" in capsys.readouterr().out


def test_control_characters_from_a_ledger_are_escaped_when_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger written by someone else (or an older version) may hold anything: show escapes it."""
    path = write_scenario(tmp_path)
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(path), "--ledger", str(db)]) == 0
    capsys.readouterr()
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE payouts SET member = '\x1b[31mbob\x00' WHERE member = 'bob'")
        con.execute("UPDATE runs SET scenario_name = 'x\x1b]0;title\x07'")
        run_id = con.execute("SELECT run_id FROM runs").fetchone()[0]
    assert main(["ledger", "show", "--ledger", str(db), "--run", run_id]) == 0
    out = capsys.readouterr().out
    assert "\\x1b[31mbob\\x00" in out
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in out)
    assert main(["ledger", "show", "--ledger", str(db)]) == 0
    out = capsys.readouterr().out
    assert "x\\x1b]0;title\\x07" in out
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in out)


def test_control_characters_in_data_source_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = '{"prompt": "p", "chosen": "c", "rejected": "r", "source": "s\\u001b[2J"}\n'
    (tmp_path / "pairs.jsonl").write_text(record, encoding="utf-8")
    assert main(["data", "inspect", str(tmp_path / "pairs.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "line 1: field 'source'" in err and "control character" in err
    assert not any(unicodedata.category(c) == "Cc" for c in err.rstrip("\n"))
    named = tmp_path / "folder"
    named.mkdir()
    (named / "evil\x1b[31m.jsonl").write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n', encoding="utf-8")
    assert main(["data", "inspect", str(named)]) == 2
    err = capsys.readouterr().err
    assert "the file name gives the source name" in err and "control character" in err
    assert not any(unicodedata.category(c) == "Cc" for c in err.rstrip("\n"))


def test_data_inspect_prints_label_names_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the labels cell on one line
    record = '{"prompt": "p", "chosen": "c", "rejected": "r", "labels": {"[b]\\u001bx": 1, "\\u009b": 1}}\n'
    (tmp_path / "[red]pairs.jsonl").write_text(record, encoding="utf-8")
    assert main(["data", "inspect", str(tmp_path / "[red]pairs.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "[b]\\x1bx" in out and "\\x9b" in out
    assert "[red]pairs" in out
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in out)
    assert main(["data", "inspect", "--json", str(tmp_path / "[red]pairs.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "\\u001b" in out and "\\u009b" in out
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in out)


def test_csv_escaping_is_reversible() -> None:
    cells = ["=1+2", "'=1+2", "''=1+2", "+x", "-1", "@SUM(A1)", "'", "''", "plain", "", "it's", "\tx", "\rx"]
    escaped = [escape_cell(c) for c in cells]
    assert len(set(escaped)) == len(cells)
    assert escape_cell("=1+2") == "'=1+2"
    assert escape_cell("'=1+2") == "''=1+2"
    assert escape_cell("plain") == "plain" and escape_cell("it's") == "it's"
    for cell, out in zip(cells, escaped, strict=True):
        assert unescape_cell(out) == cell
        assert not out.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_members_that_collided_in_the_csv_export_stay_distinct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('name = "alice"', 'name = "=1+2"').replace('name = "bob"', "name = \"'=1+2\"")
    path = write_scenario(tmp_path, text)
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(path), "--ledger", str(db)]) == 0
    out_csv = tmp_path / "payouts.csv"
    assert main(["ledger", "export", "--ledger", str(db), "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    members = [r["member"] for r in rows]
    assert sorted(members) == ["''=1+2", "'=1+2"]
    assert sorted(unescape_cell(m) for m in members) == ["'=1+2", "=1+2"]


# ---------------------------------------------------------------------------------------------------
# item 10: a directory where a file is expected is named as a directory


def test_game_csv_directory_is_named_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    assert main(["shapley", "--utilities", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}: ") and "is a directory" in err and "not found" not in err
    parquet = tmp_path / "dir.parquet"
    parquet.mkdir()
    assert main(["shapley", "--utilities", str(parquet)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_scenario_directory_is_named_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "scenario.toml"
    folder.mkdir()
    err = payout_error(folder, capsys)
    assert "is a directory" in err and "not found" not in err


def test_scenario_utilities_directory_is_named_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_scenario(tmp_path, BASE.replace('utilities = "game.csv"', 'utilities = "tables"'))
    (tmp_path / "tables").mkdir()
    err = payout_error(path, capsys)
    assert "field 'valuation.utilities'" in err and "is a directory" in err and "not found" not in err


def test_valuation_config_directory_is_named_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "valuation.toml").mkdir()
    path = write_scenario(tmp_path, BASE.replace('utilities = "game.csv"', 'config = "valuation.toml"'))
    err = payout_error(path, capsys)
    assert "field 'valuation.config'" in err and "is a directory" in err and "no such file" not in err
    with pytest.raises(InputError) as info:
        load_valuation_config(tmp_path / "valuation.toml")
    assert info.value.message.startswith("is a directory")
    assert main(["value", str(tmp_path / "valuation.toml")]) == 2
    assert "is a directory" in capsys.readouterr().err
