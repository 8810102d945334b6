"""A large market end to end, fast: the 24-source scenario (data/scenarios/market24.toml) scaled down.

The bundled scenario and its valuation config are read and only made smaller (tiny preset, few pairs, one
epoch, a looser standard-error target) — the members, the owners of several sources, the rule and the
valuation method are the bundled ones. Checked: the run values on the compact game (no 2²⁴-row table,
``game.npz`` kept), the compact game reproduces the arithmetic's utilities, the sampled values stop on
their standard-error target and are efficient, and the payout carries its uncertainty.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tomllib
from pathlib import Path

import duckdb
import numpy as np
import pytest
from tiny_lm import tiny_model_toml

from market.cli import main
from valuation.coalition_utility.compact import PairGame
from valuation.pipeline.config import load_valuation_config
from valuation.pipeline.run import FULL_TABLE_MAX_PLAYERS, run_train
from valuation.pipeline.tables import coalition_table, eval_logprobs
from valuation.runtime.backend import LOCAL

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "data" / "scenarios" / "market24.toml"
CONFIG = ROOT / "data" / "configs" / "market24.toml"


def scaled_down(folder: Path) -> Path:
    """The bundled market24 scenario with a smaller copy of its valuation config beside it."""
    config = CONFIG.read_text(encoding="utf-8")
    config = re.sub(r"pairs_per_source = \d+, eval_pairs_per_objective = \d+",
                    "pairs_per_source = 12, eval_pairs_per_objective = 16", config)
    config = re.sub(r"\[model\]\n.*?\n\[arithmetic\]", tiny_model_toml(folder / "cache") + "\n[arithmetic]",
                    config, flags=re.S)
    config = config.replace('method = "regression"', 'method = "regression"\ntarget_se = 0.05\nmax_seconds = 20')
    config = re.sub(r'dir = ".*"', 'dir = "valuation"', config)
    (folder / "valuation.toml").write_text(config, encoding="utf-8")
    scenario = SCENARIO.read_text(encoding="utf-8").replace("../configs/market24.toml", "valuation.toml")
    scenario += "\n[uncertainty]\nreplicates = 40\n"
    path = folder / "market24.toml"
    path.write_text(scenario, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    folder = tmp_path_factory.mktemp("market24")
    scenario = scaled_down(folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(scenario), "--out", str(folder / "out"), "--no-progress"])
    return folder, code, out.getvalue(), err.getvalue()


def test_the_bundled_scenarios_describe_24_and_64_sources() -> None:
    for name, sources, members in (("market24", 24, 8), ("market64", 64, 64)):
        scenario = tomllib.loads((ROOT / "data" / "scenarios" / f"{name}.toml").read_text(encoding="utf-8"))
        owned = [s for m in scenario["members"] for s in m["sources"]]
        assert len(scenario["members"]) == members
        assert sorted(owned) == [f"src{i:02d}" for i in range(sources)]
        config = tomllib.loads((ROOT / "data" / "configs" / f"{name}.toml").read_text(encoding="utf-8"))
        assert config["data"]["synth"]["n_sources"] == sources
        assert config["shapley"]["method"] != "exact"


def test_run_exits_0_and_keeps_the_compact_game_not_a_table(market: tuple[Path, int, str, str]) -> None:
    folder, code, _out, err = market
    assert code == 0, err
    run_dir = folder / "valuation"
    assert (run_dir / "game.npz").is_file()
    assert not (run_dir / "game.csv").exists()
    game = PairGame.load(run_dir / "game.npz")
    assert len(game.players) == 24 > FULL_TABLE_MAX_PLAYERS
    provenance = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert provenance["compact_game"]["players"] == 24
    assert provenance["compact_game"]["pairs"] == {"helpfulness": 16, "harmlessness": 16}


def test_the_compact_game_is_the_arithmetic_on_the_cached_log_probs(market: tuple[Path, int, str, str]) -> None:
    """The compact game gives every coalition the utility the coalition-table path computes from the cached
    log-probs (nothing is retrained or rescored here: the adapters are up to date, the cache complete)."""
    folder = market[0]
    config = load_valuation_config(folder / "valuation.toml")
    prepared, adapters = run_train(config, progress=False, backend=LOCAL)
    report = eval_logprobs(prepared, adapters, progress=False)
    game = PairGame.load(folder / "valuation" / "game.npz")
    masks = np.random.default_rng(0).random((50, 24)) < 0.5
    sizes = [len(prepared.train[s]) for s in prepared.sources]
    table = coalition_table(report.tables, prepared.sources, masks, weighting="sum", sizes=sizes, metric="bt",
                            beta=config.utility_beta)
    assert table.objectives == game.objectives
    np.testing.assert_allclose(game(masks), table.values, rtol=1e-12, atol=1e-12)


def test_sampled_values_meet_their_target_are_efficient_and_carry_intervals(
    market: tuple[Path, int, str, str],
) -> None:
    run_dir = market[0] / "valuation"
    values = json.loads((run_dir / "values.json").read_text(encoding="utf-8"))
    game = PairGame.load(run_dir / "game.npz")
    ends = game(np.stack([np.zeros(24, dtype=bool), np.ones(24, dtype=bool)]))
    grand = ends[1] - ends[0]
    objectives = values["objectives"]
    phi = np.zeros((24, 2))
    for row in values["values"]:
        i, k = values["players"].index(row["player"]), objectives.index(row["objective"])
        phi[i, k] = row["value"]
        assert row["lo"] <= row["value"] <= row["hi"] and row["hi"] > row["lo"] and row["std_err"] > 0
    np.testing.assert_allclose(phi.sum(axis=0), grand, atol=1e-9)  # the regression estimator is efficient
    info = values["info"]
    assert info["stopped_by"] in ("standard_error", "max_time", "max_evaluations")
    if info["stopped_by"] == "standard_error":  # the estimator's own error met 5% of |u(N) − u(∅)|
        estimator_se = np.array(info["interval"]["estimator_std_err_max"])
        assert np.all(estimator_se <= 0.05 * np.abs(grand) + 1e-12)
    members = json.loads((market[0] / "out" / "values.json").read_text(encoding="utf-8"))["members"]
    assert members["players"] == ["ada", "ben", "cleo", "dev", "eve", "finn", "gus", "hana"]
    assert members["method"] == "exact"  # 8 members: the member game over the compact game is enumerated
    assert all(row["hi"] > row["lo"] for row in members["values"])  # with eval-pair intervals


def test_payout_pays_the_pool_with_amount_intervals(market: tuple[Path, int, str, str]) -> None:
    folder = market[0]
    ledger = folder / "out" / "ledger.duckdb"
    with duckdb.connect(str(ledger), read_only=True) as con:
        rows = con.execute("SELECT member, amount_minor FROM payouts ORDER BY member").fetchall()
        intervals = con.execute("SELECT count(*) FROM payout_intervals").fetchone()
    assert len(rows) == 8
    assert sum(a for _, a in rows) == 21_600_000  # 240,000.00 EUR − 10% fee, in cents
    assert intervals is not None and intervals[0] == 8


def test_exact_shapley_at_64_sources_exits_2_naming_the_cost_and_the_sampled_methods(tmp_path: Path) -> None:
    """Refused before anything is generated, trained or written."""
    config = CONFIG.read_text(encoding="utf-8").replace("n_sources = 24", "n_sources = 64")
    config = config.replace('method = "regression"', 'method = "exact"')
    config = re.sub(r'dir = ".*"', 'dir = "valuation"', config)
    path = tmp_path / "valuation.toml"
    path.write_text(config, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["value", str(path), "--no-progress"])
    message = " ".join(err.getvalue().split())
    assert code == 2
    assert "shapley.method" in message and "2^64" in message
    assert all(m in message for m in ('"regression"', '"permutation"', '"banzhaf"'))
    assert not (tmp_path / "valuation" / "adapters").exists()


@pytest.mark.slow
def test_market64_scenario_end_to_end(tmp_path: Path) -> None:
    """``payoutsim run data/scenarios/market64.toml`` (64 members, 64 adapters on the tiny preset; about 15
    minutes from an empty cache on 2 cores, reused afterwards): the pool paid in full with amount
    intervals, the compact game in the ledger, stability searched and stated as such, the planted harmful
    sources among the lowest-valued quartile of harmlessness."""
    out = tmp_path / "out"
    stdout, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
        code = main(["run", str(ROOT / "data" / "scenarios" / "market64.toml"), "--out", str(out), "--no-progress"])
    assert code == 0, err.getvalue()
    with duckdb.connect(str(out / "ledger.duckdb"), read_only=True) as con:
        paid = con.execute("SELECT count(*), sum(amount_minor) FROM payouts").fetchone()
        stored = con.execute("SELECT count(*) FROM compact_games").fetchone()
        intervals = con.execute("SELECT count(*) FROM payout_intervals").fetchone()
    assert paid == (64, 90_000_000)
    assert stored == (1,) and intervals == (64,)
    text = " ".join(stdout.getvalue().split())
    assert "examined" in text  # blocking coalitions searched, not enumerated: "… among K examined"
    values = json.loads((out / "values.json").read_text(encoding="utf-8"))["sources"]
    run_dir = ROOT / "runs" / "market64" / "valuation"
    manifest = json.loads((run_dir / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    k = values["objectives"].index("harmlessness")
    phi = {row["player"]: row["value"] for row in values["values"] if row["objective"] == "harmlessness"}
    cut = float(np.quantile(list(phi.values()), 0.25))
    harmful = [s for s, entry in manifest["sources"].items() if entry.get("class") == "harmful"]
    assert harmful and all(phi[s] <= cut for s in harmful), (k, cut, {s: phi[s] for s in harmful})
