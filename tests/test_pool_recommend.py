"""`payoutsim pool recommend` (market.recommend) and `pool compare --members` at large n."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from market.cli import main
from market.pooling import compare_pools
from market.recommend import recommend_pool
from market.rules import RuleContext
from valuation.games.coalitions import all_coalitions
from valuation.games.game import FunctionGame, TableGame


def table_ctx(u: np.ndarray, rule: str = "shapley") -> tuple[RuleContext, list[str]]:
    n = int(np.log2(u.size))
    members = [f"m{i}" for i in range(n)]
    game = TableGame([f"s{i}" for i in range(n)], ["o"], all_coalitions(n), u)
    return RuleContext(game=game, groups={m: [f"s{i}"] for i, m in enumerate(members)}, weights={"o": 1.0},
                       rule=rule), members


def test_a_value_destroying_member_is_left_out_and_the_rest_split_stably() -> None:
    w = np.array([0.3, 0.2, 0.1, -0.25])
    ctx, members = table_ctx(0.5 + all_coalitions(4) @ w)
    rec = recommend_pool(ctx, members, 100_000, "EUR", period="p")
    assert rec.pool == ("m0", "m1", "m2") and "exhaustive over all 15 pools" in rec.how
    assert rec.value == pytest.approx(0.6) and rec.grand_value == pytest.approx(0.35)
    assert rec.left_out == (("m3", pytest.approx(-0.25)),)
    assert dict(rec.marginals) == pytest.approx({"m0": 0.3, "m1": 0.2, "m2": 0.1})
    assert rec.revenue_minor == round(100_000 * 0.6 / 0.35)  # priced at the grand pool's price per value
    assert sum(rec.payout.amounts) == rec.revenue_minor
    assert rec.stability.stable is True and rec.core_nonempty is True and rec.epsilon == pytest.approx(0.0)
    assert rec.core_point is None and rec.core_amounts is None  # Shapley is already in the core
    assert rec.pool_minor == 100_000


def test_a_core_point_is_offered_when_the_rules_payout_is_not_in_a_non_empty_core() -> None:
    masks = all_coalitions(3)
    u = np.array([float(r[0] and (r[1] or r[2])) for r in masks])  # 1 needs 2 or 3: core = {(1, 0, 0)}
    ctx, members = table_ctx(u)
    rec = recommend_pool(ctx, members, 90_000, "EUR")
    assert rec.pool == ("m0", "m1", "m2")  # ties {0,1}, {0,2}, N: the larger pool
    assert rec.payout.amounts == (60_000, 15_000, 15_000)  # Shapley (2/3, 1/6, 1/6)
    assert rec.stability.stable is False
    assert rec.core_nonempty is True and rec.epsilon == pytest.approx(0.0, abs=1e-9)
    assert rec.core_point == pytest.approx((1.0, 0.0, 0.0))
    assert rec.core_amounts == (90_000, 0, 0)


def test_when_the_best_pool_has_an_empty_core_the_most_valuable_stable_pool_is_named() -> None:
    """Three members, any two create 1, all three 1.2: the grand pool is the most valuable but its core is
    empty (each pair wants 1 of 1.2); a pair's core is non-empty, so a pair is the stable alternative."""
    masks = all_coalitions(3)
    sizes = masks.sum(axis=1)
    u = np.where(sizes == 3, 1.2, np.where(sizes == 2, 1.0, 0.0))
    ctx, members = table_ctx(u)
    rec = recommend_pool(ctx, members, 120_000, "EUR")
    assert rec.pool == ("m0", "m1", "m2") and rec.core_nonempty is False
    assert rec.epsilon == pytest.approx(0.2)  # x = 0.4 each leaves every pair 0.2 short: no stable split
    alt = rec.stable_alternative
    assert alt is not None and len(alt.pool) == 2 and alt.core_nonempty is True
    assert alt.value == pytest.approx(1.0)
    assert alt.revenue_minor == 100_000  # priced at the grand pool's price per unit of value
    assert sum(alt.payout.amounts) == 100_000 and alt.stability.stable is True


def test_a_stable_best_pool_needs_no_alternative() -> None:
    ctx, members = table_ctx(0.5 + all_coalitions(3) @ np.array([0.1, 0.2, 0.3]))
    assert recommend_pool(ctx, members, 1000, "EUR").stable_alternative is None


def test_local_search_above_16_members_drops_the_harmful_ones() -> None:
    n = 24
    rng = np.random.default_rng(1)
    w = rng.random(n) + 0.1
    w[[5, 17]] = [-0.4, -0.2]
    members = [f"m{i:02d}" for i in range(n)]
    game = FunctionGame(members, ["o"], lambda m: 2.0 + np.asarray(m, float) @ w)
    ctx = RuleContext(game=game, groups={m: [m] for m in members}, weights={"o": 1.0}, rule="loo")
    rec = recommend_pool(ctx, members, 1_000_000, "EUR")
    assert rec.pool == tuple(m for i, m in enumerate(members) if i not in (5, 17))
    assert "local search" in rec.how
    assert dict(rec.left_out) == pytest.approx({"m05": -0.4, "m17": -0.2})
    assert rec.value == pytest.approx(w[w > 0].sum())
    assert rec.stability.search_examined is not None and rec.stability.blocking == ()
    assert rec.epsilon_exact and rec.core_nonempty is True
    assert any("constraint generation" in note for note in rec.notes)


def test_compare_builds_leave_one_out_pools_only_for_named_members_above_16() -> None:
    n = 18
    members = [f"m{i:02d}" for i in range(n)]
    game = FunctionGame(members, ["o"], lambda m: np.asarray(m, float).sum(axis=1))
    ctx = RuleContext(game=game, groups={m: [m] for m in members}, weights={"o": 1.0}, rule="equal")
    default = compare_pools(ctx, members, 18_000, "EUR")
    assert [s.name for s in default.structures] == ["grand pool", "everyone alone"]
    assert any("--members" in w for w in default.warnings)
    named = compare_pools(ctx, members, 18_000, "EUR", leave_one_out=["m03"])
    assert [s.name for s in named.structures] == ["grand pool", "everyone alone", "without m03"]
    with pytest.raises(Exception, match="unknown member 'zed'"):
        compare_pools(ctx, members, 18_000, "EUR", leave_one_out=["zed"])


SCENARIO = """
[market]
name = "rec"
currency = "EUR"
revenue = "1000.00"
platform_fee = 0.1
rule = "shapley"

[objectives]
o = 1.0

[[members]]
name = "alice"
sources = ["s0"]

[[members]]
name = "bob"
sources = ["s1"]

[[members]]
name = "carol"
sources = ["s2"]

[[members]]
name = "mallory"
sources = ["s3"]

[valuation]
utilities = "game.csv"
"""


def scenario(tmp_path: Path) -> Path:
    masks = all_coalitions(4)
    u = 0.5 + masks @ np.array([0.3, 0.2, 0.1, -0.25]) + 0.05 * (masks[:, 0] & masks[:, 1])
    TableGame(["s0", "s1", "s2", "s3"], ["o"], masks, u[:, None]).to_csv(tmp_path / "game.csv")
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


def test_pool_recommend_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pool", "recommend", str(scenario(tmp_path))]) == 0
    out = capsys.readouterr().out
    for text in ("recommended pool: alice+bob+carol (3 of 4 members", "value created: 0.65 by the pool vs 0.4",
                 "left out: mallory (adding them changes the value by -0.25)", "revenue of the pool: 1462.50 EUR",
                 "stability of the shapley payout on this pool: stable", "the core is non-empty"):
        assert text in out, text


def test_pool_compare_members_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path)
    assert main(["pool", "compare", str(path), "--members", "alice,carol"]) == 0
    out = capsys.readouterr().out
    assert "without alice" in out and "without carol" in out and "without bob" not in out
    assert main(["pool", "compare", str(path), "--members", "alice,zed"]) == 2
    assert "unknown member 'zed'" in capsys.readouterr().err
