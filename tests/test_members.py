"""`valuation.members`: one member schema for the valuation config and the scenario, ownership checks,
member values on the grouped game."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from market.scenario.schema import Member as ScenarioMember
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.game import TableGame
from valuation.members import Member, check_sources_known, member_groups, member_values
from valuation.pipeline.config import ValuationConfig


def test_member_schema_strips_and_rejects_empty_or_repeated_sources() -> None:
    assert Member(name=" alice ", sources=(" a ", "b")) == Member(name="alice", sources=("a", "b"))
    for bad in ({"name": " ", "sources": ("a",)}, {"name": "x", "sources": ()}, {"name": "x", "sources": ("a", "a")},
                {"name": "x", "sources": ("a",), "colour": "red"}):
        with pytest.raises(ValidationError):
            Member(**bad)


def test_the_config_and_the_scenario_share_the_member_schema() -> None:
    assert ValuationConfig.model_fields["members"].annotation == list[Member]
    assert issubclass(ScenarioMember, Member)
    assert ScenarioMember(name="bob", sources=("b",), joins="2025-Q2").joins == "2025-Q2"


def test_check_sources_known_names_the_member_and_its_1_based_position() -> None:
    members = [Member(name="alice", sources=("a",)), Member(name="bob", sources=("b", "zz"))]
    check_sources_known(members, ["a", "b", "zz"], file=None, listed_as="sources")
    with pytest.raises(InputError) as info:
        check_sources_known(members, ["a", "b"], file="s.toml", listed_as="sources in game.csv")
    assert info.value.field == "members[2].sources"
    assert str(info.value) == (
        "s.toml: field 'members[2].sources': member 'bob' owns unknown source 'zz' (sources in game.csv: a, b)"
    )


def test_member_values_are_the_values_of_the_grouped_game() -> None:
    # three sources, additive utilities 1, 2, 4: member {a, c} is worth 5, member {b} 2
    masks = all_coalitions(3)
    game = TableGame(("a", "b", "c"), ("u",), masks, (masks @ np.array([1.0, 2.0, 4.0]))[:, None])
    groups = member_groups([Member(name="m1", sources=("a", "c")), Member(name="m2", sources=("b",))])
    result = member_values(game, groups, "exact")
    assert result.players == ("m1", "m2")
    np.testing.assert_allclose(result.values[:, 0], [5.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(approximate(game, "exact").values[:, 0], [1.0, 2.0, 4.0], atol=1e-12)
