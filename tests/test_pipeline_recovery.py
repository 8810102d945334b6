"""Acceptance (slow): on the synthetic corpus with the default `tiny` preset, train + value for the four
paper sources + `noisy` recovers the planted profile on seeds 1 and 2, and efficiency holds exactly.

Planted profile (valuation.synth): `noisy` flips most preferences (lowest helpfulness value);
`evol_instruct` is the least harmless of the four paper sources; `sharegpt` is more helpful than
`flan_v2_niv2`. Several minutes per seed on 2 CPU cores: run with `pytest -m slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market.cli import main
from valuation.games.game import TableGame

PAPER = ["flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat"]
SOURCES = [*PAPER, "noisy"]


def _config(folder: Path, seed: int) -> Path:
    text = f"""
[data]
synth = {{ seed = {seed}, pairs_per_source = 200, eval_pairs_per_objective = 200 }}
sources = {json.dumps(SOURCES)}
[model]
base = "tiny"
cache_dir = "cache"
[training]
learning_rate = 1e-3
epochs = 2
batch_size = 16
[eval]
batch_size = 16
[output]
dir = "run"
"""
    path = folder / "valuation.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_planted_profile_is_recovered(seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, seed)
    assert main(["value", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    result = json.loads((run / "values.json").read_text())
    value = {(v["player"], v["objective"]): v["value"] for v in result["values"]}

    helpfulness = {s: value[(s, "helpfulness")] for s in SOURCES}
    harmlessness = {s: value[(s, "harmlessness")] for s in PAPER}
    assert min(helpfulness, key=helpfulness.__getitem__) == "noisy", helpfulness
    assert min(harmlessness, key=harmlessness.__getitem__) == "evol_instruct", harmlessness
    assert helpfulness["sharegpt"] > helpfulness["flan_v2_niv2"], helpfulness

    dense = TableGame.from_csv(run / "game.csv", players=SOURCES).dense_table()
    for k, objective in enumerate(result["objectives"]):
        total = sum(value[(s, objective)] for s in SOURCES)
        assert total == pytest.approx(dense[-1, k] - dense[0, k], abs=1e-12)
    print(capsys.readouterr().out)  # the summary table, for `pytest -m slow -s`
