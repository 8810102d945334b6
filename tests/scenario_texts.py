"""Scenario texts the CLI tests share: two members, three sources, a given coalition table (``game.csv``)."""

from __future__ import annotations


def small_scenario(name: str) -> str:
    """A valid scenario TOML named `name`: alice owns s0, bob owns s1 and s2; revenue 1000.00 EUR, fee 10%,
    Shapley, helpfulness and harmlessness weighted equally, utilities from ``game.csv`` beside it."""
    return f"""
[market]
name = "{name}"
currency = "EUR"
revenue = "1000.00"
platform_fee = 0.1
rule = "shapley"

[objectives]
helpfulness = 0.5
harmlessness = 0.5

[[members]]
name = "alice"
sources = ["s0"]

[[members]]
name = "bob"
sources = ["s1", "s2"]

[valuation]
utilities = "game.csv"
"""
