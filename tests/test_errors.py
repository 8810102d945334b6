"""Field paths in error messages count list positions from 1, in every layer (`valuation.errors.field_path`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from tiny_lm import TINY_PRESET_TOML

from market.scenario.schema import parse_scenario
from valuation.errors import InputError, field_path
from valuation.pipeline.config import parse_valuation_config


def test_field_path_counts_list_positions_from_one() -> None:
    assert field_path(("members", 0, "sources")) == "members[1].sources"
    assert field_path(("periods", 2, "revenue")) == "periods[3].revenue"
    assert field_path(("conversations", 0)) == "conversations[1]"
    assert field_path(("market", "currency")) == "market.currency"
    assert field_path(()) == ""


def test_valuation_config_reports_the_second_member_as_members_2(tmp_path: Path) -> None:
    raw = tomllib.loads(TINY_PRESET_TOML)
    raw["data"] = {"path": "pairs.jsonl"}
    raw["output"] = {"dir": "run"}
    raw["members"] = [{"name": "alice", "sources": ["a"]}, {"name": "bob", "sources": ["b"], "colour": "red"}]
    with pytest.raises(InputError) as info:
        parse_valuation_config(raw, base_dir=tmp_path, file=tmp_path / "valuation.toml")
    assert info.value.field == "members[2].colour"
    assert info.value.message == "unknown key"


def test_scenario_reports_the_second_member_as_members_2() -> None:
    data = {
        "market": {"name": "m", "currency": "EUR", "revenue": "100.00", "rule": "shapley"},
        "objectives": {"helpfulness": 1.0},
        "members": [{"name": "alice", "sources": ["a"]}, {"name": "bob", "sources": ["b"], "colour": "red"}],
        "valuation": {"utilities": "game.csv"},
    }
    with pytest.raises(InputError) as info:
        parse_scenario(data, file="scenario.toml")
    assert info.value.field == "members[2].colour"
