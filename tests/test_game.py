"""The game abstraction: coalition helpers, table games from CSV/Parquet (and their errors), function,
cached and grouped games, the result type and the stopping rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions, coalition_index, coalition_label, popcount
from valuation.games.estimators import approximate
from valuation.games.game import CachedGame, FunctionGame, Game, GroupedGame, TableGame, scalarised_game
from valuation.games.result import ValuationResult
from valuation.games.stopping import MaxEvaluations, MaxTime, SamplingState, StandardError

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "games"


def write(tmp_path: Path, text: str, name: str = "game.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def additive_table(players: list[str], objectives: list[str], weights: np.ndarray) -> TableGame:
    masks = all_coalitions(len(players))
    return TableGame(players, objectives, masks, masks.astype(float) @ weights)


# --- coalition helpers -------------------------------------------------------------------------------


def test_all_coalitions_rows_are_binary_digits() -> None:
    masks = all_coalitions(3)
    assert masks.shape == (8, 3)
    assert masks.dtype == bool
    assert masks[5].tolist() == [True, False, True]  # 5 = 0b101: players 0 and 2
    assert coalition_index(masks).tolist() == list(range(8))
    assert popcount(np.arange(8)).tolist() == [0, 1, 1, 2, 1, 2, 2, 3]


def test_coalition_label() -> None:
    assert coalition_label([True, False, True], ["a", "b", "c"]) == "a+c"
    assert coalition_label([False, False], ["a", "b"]) == ""


# --- CSV -----------------------------------------------------------------------------------------------


def test_csv_round_trip_and_player_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "coalition,help,harm\n"
        "b+a,3,30\n"
        ",0,0\n"
        "b,2,20\n"  # first single-player row: b comes first
        "a,1,10\n",
    )
    game = TableGame.from_csv(path)
    assert game.players == ("b", "a")
    assert game.objectives == ("help", "harm")
    assert game.is_complete()
    np.testing.assert_array_equal(game(np.array([[False, True], [True, True]])), [[1, 10], [3, 30]])
    out = tmp_path / "copy.csv"
    game.to_csv(out)
    again = TableGame.from_csv(out)
    assert again.players == game.players
    np.testing.assert_array_equal(again(all_coalitions(2)), game(all_coalitions(2)))


def test_players_without_single_rows_are_sorted(tmp_path: Path) -> None:
    path = write(tmp_path, "coalition,v\nz+y,1\nx,2\ny+x,3\n")
    game = TableGame.from_csv(path)
    assert game.players == ("x", "y", "z")
    assert not game.is_complete()


def test_whitespace_and_quoted_empty_coalition(tmp_path: Path) -> None:
    path = write(tmp_path, 'coalition,v\n"",0\n a , 1\n a + b ,3\nb,2\n')
    game = TableGame.from_csv(path)
    assert game.players == ("a", "b")
    assert game.is_complete()
    assert game(np.array([[True, True]]))[0, 0] == 3.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("coalition,v\n,0\na,1\na,2\n", "game.csv: row 4: field 'coalition': duplicated coalition 'a' (also on row 3)"),
        ("coalition,v\n,0\na+b,1\nb+a,2\n", "row 4: field 'coalition': duplicated coalition 'a+b' (also on row 3)"),
        ("coalition,v\n,0\na++b,1\n", "row 3: field 'coalition': empty player name in coalition 'a++b'"),
        ("coalition,v\n,0\n+a,1\n", "row 3: field 'coalition': empty player name"),
        ("coalition,v\na+a,1\n", "row 2: field 'coalition': player repeated"),
        ("coalition,v\n,0\na,x1\n", "row 3: field 'v': utility must be a number, got 'x1'"),
        ("coalition,v\n,0\na,NaN\n", "row 3: field 'v': utility must be a finite number"),
        ("coalition,v\n,0\na,\n", "row 3: field 'v': missing utility"),
        ("players,v\n,0\n", "field 'coalition': no 'coalition' column"),
        ("coalition\na\n", "no objective column"),
        ("coalition,v\n", "no rows"),
    ],
)
def test_bad_csv_names_the_row(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        TableGame.from_csv(path)
    assert expected in str(info.value)


def test_unknown_player_with_explicit_player_list(tmp_path: Path) -> None:
    path = write(tmp_path, "coalition,v\n,0\na,1\nb+c,2\n")
    with pytest.raises(InputError, match=r"row 4: field 'coalition': unknown player 'c' \(players: a, b\)"):
        TableGame.from_csv(path, players=["a", "b"])
    game = TableGame.from_csv(path, players=["c", "b", "a"])
    assert game.players == ("c", "b", "a")


def test_missing_file_and_bad_player_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        TableGame.from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="contains '\\+'"):
        TableGame(["a+b"], ["v"], all_coalitions(1), np.zeros(2))
    with pytest.raises(InputError, match="empty player name"):
        FunctionGame(["a", " "], ["v"], lambda m: m.sum(1))


def test_missing_coalition_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "coalition,v\n,0\na,1\nb,2\n")  # a+b missing
    game = TableGame.from_csv(path)
    assert game.missing_coalitions() == ["a+b"]
    with pytest.raises(InputError, match=r"missing coalition 'a\+b': method 'exact' needs all 2\^2 = 4"):
        approximate(game, "exact")
    with pytest.raises(InputError, match=r"coalition 'a\+b' is not in the table"):
        game(np.array([[True, True]]))
    empty_missing = TableGame.from_csv(write(tmp_path, "coalition,v\na,1\nb,2\na+b,3\n", "g2.csv"))
    with pytest.raises(InputError, match="the empty coalition"):
        approximate(empty_missing, "exact")


def test_partial_table_serves_loo(tmp_path: Path) -> None:
    path = write(tmp_path, "coalition,v\na+b+c,6\nb+c,5\na+c,4\na+b,3\n")
    result = approximate(TableGame.from_csv(path), "loo")
    assert result.players == ("a", "b", "c")
    np.testing.assert_allclose(result.values[:, 0], [1, 2, 3])


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    import polars as pl

    path = tmp_path / "game.parquet"
    pl.DataFrame({"coalition": ["", "a", "b", "a+b"], "v": [0.0, 1.0, 2.0, 4.0]}).write_parquet(path)
    game = TableGame.from_file(path)
    assert game.is_complete()
    np.testing.assert_allclose(approximate(game).values[:, 0], [1.5, 2.5])
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"coalition": ["", "a"], "v": [0.0, float("nan")]}).write_parquet(bad)
    with pytest.raises(InputError, match="row 3: field 'v': utility must be a finite number"):
        TableGame.from_parquet(bad)


def test_example_games_load() -> None:
    glove = TableGame.from_csv(EXAMPLES / "glove.csv")
    assert glove.is_complete() and glove.players == ("left", "right1", "right2")
    two = TableGame.from_csv(EXAMPLES / "two_objectives_4_sources.csv")
    assert two.is_complete() and two.objectives == ("helpfulness", "harmlessness")


# --- wrappers --------------------------------------------------------------------------------------------


def test_function_game_checks_shape() -> None:
    game = FunctionGame(["a", "b"], ["v", "w"], lambda m: m.astype(float))
    assert isinstance(game, Game)
    assert game(np.array([[True, False]])).tolist() == [[1.0, 0.0]]
    bad = FunctionGame(["a", "b"], ["v"], lambda m: m.astype(float))
    with pytest.raises(ValueError, match="shape"):
        bad(np.array([[True, False]]))


def test_cached_game_evaluates_each_coalition_once() -> None:
    calls: list[int] = []

    def fn(masks: np.ndarray) -> np.ndarray:
        calls.append(masks.shape[0])
        return masks.sum(axis=1).astype(float)

    game = CachedGame(FunctionGame(["a", "b", "c"], ["v"], fn))
    first = game(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=bool))
    assert first[:, 0].tolist() == [1, 1, 2]
    assert (game.misses, game.hits) == (2, 1)
    game(np.array([[0, 1, 1], [1, 1, 1]], dtype=bool))
    assert (game.misses, game.hits) == (3, 2)
    assert calls == [2, 1]
    result = approximate(game, "exact")
    assert game.misses == 8
    np.testing.assert_allclose(result.values[:, 0], [1, 1, 1])


def test_grouped_game_on_a_table() -> None:
    # sources s0..s3 additive with weights 1,2,4,8; member x owns s0+s2, y owns s1, z owns s3, w nothing
    table = additive_table(["s0", "s1", "s2", "s3"], ["v"], np.array([[1.0], [2.0], [4.0], [8.0]]))
    grouped = GroupedGame(table, {"x": ["s0", "s2"], "y": ["s1"], "z": "s3", "w": []})
    assert grouped.players == ("x", "y", "z", "w")
    result = approximate(grouped, "exact")
    np.testing.assert_allclose(result.values[:, 0], [5, 2, 8, 0])
    with pytest.raises(InputError, match="unknown source 'nope'"):
        GroupedGame(table, {"x": ["nope"]})


def test_scalarised_game_and_result_linearity() -> None:
    table = additive_table(["a", "b"], ["h", "s"], np.array([[1.0, 10.0], [2.0, -4.0]]))
    result = approximate(table, "exact")
    values, errs = result.scalarised({"h": 0.5, "s": 0.25})
    np.testing.assert_allclose(values, [3.0, 0.0])
    np.testing.assert_array_equal(errs, [0.0, 0.0])
    direct = approximate(scalarised_game(table, {"h": 0.5, "s": 0.25}), "exact")
    np.testing.assert_allclose(direct.values[:, 0], values)
    with pytest.raises(InputError, match="unknown objective 'x'"):
        result.scalarised({"x": 1.0})
    with pytest.raises(ValueError, match="not linear"):
        approximate(table, "least_core").scalarised({"h": 1.0})


def test_scalarised_std_err_is_conservative_sum() -> None:
    result = ValuationResult(
        "permutation", ("a",), ("h", "s"), np.array([[1.0, 2.0]]), np.array([[0.1, 0.2]]), 10, 10, {}
    )
    values, errs = result.scalarised({"h": 2.0, "s": -1.0})
    assert values[0] == pytest.approx(0.0)
    assert errs[0] == pytest.approx(0.4)


# --- result JSON ------------------------------------------------------------------------------------------


def test_result_json_round_trip() -> None:
    result = ValuationResult(
        "permutation",
        ("a", "b"),
        ("h",),
        np.array([[0.25], [0.75]]),
        np.array([[0.01], [np.inf]]),
        budget=100,
        n_evaluations=98,
        info={"converged": np.bool_(False), "stopped_by": "max_evaluations", "n_samples": np.int64(24)},
    )
    d = result.to_json_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: inf became null
    assert d["values"][1] == {"player": "b", "objective": "h", "value": 0.75, "std_err": None}
    again = ValuationResult.from_json_dict(json.loads(text))
    assert again.players == ("a", "b") and again.budget == 100 and again.n_evaluations == 98
    assert again.value("b", "h") == 0.75
    assert np.isnan(again.std_err("b", "h"))
    assert again.info == {"converged": False, "stopped_by": "max_evaluations", "n_samples": 24}
    minimal = ValuationResult.from_json_dict(
        {"method": "exact", "players": ["a"], "objectives": ["h"], "values": [{"player": "a", "objective": "h", "value": 1, "std_err": 0}]}
    )
    assert minimal.value("a", "h") == 1.0 and minimal.budget is None
    with pytest.raises(ValueError, match="missing"):
        ValuationResult.from_json_dict({"method": "exact", "players": ["a"], "objectives": ["h"], "values": []})


# --- stopping rules -----------------------------------------------------------------------------------


def test_stopping_rules_compose() -> None:
    state = SamplingState(n_evaluations=50, n_samples=20, std_errs=np.array([[0.05, 0.2]]))
    assert MaxEvaluations(50).stop_reason(state) == "max_evaluations"
    assert MaxEvaluations(60).remaining(state) == 10
    assert StandardError(0.1).stop_reason(state) is None
    assert StandardError(0.3).stop_reason(state) == "standard_error"
    assert StandardError(0.3, min_samples=30).stop_reason(state) is None
    either = MaxEvaluations(100) | StandardError(0.3)
    assert either.stop_reason(state) == "standard_error"
    assert either.remaining(state) == 50
    both = MaxEvaluations(100) & StandardError(0.3)
    assert both.stop_reason(state) is None
    assert both.remaining(state) is None
    assert (MaxEvaluations(40) & StandardError(0.3)).stop_reason(state) == "max_evaluations&standard_error"
    assert MaxTime(1e-9).check(SamplingState(started=0.0))


def test_standard_error_rule_stops_sampling() -> None:
    game = additive_table(["a", "b", "c"], ["v"], np.array([[1.0], [2.0], [3.0]]))
    noisy = FunctionGame([f"p{i}" for i in range(12)], ["v"], lambda m: (m.sum(1) >= 6).astype(float))
    loose = approximate(noisy, "permutation", seed=3, stopping=StandardError(0.05) | MaxEvaluations(100_000))
    assert loose.info["stopped_by"] == "standard_error" and loose.info["converged"]
    assert loose.std_errs.max() <= 0.05
    assert loose.n_evaluations < 100_000
    capped = approximate(noisy, "permutation", 50, seed=3, stopping=StandardError(1e-9))
    assert capped.info == {**capped.info, "stopped_by": "max_evaluations", "converged": False}
    assert capped.n_evaluations <= 50
    exact_marginals = approximate(game, "permutation", 100, seed=0)  # additive: zero variance
    np.testing.assert_allclose(exact_marginals.values[:, 0], [1, 2, 3])
