"""`payoutsim payout`, `pool compare`, `ledger show|export|verify` and scenario validation (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scenario_texts import small_scenario

from market.cli import main
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "scenarios" / "example.toml"

BASE = small_scenario("cli")


def scenario(tmp_path: Path, text: str = BASE, convex: bool = False) -> Path:
    masks = all_coalitions(3).astype(float)
    if convex:
        u = np.stack([(masks @ [1.0, 2.0, 3.0]) ** 2] * 2, axis=1)
    else:
        u = np.stack([0.5 + masks @ [0.1, 0.05, 0.02], 0.5 + masks @ [0.01, 0.08, 0.03]], axis=1)
    TableGame(["s0", "s1", "s2"], ["helpfulness", "harmlessness"], all_coalitions(3), u).to_csv(tmp_path / "game.csv")
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_payout_prints_table_verdict_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(EXAMPLE), "--ledger", str(db)]) == 0
    out = capsys.readouterr().out
    for text in ("alice", "bob", "carol", "dave", "2025-Q1", "2025-Q3", "81000.00", "least-core ε", "recorded run"):
        assert text in out
    assert "dave" not in out.split("period 2025-Q2")[0]  # dave joins in Q2
    assert main(["payout", str(EXAMPLE), "--period", "2025-Q2", "--ledger", str(db)]) == 0
    assert "already recorded" in capsys.readouterr().out
    assert main(["ledger", "show", "--ledger", str(db)]) == 0
    assert "3 run(s)" in capsys.readouterr().out
    assert main(["ledger", "verify", "--ledger", str(db)]) == 0
    assert "ok: 3 run(s)" in capsys.readouterr().out
    csv_path = tmp_path / "x" / "payouts.csv"
    assert main(["ledger", "export", "--ledger", str(db), "--csv", str(csv_path)]) == 0
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"run_id", "period", "member", "rule", "value", "share", "amount", "currency"} <= set(header)
    assert len(csv_path.read_text().splitlines()) == 1 + 3 + 4 + 4
    assert main(["ledger", "export", "--ledger", str(db)]) == 2


def test_payout_reports_a_stable_convex_agreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario(tmp_path, convex=True)
    assert main(["payout", str(path), "--no-ledger"]) == 0
    out = capsys.readouterr().out
    assert "stable: the payout is individually rational and in the core" in out
    assert not (tmp_path / "runs").exists()


def test_pool_compare_lists_structures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pool", "compare", str(EXAMPLE), "--period", "2025-Q2", "--partition", "alice+bob|carol"]) == 0
    out = capsys.readouterr().out
    for text in ("grand pool", "everyone alone", "without dave", "alice+carol | bob+dave", "alice+bob | carol | dave"):
        assert text in out
    assert "would rather leave" in out


def test_pool_compare_on_a_convex_game_finds_nobody_better_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pool", "compare", str(scenario(tmp_path, convex=True))]) == 0
    assert "nobody is paid more" in capsys.readouterr().out


def test_robust_shapley_measures_similarity_from_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for src, topic in (("s0", "cooking"), ("s1", "physics"), ("s2", "gardening")):
        for _ in range(10):
            words = [f"{topic}{i}" for i in rng.integers(0, 50, 12)]
            lines.append({"source": src, "prompt": " ".join(words[:4]), "chosen": " ".join(words[4:8]),
                          "rejected": " ".join(words[8:])})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    text = BASE.replace('rule = "shapley"', 'rule = "robust_shapley"') + 'data = "pairs.jsonl"\n'
    assert main(["payout", str(scenario(tmp_path, text)), "--no-ledger"]) == 0
    assert "robust_shapley" in capsys.readouterr().out
    proportional = BASE.replace('rule = "shapley"', 'rule = "proportional"') + 'data = "pairs.jsonl"\n'
    assert main(["payout", str(scenario(tmp_path, proportional)), "--no-ledger"]) == 0
    out = capsys.readouterr().out
    assert "333.33%" not in out and "33.33%" in out and "66.67%" in out  # 10 vs 20 pairs


BAD = [
    (BASE.replace('sources = ["s0"]', 'sources = ["nope"]'), "members[1].sources", "unknown source"),
    (BASE.replace('name = "bob"', 'name = "alice"'), "members[2].name", "duplicate member"),
    (BASE.replace('revenue = "1000.00"', 'revenue = "-5"'), "market.revenue", ">= 0"),
    (BASE.replace("platform_fee = 0.1", "platform_fee = 1.0"), "market.platform_fee", "[0, 1)"),
    (BASE.replace('rule = "shapley"', 'rule = "magic"'), "market.rule", "unknown rule"),
    (BASE.replace('currency = "EUR"', 'currency = "EURO"'), "market.currency", "unknown currency"),
    (BASE.replace("harmlessness = 0.5", "harmlessness = 0.6"), "objectives", "sum to 1"),
    (BASE.replace("helpfulness = 0.5\n", "helpfulnes = 0.5\n", 1), "objectives", ""),
    (BASE.replace('revenue = "1000.00"', 'revenue = "10.005"'), "market.revenue", "decimal places"),
    (BASE.replace('utilities = "game.csv"', 'config = "valuation.toml"'), "valuation.config", "not available"),
    (BASE.replace('rule = "shapley"', 'rule = "proportional"'), "sizes", "proportional"),
    (BASE + "\n[unknown]\nx = 1\n", "unknown", "unknown key"),
    (BASE.replace("[[members]]", "[members", 1), None, "invalid TOML"),
]


@pytest.mark.parametrize(("text", "field", "message"), BAD)
def test_bad_scenarios_exit_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str | None, message: str
) -> None:
    path = scenario(tmp_path, text)
    assert main(["payout", str(path), "--no-ledger"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}")
    if field is not None:
        assert f"field '{field}" in err
    assert message in err


def test_unknown_period_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["payout", str(EXAMPLE), "--period", "2031-Q9", "--no-ledger"]) == 2
    assert "unknown period" in capsys.readouterr().err


def test_members_join_and_leave_between_periods(tmp_path: Path) -> None:
    from market.scenario.schema import load_scenario

    text = BASE.replace('sources = ["s0"]', 'sources = ["s0"]\nleaves = "p3"').replace(
        'sources = ["s1", "s2"]', 'sources = ["s1", "s2"]\njoins = "p2"'
    ) + '\n[[periods]]\nname = "p1"\n\n[[periods]]\nname = "p2"\nrevenue = "5"\n\n[[periods]]\nname = "p3"\n'
    sc = load_scenario(scenario(tmp_path, text)).scenario
    assert [[m.name for m in sc.members_in(p)] for p in sc.period_names()] == [["alice"], ["alice", "bob"], ["bob"]]
    assert [str(sc.revenue_for(p)) for p in sc.period_names()] == ["1000.00", "5", "1000.00"]
