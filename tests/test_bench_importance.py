"""Benchmark part (d) end to end on a very small tiny model: structure of the report, not speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_lm import tiny_model_toml

pytest.importorskip("torch")

from benchmarks.parts import importance_sampling as importance

SMALL = """
[data]
synth = {{ seed = 1, pairs_per_source = 12, eval_pairs_per_objective = 20 }}
sources = ["flan_v2_niv2", "sharegpt", "noisy"]
{model}[utility]
kind = "reward"
objectives = ["helpfulness", "harmlessness"]
[reward]
helpfulness = "profanity"
harmlessness = "profanity"
[sampling]
prompts_per_objective = 3
samples_per_prompt = 2
max_new_tokens = 6
[output]
dir = "run"
"""


def test_importance_part_reports_every_way_and_coalition(tmp_path: Path) -> None:
    config_text = SMALL.format(model=tiny_model_toml(tmp_path / "cache"))
    result = importance.run(True, 0, config_text=config_text)
    assert set(result["ways"]) == {"direct", "importance x1", "importance x2"}
    assert result["coalitions"] == ["000", "100", "010", "110", "001", "101", "011", "111"]
    for way, entry in result["ways"].items():
        assert entry["timing"]["median_s"] > 0
        assert len(entry["methods"]) == 8 and len(entry["values"]["helpfulness"]) == 8
        if way == "direct":
            assert set(entry["methods"]) == {"direct"}
        else:
            c = result["comparisons"][way]
            assert c["comparisons"] == 2 * entry["methods"].count("importance")
            assert c["fallbacks"] == entry["methods"].count("direct")
            assert 0 <= c["within_2se"] <= c["comparisons"]
    assert [t["met"] in (True, False) for t in result["targets"]] == [True, True]
    assert result["tables"][0]["rows"][0][0] == "direct" and len(result["tables"][1]["rows"]) == 8
