"""`payoutsim shapley`: JSON on stdout or --out, exit code 2 with a located message on bad games."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "games"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["shapley", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_exact_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--utilities", str(EXAMPLES / "glove.csv"))
    assert code == 0, err
    result = json.loads(out)  # nothing but JSON on stdout
    assert result["method"] == "exact"
    assert result["players"] == ["left", "right1", "right2"]
    assert result["objectives"] == ["value"]
    values = {(v["player"], v["objective"]): (v["value"], v["std_err"]) for v in result["values"]}
    assert values[("left", "value")] == (pytest.approx(2 / 3), 0.0)
    assert values[("right2", "value")] == (pytest.approx(1 / 6), 0.0)
    assert "left" in err  # the human summary goes to stderr


def test_sampled_method_with_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sub" / "result.json"
    code, out, err = run(
        capsys, "-u", str(EXAMPLES / "two_objectives_4_sources.csv"), "--method", "permutation",
        "--budget", "200", "--seed", "3", "--out", str(target), "--no-summary",
    )
    assert code == 0, err
    assert out == ""
    result = json.loads(target.read_text())
    assert result["method"] == "permutation"
    assert result["objectives"] == ["helpfulness", "harmlessness"]
    assert len(result["values"]) == 8
    assert all(v["std_err"] >= 0 for v in result["values"])
    assert result["n_evaluations"] <= 200 and result["budget"] == 200
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temp file left behind


@pytest.mark.parametrize("method", ["banzhaf", "loo", "least_core"])
def test_other_methods(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-u", str(EXAMPLES / "glove.csv"), "-m", method)
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == method
    if method == "least_core":
        assert result["info"]["epsilon"] == [pytest.approx(0.0, abs=1e-9)]


@pytest.mark.parametrize(
    ("csv_text", "extra", "expected"),
    [
        ("coalition,v\n,0\na,1\nb,2\n", [], "missing coalition 'a+b'"),
        ("coalition,v\n,0\na,1\nb,2\na+b,3\nb+a,3\n", [], "row 6: field 'coalition': duplicated coalition 'a+b' (also on row 5)"),
        ("coalition,v\n,0\na,1\nb,2\na+c,3\n", ["--players", "a,b"], "row 5: field 'coalition': unknown player 'c'"),
        ("coalition,v\n,0\na+,1\n", [], "row 3: field 'coalition': empty player name"),
        ("coalition,v\n,0\na,oops\n", [], "row 3: field 'v': utility must be a number"),
        ("coalition,v\n,0\na,nan\n", [], "row 3: field 'v': utility must be a finite number"),
        ("coalition,v\n,0\na,1\n", ["--method", "magic"], "unknown method 'magic'"),
        ("coalition,v\n,0\na,1\n", ["--budget", "1"], "needs all 2^1 = 2 coalitions but the budget is 1"),
    ],
)
def test_bad_games_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv_text: str, extra: list[str], expected: str
) -> None:
    path = tmp_path / "game.csv"
    path.write_text(csv_text)
    out_path = tmp_path / "result.json"
    code, out, err = run(capsys, "--utilities", str(path), "--out", str(out_path), *extra)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert expected in err
    assert not out_path.exists()


def test_too_many_players_for_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    players = [f"s{i}" for i in range(23)]
    path = tmp_path / "big.csv"
    path.write_text("coalition,v\n," + "0\n" + "".join(f"{p},1\n" for p in players))
    code, _, err = run(capsys, "--utilities", str(path))
    assert code == 2
    assert "23 players" in err and "use a sampled method: --method regression" in err


def test_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--utilities", str(tmp_path / "nope.csv"))
    assert code == 2 and "file not found" in err
