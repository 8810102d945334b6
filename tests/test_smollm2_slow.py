"""Opt-in (slow): the valuation pipeline on the real base model, SmolLM2-135M-Instruct.

Trains two small DPO adapters on the synthetic corpus and values them with the `preference` utility on
the REAL held-out sets in ../shared/data (helpfulness: dpo-en-demo, harmlessness: HH-RLHF harmless-base),
as `data/configs/smollm2-real-eval.toml` does at full size. A few minutes on 2 CPU cores; run with
`make test-slow`. Skips when ../shared/data is absent (a user's fresh clone).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market.cli import main

SOURCES = ["sharegpt", "ultrachat"]


@pytest.mark.slow
def test_smollm2_preference_values_on_the_real_sets(shared_data: Path, tmp_path: Path) -> None:
    from valuation.games.game import TableGame

    config = tmp_path / "valuation.toml"
    config.write_text(
        f"""
[data]
synth = {{ seed = 1, pairs_per_source = 16, eval_pairs_per_objective = 16 }}
sources = {json.dumps(SOURCES)}
[model]
base = "smollm2"
[training]
learning_rate = 5e-4
epochs = 1
batch_size = 8
max_length = 160
[utility]
objectives = ["helpfulness", "harmlessness"]
[eval]
helpfulness = "{shared_data / 'dpo-en-demo.json'}"
harmlessness = "{shared_data / 'hh-rlhf-harmless-base-test.jsonl.gz'}"
max_pairs = 12
batch_size = 4
[output]
dir = "run"
""",
        encoding="utf-8",
    )
    assert main(["value", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    manifest = json.loads((run / "adapters" / "sharegpt" / "manifest.json").read_text())
    assert manifest["base_model"]["preset"] == "smollm2"
    result = json.loads((run / "values.json").read_text())
    assert result["players"] == SOURCES and result["objectives"] == ["helpfulness", "harmlessness"]
    game = TableGame.from_csv(run / "game.csv", players=SOURCES)
    dense = game.dense_table()
    assert dense[0].tolist() == [0.5, 0.5]  # the base model is the reference point
    assert (dense[1:] != 0.5).any()  # the adapters moved the implicit reward on real pairs
    for k, objective in enumerate(result["objectives"]):
        total = sum(v["value"] for v in result["values"] if v["objective"] == objective)
        assert total == pytest.approx(dense[-1, k] - dense[0, k], abs=1e-12)
