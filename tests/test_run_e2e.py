"""End to end: `payoutsim run SCENARIO.toml` on a very small `tiny` valuation.

One scenario (three members, one owning two sources, two periods) whose `[valuation] config` trains four
tiny adapters; the outputs must exist and agree with each other (ledger ↔ CSV ↔ values JSON ↔ the
valuation run), and a second run must retrain nothing and add no ledger row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from tiny_lm import tiny_model_toml

from market.cli import main

SOURCES = ["flan_v2_niv2", "sharegpt", "evol_instruct", "noisy"]

VALUATION = """
name = "e2e"
[data]
synth = {{ seed = 1, pairs_per_source = 16, eval_pairs_per_objective = 12 }}
sources = {sources}
{model}[shapley]
seed = {shapley_seed}
[output]
dir = "valuation"
"""

SCENARIO = """
[market]
name = "e2e test"
currency = "EUR"
revenue = "1000.00"
platform_fee = 0.1
rule = "shapley"
negative = "shift"

[objectives]
helpfulness = 0.5
harmlessness = 0.5

[[members]]
name = "alice"
sources = ["sharegpt"]

[[members]]
name = "carol"
sources = ["evol_instruct", "flan_v2_niv2"]

[[members]]
name = "mallory"
sources = ["noisy"]

[valuation]
config = "valuation.toml"

[[periods]]
name = "2025-Q1"

[[periods]]
name = "2025-Q2"
revenue = "2000.01"
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run_cli(args: list[str]) -> Run:
    """`payoutsim ARGS` in-process, capturing stdout and stderr (the rich consoles write to sys.std*)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return Run(code, out.getvalue(), err.getvalue())


def write_valuation(folder: Path, cache: Path, *, shapley_seed: int = 0) -> Path:
    path = folder / "valuation.toml"
    text = VALUATION.format(sources=json.dumps(SOURCES), model=tiny_model_toml(cache), shapley_seed=shapley_seed)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Env:
    folder: Path
    scenario: Path
    out: Path
    first: Run
    second: Run
    manifests_before: dict[str, str]
    manifests_after: dict[str, str]


def manifests(valuation_dir: Path) -> dict[str, str]:
    return {s: (valuation_dir / "adapters" / s / "manifest.json").read_text(encoding="utf-8") for s in SOURCES}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    folder = tmp_path_factory.mktemp("e2e")
    write_valuation(folder, folder / "cache")
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = folder / "out"
    first = run_cli(["run", str(scenario), "--out", str(out), "--no-progress"])
    assert first.code == 0, first.err
    before = manifests(folder / "valuation")
    second = run_cli(["run", str(scenario), "--out", str(out), "--no-progress"])
    assert second.code == 0, second.err
    return Env(folder, scenario, out, first, second, before, manifests(folder / "valuation"))


def ledger_rows(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_outputs_exist_and_the_summary_says_where(env: Env) -> None:
    for name in ("ledger.duckdb", "payouts.csv", "payouts.parquet", "values.json", "value_plane.png"):
        assert (env.out / name).is_file(), name
    for name in ("game.csv", "values.json", "run.json"):
        assert (env.folder / "valuation" / name).is_file(), name
    out = env.first.out
    assert "period 2025-Q1" in out and "period 2025-Q2" in out
    assert "alice" in out and "carol" in out and "mallory" in out
    assert f"payoutsim dashboard --ledger {env.out / 'ledger.duckdb'}" in out
    assert str(env.out / "value_plane.png") in out
    assert "4 adapter(s) trained" in out
    png = (env.out / "value_plane.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_ledger_csv_and_values_json_agree(env: Env) -> None:
    ledger = env.out / "ledger.duckdb"
    runs = ledger_rows(ledger, "SELECT run_id, period, pool_minor, base_model, inputs_json FROM runs ORDER BY seq")
    assert [r[1] for r in runs] == ["2025-Q1", "2025-Q2"]
    assert [r[2] for r in runs] == [90000, 180001]  # revenue − 10% fee, in cents
    payouts = ledger_rows(
        ledger,
        "SELECT p.run_id, p.member, p.value, p.share, p.amount_minor FROM payouts p JOIN runs r USING (run_id) "
        "ORDER BY r.seq, p.position",
    )
    for run_id, _, pool, base_model, inputs_json in runs:
        assert sum(p[4] for p in payouts if p[0] == run_id) == pool
        assert base_model == "tiny"
        provenance = json.loads(inputs_json)["valuation"]
        assert Path(provenance["run_dir"]) == env.folder / "valuation"
        assert sorted(provenance["adapters"]) == sorted(SOURCES)
        assert provenance["config"]["training"]["epochs"] == 1
        assert provenance["base_model"]["sha256"]

    with (env.out / "payouts.csv").open(newline="", encoding="utf-8") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [(r["run_id"], r["member"], int(r["amount_minor"])) for r in csv_rows] == [(p[0], p[1], p[4]) for p in payouts]
    for row, match in zip(csv_rows, payouts, strict=True):
        assert float(row["value"]) == pytest.approx(match[2], rel=1e-12, abs=1e-15)
        assert float(row["share"]) == pytest.approx(match[3], rel=1e-12, abs=1e-15)

    doc = json.loads((env.out / "values.json").read_text(encoding="utf-8"))
    assert [p["run_id"] for p in doc["periods"]] == [r[0] for r in runs]
    for period in doc["periods"]:
        assert sum(x["amount_minor"] for x in period["payouts"]) == period["pool_minor"]
        ledger_amounts = [(p[1], p[4]) for p in payouts if p[0] == period["run_id"]]
        assert [(x["member"], x["amount_minor"]) for x in period["payouts"]] == ledger_amounts
    # member values per objective: the values JSON (eval-sampling view) = the ledger's valuations
    stored = {
        (player, objective): value
        for player, objective, value in ledger_rows(
            ledger, f"SELECT player, objective, value FROM valuations WHERE run_id = '{runs[0][0]}'"
        )
    }
    for v in doc["members"]["values"]:
        assert v["value"] == pytest.approx(stored[(v["player"], v["objective"])], abs=1e-12)
        assert v["std_err"] > 0 and v["lo"] < v["value"] < v["hi"]  # bootstrap over the eval pairs
    weights = doc["weights"]
    for p in doc["periods"][0]["payouts"]:
        weighted = sum(weights[o] * stored[(p["member"], o)] for o in weights)
        assert p["value"] == pytest.approx(weighted, abs=1e-12)
    # every amount carries its uncertainty: ledger, CSV and values.json say the same
    intervals = ledger_rows(
        ledger,
        "SELECT p.run_id, p.member, p.amount_minor, i.amount_se, i.amount_lo_minor, i.amount_hi_minor, i.rank_json "
        "FROM payouts p JOIN payout_intervals i USING (run_id, position) JOIN runs r USING (run_id) "
        "ORDER BY r.seq, p.position",
    )
    assert len(intervals) == len(payouts)
    for (_, member, amount, se, lo, hi, rank), row in zip(intervals, csv_rows, strict=True):
        assert row["member"] == member and int(row["amount_minor"]) == amount and lo <= hi and se >= 0
        assert row["amount_lo"] == f"{lo // 100}.{lo % 100:02d}" and row["amount_hi"] == f"{hi // 100}.{hi % 100:02d}"
        assert float(row["amount_se"]) == pytest.approx(se / 100, rel=1e-12)
        assert set(json.loads(rank)) == {"alice", "carol", "mallory"} - {member}
    first = doc["periods"][0]
    assert first["uncertainty"]["replicates"] == 200 and "eval pairs" in first["uncertainty"]["resampled"]
    for x in first["payouts"]:
        assert {"amount_se", "amount_lo", "amount_hi", "paid_more_than", "value_lo", "value_hi"} <= set(x)
    assert "uncertainty: 200 replicate payouts" in env.first.out
    # source values = the valuation run's values.json (exact Shapley on the same coalition table)
    source_values = json.loads((env.folder / "valuation" / "values.json").read_text(encoding="utf-8"))
    expected = {(v["player"], v["objective"]): v["value"] for v in source_values["values"]}
    for v in doc["sources"]["values"]:
        assert v["value"] == pytest.approx(expected[(v["player"], v["objective"])], abs=1e-12)


def test_second_run_retrains_nothing_and_adds_no_ledger_row(env: Env) -> None:
    assert env.manifests_after == env.manifests_before  # adapters untouched (manifests carry created_at)
    assert "0 adapter(s) trained, 4 up to date" in env.second.out
    assert "nothing to do" in env.second.out
    assert env.second.out.count("already recorded (nothing added)") == 2
    assert len(ledger_rows(env.out / "ledger.duckdb", "SELECT run_id FROM runs")) == 2


def test_a_changed_valuation_config_is_a_new_run_without_retraining(env: Env, tmp_path: Path) -> None:
    write_valuation(env.folder, env.folder / "cache", shapley_seed=7)  # the config changed, adapters did not
    try:
        result = run_cli(["run", str(env.scenario), "--out", str(tmp_path), "--ledger", str(tmp_path / "l.duckdb"),
                          "--period", "2025-Q2", "--no-progress"])
    finally:
        write_valuation(env.folder, env.folder / "cache")
    assert result.code == 0, result.err
    assert "0 adapter(s) trained" in result.out
    new_ids = ledger_rows(tmp_path / "l.duckdb", "SELECT run_id FROM runs")
    old_ids = ledger_rows(env.out / "ledger.duckdb", "SELECT run_id FROM runs WHERE period = '2025-Q2'")
    assert len(new_ids) == 1 and new_ids != old_ids


def test_inline_valuation_pipeline_table(env: Env, tmp_path: Path) -> None:
    import tomllib

    valuation = tomllib.loads((env.folder / "valuation.toml").read_text(encoding="utf-8"))
    valuation["output"]["dir"] = str(env.folder / "valuation")  # the same run dir: adapters are reused
    inline = SCENARIO.replace('config = "valuation.toml"\n', "") + "\n" + _toml_table("valuation.pipeline", valuation)
    scenario = tmp_path / "inline.toml"
    scenario.write_text(inline, encoding="utf-8")
    result = run_cli(["run", str(scenario), "--out", str(tmp_path / "out"), "--period", "2025-Q1", "--no-progress"])
    assert result.code == 0, result.err
    assert "0 adapter(s) trained, 4 up to date" in result.out
    mine = json.loads((tmp_path / "out" / "values.json").read_text(encoding="utf-8"))
    theirs = json.loads((env.out / "values.json").read_text(encoding="utf-8"))
    # exact: the same run dir (cached log-probs), the same code path; only the scenario's spelling differs
    assert mine["members"]["values"] == theirs["members"]["values"]


def _toml_table(prefix: str, data: dict) -> str:
    """A nested dict as TOML tables (enough for the valuation config: strings, numbers, lists, tables)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] + [f"{k} = {json.dumps(v)}" for k, v in scalars.items()]
    for key, value in tables.items():
        lines.append(_toml_table(f"{prefix}.{key}", value))
    return "\n".join(lines) + "\n"


BAD = [
    ('config = "valuation.toml"', 'config = "missing.toml"', "valuation.config", "not available"),
    ('sources = ["noisy"]', 'sources = ["nope"]', "members[3].sources", "unknown source 'nope'"),
    ("helpfulness = 0.5\nharmlessness = 0.5", "helpfulness = 0.5\nhonesty = 0.5", "objectives.honesty",
     "unknown objective"),
    ('config = "valuation.toml"', 'config = "valuation.toml"\ndata = "x.jsonl"', "valuation.data", "valuation config"),
]


@pytest.mark.parametrize(("old", "new", "field", "message"), BAD)
def test_bad_scenarios_exit_2_naming_the_field_before_training(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    write_valuation(tmp_path, tmp_path / "cache")
    scenario = tmp_path / "scenario.toml"
    assert old in SCENARIO
    scenario.write_text(SCENARIO.replace(old, new), encoding="utf-8")
    result = run_cli(["run", str(scenario), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.code == 2
    assert result.err.startswith(f"error: {scenario}: field '{field}'"), result.err
    assert message in result.err
    assert not (tmp_path / "valuation").exists()  # failed before anything was trained
    assert not (tmp_path / "out" / "ledger.duckdb").exists()


def test_bad_valuation_config_names_its_file_and_field(tmp_path: Path) -> None:
    config = write_valuation(tmp_path, tmp_path / "cache")
    config.write_text(config.read_text(encoding="utf-8").replace("epochs = 1", "epochs = 0"), encoding="utf-8")
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    result = run_cli(["run", str(scenario), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.code == 2
    assert result.err.startswith(f"error: {config}: field 'training.epochs'"), result.err


def test_unknown_period_exits_2(env: Env, tmp_path: Path) -> None:
    result = run_cli(["run", str(env.scenario), "--out", str(tmp_path), "--period", "2031-Q9", "--no-progress"])
    assert result.code == 2
    assert "unknown period" in result.err


def test_evaluate_until_known_grows_the_eval_pairs_and_keeps_the_best_result(env: Env, tmp_path: Path) -> None:
    """A target the 12 eval pairs per objective cannot meet: rounds 4 → … → 12 pairs, a clear message, the last
    round paid and recorded with the rounds in its provenance; a reachable target is reported reached."""
    folder = tmp_path / "adaptive"
    shutil.copytree(env.folder, folder, ignore=shutil.ignore_patterns("out*"))
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO + "\n[uncertainty]\nstart_pairs = 4\n", encoding="utf-8")
    result = run_cli(["run", str(scenario), "--out", str(folder / "out"), "--no-progress", "--target", "0.01"])
    assert result.code == 0, result.err
    assert "evaluate until known: NOT reached (the eval sets have no more pairs (12 per objective))" in result.out
    assert "target 0.01 EUR" in result.out
    provenance = json.loads(
        ledger_rows(folder / "out" / "ledger.duckdb", "SELECT inputs_json FROM runs ORDER BY seq")[0][0]
    )["valuation"]
    rounds = provenance["adaptive"]["rounds"]
    assert rounds[0]["eval_pairs"] == 4 and rounds[-1]["eval_pairs"] == 12 and not provenance["adaptive"]["reached"]
    assert all(r["predicted_pairs"] > r["eval_pairs"] for r in rounds)
    easy = run_cli(["run", str(scenario), "--out", str(folder / "out2"), "--no-progress", "--target-share", "0.99"])
    assert easy.code == 0, easy.err
    assert "evaluate until known: reached" in easy.out


@pytest.mark.parametrize(
    ("extra", "args", "field"),
    [
        ("", ["--target", "0"], "--target"),
        ("", ["--target-share", "1.5"], "--target-share"),
        ("", ["--replicates", "-1"], "--replicates"),
        ("[uncertainty]\nreplicates = -2\n", [], "uncertainty.replicates"),
        ("[uncertainty]\ntarget = \"-5\"\n", [], "uncertainty.target"),
        ("[uncertainty]\nlevel = 1.2\n", [], "uncertainty.level"),
    ],
)
def test_bad_uncertainty_settings_exit_2_naming_the_field(
    tmp_path: Path, extra: str, args: list[str], field: str
) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO + "\n" + extra, encoding="utf-8")
    result = run_cli(["run", str(scenario), "--out", str(tmp_path / "out"), "--no-progress", *args])
    assert result.code == 2, result.err
    assert field in result.err and "Traceback" not in result.err
