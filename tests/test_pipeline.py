"""`payoutsim train` / `payoutsim value` end to end on a very small `tiny` model, and bad configs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from tiny_lm import TINY_PRESET_TOML as TINY_TOML

from market.cli import main
from valuation.composition.arithmetic import WEIGHTINGS
from valuation.errors import InputError
from valuation.games.coalitions import coalition_index
from valuation.games.estimators import METHODS, exact_shapley
from valuation.games.game import TableGame
from valuation.games.replicates import ItemTerms
from valuation.pipeline.config import ArithmeticSection, ShapleySection, load_valuation_config
from valuation.pipeline.run import value_coalitions
from valuation.pipeline.tables import CoalitionTable
from valuation.synth import SynthConfig, write_corpus

SOURCES = ["flan_v2_niv2", "sharegpt", "noisy"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic corpus and a model cache shared by the tests of this module."""
    root = tmp_path_factory.mktemp("pipeline")
    write_corpus(root / "corpus", SynthConfig(seed=1, pairs_per_source=16, eval_pairs_per_objective=12))
    return root


def write_config(folder: Path, shared: Path, *, out: str = "run", extra: str = "", data: str = "",
                 sources: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = data or f'corpus = "{shared / "corpus"}"'
    text = f"""
name = "test"
[data]
{data}
sources = {json.dumps(sources or SOURCES)}
[model]
base = "tiny"
cache_dir = "{shared / "cache"}"
{TINY_TOML}
[training]
epochs = 1
batch_size = 8
max_length = 96
[output]
dir = "{out}"
{extra}
"""
    path = folder / "valuation.toml"
    path.write_text(text, encoding="utf-8")
    return path


MEMBERS = """
[[members]]
name = "alice"
sources = ["flan_v2_niv2", "sharegpt"]
[[members]]
name = "mallory"
sources = ["noisy"]
"""


@pytest.fixture(scope="module")
def valued(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("valued")
    config = write_config(folder, shared, extra=MEMBERS)
    out = io.StringIO()  # capsys is function-scoped: capture this module-scoped run by redirection
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["value", str(config), "--no-progress"])
    assert code == 0, out.getvalue()
    return config, folder / "run", out.getvalue()


def test_value_writes_the_run_directory(valued: tuple[Path, Path, str]) -> None:
    _, run, _ = valued
    for name in ("game.csv", "game.parquet", "values.json", "values_members.json", "run.json", "config.toml"):
        assert (run / name).is_file(), name
    for source in SOURCES:
        assert (run / "adapters" / source / "manifest.json").is_file()
    assert not [p for p in run.rglob(".*") if p.name.startswith((".tmp", ".trainer"))]


def test_game_table_is_complete_and_the_base_is_the_reference_point(valued: tuple[Path, Path, str]) -> None:
    _, run, _ = valued
    game = TableGame.from_csv(run / "game.csv", players=SOURCES)
    assert game.objectives == ("helpfulness", "harmlessness")
    assert game.is_complete()
    dense = game.dense_table()
    assert np.array_equal(dense[0], [0.5, 0.5])  # S = ∅: margin 0 on every pair
    assert np.all((dense > 0) & (dense < 1))


def test_values_are_exact_shapley_and_efficient(valued: tuple[Path, Path, str]) -> None:
    _, run, _ = valued
    values = json.loads((run / "values.json").read_text())
    assert values["method"] == "exact"
    assert values["players"] == SOURCES
    assert values["objectives"] == ["helpfulness", "harmlessness"]
    assert {(v["player"], v["objective"]) for v in values["values"]} == {
        (s, o) for s in SOURCES for o in ("helpfulness", "harmlessness")
    }
    dense = TableGame.from_csv(run / "game.csv", players=SOURCES).dense_table()
    for k, objective in enumerate(values["objectives"]):
        total = sum(v["value"] for v in values["values"] if v["objective"] == objective)
        assert total == pytest.approx(dense[-1, k] - dense[0, k], abs=1e-12)


def test_values_carry_bootstrap_std_errs_and_intervals_that_match_the_per_pair_formula(
    valued: tuple[Path, Path, str],
) -> None:
    """The bootstrap over eval pairs (values.json) against the analytic eval-sampling standard error: exact
    Shapley is linear in the table, so φ_i = mean over pairs of the one-pair game's value φ_i(j) and its
    standard error is sd_j(φ_i(j)) / √p. 200 replicates estimate it to about 5% (and the bootstrap's
    plug-in variance is (p−1)/p of the unbiased one: 4% smaller at p = 12): agree within 25%."""
    _, run_dir, _ = valued
    items = ItemTerms.load(run_dir / "items.npz")
    assert items.players == tuple(SOURCES) and items.n_items == (12, 12)
    values = json.loads((run_dir / "values.json").read_text())
    assert values["info"]["interval"]["replicates"] == 200
    assert "bootstrap over eval pairs" in values["info"]["interval"]["resampled"]
    order = np.argsort(coalition_index(items.coalitions))
    for k, objective in enumerate(items.objectives):
        per_pair = exact_shapley(items.numerators[k][order])  # [n, p]: one-pair games are the columns
        analytic = per_pair.std(axis=1, ddof=1) / np.sqrt(per_pair.shape[1])
        for i, source in enumerate(SOURCES):
            entry = next(v for v in values["values"] if v["player"] == source and v["objective"] == objective)
            assert entry["value"] == pytest.approx(per_pair[i].mean(), abs=1e-9)
            assert entry["std_err"] == pytest.approx(analytic[i], rel=0.25)
            assert entry["lo"] < entry["value"] < entry["hi"]
    members = json.loads((run_dir / "values_members.json").read_text())
    assert all(v["std_err"] > 0 and v["lo"] < v["value"] < v["hi"] for v in members["values"])


def test_parquet_has_std_errs_and_pair_counts(valued: tuple[Path, Path, str]) -> None:
    import polars as pl

    _, run, _ = valued
    frame = pl.read_parquet(run / "game.parquet")
    assert frame.height == 2 ** len(SOURCES)
    for objective in ("helpfulness", "harmlessness"):
        assert frame[f"{objective}_n_pairs"].to_list() == [12] * frame.height
        std = frame[f"{objective}_std_err"]
        empty = frame.filter(pl.col("coalition") == "")
        assert empty[f"{objective}_std_err"].item() == 0.0
        assert (std.filter(frame["size"] > 0) > 0).all()


def test_member_values_sum_to_the_owned_sources_game(valued: tuple[Path, Path, str]) -> None:
    _, run, _ = valued
    members = json.loads((run / "values_members.json").read_text())
    assert members["players"] == ["alice", "mallory"]
    run_info = json.loads((run / "run.json").read_text())
    assert set(run_info["sources"]) == set(SOURCES)
    assert run_info["logprob_tables"]["computed"] == 2 * (len(SOURCES) + 1)


def test_summary_table_is_printed(valued: tuple[Path, Path, str]) -> None:
    _, _, stdout = valued
    assert "helpfulness" in stdout and "noisy" in stdout and "alice" in stdout
    assert "run directory" in stdout


def test_second_value_run_skips_training_and_reuses_the_cache(
    valued: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, run, _ = valued
    before = (run / "values.json").read_text()
    assert main(["value", str(config), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped: up to date") == len(SOURCES)
    assert json.loads((run / "run.json").read_text())["logprob_tables"]["computed"] == 0
    assert (run / "values.json").read_text() == before  # exact: cached log-probs, the same code path
    assert main(["train", str(config), "--no-progress"]) == 0
    assert "0 trained, 3 up to date" in capsys.readouterr().out


def test_value_until_known_grows_the_eval_pairs(
    valued: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target-width: rounds of growing eval size (4 → … pairs), adapters reused; an unreachable width stops
    at the budget with the last round's values written; bad budgets exit 2 naming the flag."""
    config, run_dir, _ = valued
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    text = config.read_text() + "\n[uncertainty]\nstart_pairs = 4\n"
    path = tmp_path / "valuation.toml"
    path.write_text(text, encoding="utf-8")
    args = ["value", str(path), "--out", str(copy), "--no-progress"]
    assert main([*args, "--target-width", "1e-9", "--max-eval-pairs", "8"]) == 0
    out = capsys.readouterr().out
    assert "round 1: 4 eval pairs per objective" in out and "round 2: 8 eval pairs per objective" in out
    assert "evaluate until known: NOT reached (max_pairs (8) spent)" in out
    values = json.loads((copy / "values.json").read_text())
    assert "(8 helpfulness, 8 harmlessness" in values["info"]["interval"]["resampled"]
    assert main([*args, "--target-width", "100"]) == 0
    assert "evaluate until known: reached" in capsys.readouterr().out
    assert main([*args, "--target-width", "0"]) == 2
    assert "--target-width" in capsys.readouterr().err
    assert main([*args, "--target-width", "0.1", "--max-eval-pairs", "2"]) == 2  # below start_pairs
    assert "start_pairs" in capsys.readouterr().err


def test_changed_data_under_a_finished_adapter_exits_2(
    valued: tuple[Path, Path, str], shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run, _ = valued
    base_dir = json.loads((run / "run.json").read_text())["base_model"]["path"]  # same base model, as a dir
    corpus = tmp_path / "corpus"
    shutil.copytree(shared / "corpus", corpus)
    lines = (corpus / "train" / "sharegpt.jsonl").read_text().splitlines()
    (corpus / "train" / "sharegpt.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    config = write_config(tmp_path, shared, out=str(run), data=f'corpus = "{corpus}"')
    config.write_text(config.read_text().replace('base = "tiny"', f'base = "{base_dir}"').replace(TINY_TOML, ""))
    before = sorted(p.name for p in (run / "adapters").iterdir())
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "field 'data'" in err
    assert "'sharegpt'" in err and "training data changed" in err and "--retrain" in err
    assert sorted(p.name for p in (run / "adapters").iterdir()) == before


@pytest.mark.parametrize(
    ("extra", "sources", "field", "message"),
    [
        ("", ["flan_v2_niv2", "nosuch"], "data.sources", "unknown source 'nosuch'"),
        ('[utility]\nobjectives = ["helpfulness", "honesty"]', None, "eval.honesty", "no eval set for objective"),
        ("[training]\nlr = 1", None, "training.lr", "unknown key"),
        ('[shapley]\nmethod = "magic"', None, "shapley.method", "Input should be"),
        ('[[members]]\nname = "eve"\nsources = ["nosuch"]', None, "members[1].sources", "unknown source"),
    ],
)
def test_bad_configs_exit_2_naming_the_field_and_write_nothing(
    shared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: str,
    sources: list[str] | None,
    field: str,
    message: str,
) -> None:
    if extra.startswith("[training]"):
        config = write_config(tmp_path, shared, sources=sources)
        config.write_text(config.read_text().replace("[training]\n", "[training]\nlr = 1\n"))
    else:
        config = write_config(tmp_path, shared, extra=extra, sources=sources)
    assert main(["value", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"field '{field}'" in err and message in err, err
    assert not (tmp_path / "run").exists()


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[data]\ncorpus = "x"\n[output\ndir = "run"\n')
    with pytest.raises(InputError) as err:
        load_valuation_config(path)
    assert err.value.row == "line 3"


def test_config_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "sub" / "v.toml"
    path.parent.mkdir()
    path.write_text('[data]\ncorpus = "c"\n[eval]\nhelpfulness = "h.jsonl"\n[output]\ndir = "r"\n')
    cfg = load_valuation_config(path)
    assert cfg.data.corpus == path.parent / "c"
    assert cfg.output.dir == path.parent / "r"
    assert cfg.eval.sets() == {"helpfulness": path.parent / "h.jsonl"}
    assert cfg.utility_beta == cfg.training.beta == 0.1
    with pytest.raises(InputError, match="exactly one of corpus, path or synth"):
        path.write_text('[data]\ncorpus = "c"\npath = "p"\n[output]\ndir = "r"\n')
        load_valuation_config(path)


def test_example_configs_parse() -> None:
    folder = Path(__file__).resolve().parents[1] / "data" / "configs"
    configs = sorted(folder.glob("*.toml"))
    assert configs
    for path in configs:
        cfg = load_valuation_config(path)
        assert cfg.output.dir.is_absolute()


def test_config_choices_are_the_engines_names() -> None:
    """The config's ``shapley.method`` and ``arithmetic.weighting`` choices are the engine's lists."""
    assert get_args(ShapleySection.model_fields["method"].annotation) == METHODS
    assert get_args(ArithmeticSection.model_fields["weighting"].annotation) == WEIGHTINGS


def test_sampled_path_tabulates_only_the_coalitions_the_estimator_asks_for() -> None:
    weights = np.arange(16, dtype=float).reshape(8, 2) / 10 - 0.3  # an additive game over 8 players
    players = [f"s{i}" for i in range(8)]

    def tabulate(masks: np.ndarray) -> CoalitionTable:
        values = masks.astype(float) @ weights
        zeros = np.zeros_like(values)
        return CoalitionTable(tuple(players), ("a", "b"), masks, values, zeros, zeros.astype(np.int64) + 3)

    table, game, result, members = value_coalitions(
        tabulate, players, ("a", "b"), {"m1": ["s0", "s1"], "m2": ["s4"]},
        method="permutation", budget=80, seed=0, full_table_max=3,
    )
    assert 0 < len(table.coalitions) <= 80 and not game.is_complete()
    assert np.allclose(result.values, weights)  # Shapley of an additive game = each player's own weight
    assert members is not None and np.allclose(members.values, [weights[0] + weights[1], weights[4]])
    _, full_game, exact, _ = value_coalitions(
        tabulate, players, ("a", "b"), None, method="exact", budget=None, seed=0
    )
    assert full_game.is_complete() and np.allclose(exact.values, weights)
