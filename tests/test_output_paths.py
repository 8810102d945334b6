"""Unwritable output paths (issue 14, item 6): one line ``error: …`` naming the path and why, exit 2, checked
before any expensive work; ``ledger export`` with one bad path writes neither file and says so."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from market.cli import main
from valuation.errors import InputError
from valuation.files import check_outputs, check_writable, check_writable_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "scenarios" / "example.toml"
GAME = REPO / "data" / "examples" / "market" / "game.csv"


def bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (an output path that cannot be written, the words the error must contain)."""
    folder = tmp_path / "a_folder"
    folder.mkdir()
    regular = tmp_path / "file.txt"
    regular.write_text("not a folder\n", encoding="utf-8")
    cases = {
        "folder": (folder, "is a directory"),
        "under_a_file": (regular / "x.out", "is a file, not a folder"),
        "deep_under_a_file": (regular / "a" / "b" / "x.out", "is a file, not a folder"),
    }
    if Path("/proc").is_dir():  # Linux: a virtual file system where no file can be created
        cases["proc"] = (Path("/proc") / "payoutsim-x.out", "cannot create files in folder /proc")
    return cases


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def forbid(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    """Make ``target.name`` fail the test if it is called (the expensive work must not start)."""

    def called(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} ran before the output path was checked")

    monkeypatch.setattr(target, name, called)


@pytest.mark.parametrize("case", ["folder", "under_a_file", "deep_under_a_file", "proc"])
def test_shapley_out_unwritable_exits_2_before_valuing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = bad_paths(tmp_path)
    if case not in cases:
        pytest.skip("no /proc on this system")
    path, words = cases[case]
    import valuation.games.estimators as estimators

    forbid(monkeypatch, estimators, "value_table_file")
    code = main(["shapley", "-u", str(GAME), "--out", str(path)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert str(path) in line and words in line and "--out" in line


@pytest.mark.parametrize("case", ["folder", "under_a_file", "proc"])
def test_payout_ledger_unwritable_exits_2_before_paying(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = bad_paths(tmp_path)
    if case not in cases:
        pytest.skip("no /proc on this system")
    path, words = cases[case]
    import market.run

    forbid(monkeypatch, market.run, "load_inputs")
    code = main(["payout", str(EXAMPLE), "--period", "2025-Q1", "--ledger", str(path)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert str(path) in line and words in line and "--ledger" in line


@pytest.mark.parametrize("option", ["--out", "--ledger"])
def test_run_checks_out_and_ledger_before_the_valuation(
    option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, words = bad_paths(tmp_path)["under_a_file"]
    import market.run

    forbid(monkeypatch, market.run, "valued_inputs")
    args = ["run", str(EXAMPLE), "--no-progress", option, str(path)]
    if option == "--ledger":
        args += ["--out", str(tmp_path / "out")]
    code = main(args)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert str(path) in line and words in line and option in line
    assert not (tmp_path / "out").exists()  # nothing created


@pytest.fixture
def ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(EXAMPLE), "--period", "2025-Q1", "--ledger", str(db)]) == 0
    capsys.readouterr()
    return db


@pytest.mark.parametrize("case", ["folder", "under_a_file", "proc"])
def test_ledger_export_csv_unwritable_exits_2(
    case: str, ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = bad_paths(tmp_path)
    if case not in cases:
        pytest.skip("no /proc on this system")
    path, words = cases[case]
    code = main(["ledger", "export", "--ledger", str(ledger), "--csv", str(path)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert str(path) in line and words in line and "--csv" in line


def test_ledger_export_with_one_bad_path_writes_neither_and_says_so(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "ok.parquet"
    bad, _ = bad_paths(tmp_path)["folder"]
    code = main(["ledger", "export", "--ledger", str(ledger), "--parquet", str(good), "--csv", str(bad)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "--csv" in line and "nothing was written" in line
    assert not good.exists()
    # no temp files and no export; `receipts/` is the receipt the fixture's `payout` wrote (market.receipts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "file.txt", "ledger.duckdb", "receipts"]


def test_checks_create_nothing_and_accept_new_nested_paths(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "x.json"
    assert check_writable(target) == target
    assert check_writable_dir(tmp_path / "new_dir" / "sub") == tmp_path / "new_dir" / "sub"
    check_outputs({"--csv": target, "--parquet": None})
    assert list(tmp_path.iterdir()) == []  # no folder, no probe file left


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot create files in folder") as err:
            check_writable(locked / "x.json", field="--out")
        assert str(locked / "x.json") in str(err.value)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("check", [check_writable, check_writable_dir])
def test_a_regular_file_on_the_way_is_named(check: Callable[..., Path], tmp_path: Path) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match=r"cannot write under .*file\.txt: it is a file, not a folder"):
        check(regular / "sub" / "x", field="--out")
