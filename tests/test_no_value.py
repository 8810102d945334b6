"""When no member created value (issue 14, item 9): ``[market] no_value = "hold" | "equal"``.

A single member whose data hurts the pool used to be paid all of it. Under ``hold`` (the default) nothing is
paid and the pool is held — recorded, printed, exported as a ``held`` row — and paid + held = pool holds
everywhere; under ``equal`` the pool is split equally among the members whose data has any effect.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from market import ledger, read_model
from market.cli import main
from market.rules import Payout, RuleContext, allocate, compute_payout
from market.run import run_scenario
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.game import TableGame

POOL = 100_000  # 1000.00 EUR


def game_of(deltas: list[float]) -> TableGame:
    """An additive one-objective game: source ``s{j}`` changes every coalition's utility by ``deltas[j]``."""
    n = len(deltas)
    u = 0.5 + all_coalitions(n).astype(float) @ np.array(deltas)
    return TableGame([f"s{j}" for j in range(n)], ["helpfulness"], all_coalitions(n), u[:, None])


def pay(deltas: list[float], negative: str = "clip", no_value: str | None = None) -> Payout:
    game = game_of(deltas)
    members = [f"m{j}" for j in range(len(deltas))]
    extra = {} if no_value is None else {"no_value": no_value}
    ctx = RuleContext(
        game=game, groups={m: [f"s{j}"] for j, m in enumerate(members)}, weights={"helpfulness": 1.0},
        negative=negative, **extra,
    )
    return compute_payout(ctx, members, POOL, "EUR")


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_a_single_member_with_a_negative_value_is_not_paid_the_pool(negative: str) -> None:
    payout = pay([-0.157], negative)  # the case: one member, value −0.157
    assert payout.values[0] == pytest.approx(-0.157, abs=1e-12)
    assert payout.amounts == (0,)
    assert payout.held_minor == POOL
    assert payout.shares.tolist() == [0.0]
    assert any("no member created value" in w and "held" in w for w in payout.warnings)


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_all_negative_members_hold_the_pool_by_default(negative: str) -> None:
    payout = pay([-0.1, -0.3, -0.2], negative)  # under shift m0 alone used to get the whole pool
    assert payout.amounts == (0, 0, 0)
    assert payout.held_minor == POOL
    assert sum(payout.amounts) + payout.held_minor == POOL


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_all_negative_members_split_equally_under_no_value_equal(negative: str) -> None:
    payout = pay([-0.1, -0.3, -0.2], negative, "equal")
    assert payout.amounts == (33_334, 33_333, 33_333)
    assert payout.held_minor == 0
    assert any("no member created value" in w and "split equally" in w for w in payout.warnings)


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_a_single_negative_member_takes_the_pool_only_under_no_value_equal(negative: str) -> None:
    payout = pay([-0.157], negative, "equal")  # the explicit, documented choice
    assert payout.amounts == (POOL,)
    assert payout.held_minor == 0
    assert any("split equally" in w for w in payout.warnings)  # and it is said, also for one member


def test_equal_leaves_null_members_out_and_hold_pays_nobody() -> None:
    equal = pay([-0.2, 0.0, -0.1], "clip", "equal")  # m1 is null: its data changes nothing
    assert equal.amounts == (50_000, 0, 50_000)
    assert "among the members whose data has any effect" in " ".join(equal.warnings)
    hold = pay([0.0, 0.0], "clip")  # the pool creates no value at all
    assert hold.amounts == (0, 0) and hold.held_minor == POOL


@pytest.mark.parametrize("negative", ["clip", "shift"])
def test_one_positive_member_keeps_the_ordinary_split(negative: str) -> None:
    payout = pay([0.3, -0.1], negative)
    assert payout.held_minor == 0
    assert sum(payout.amounts) == POOL
    assert payout.amounts == (POOL, 0)  # clip: weights 0.3, 0; shift: 0.4, 0


def test_allocate_hold_with_an_empty_pool_holds_nothing() -> None:
    alloc = allocate(["a"], np.array([-1.0]), 0, "clip")
    assert alloc.amounts == (0,) and alloc.held == 0


def test_an_unknown_policy_is_named() -> None:
    with pytest.raises(InputError) as err:
        RuleContext(game=game_of([0.1]), groups={"m0": ["s0"]}, weights={"helpfulness": 1.0}, no_value="keep")
    assert err.value.field == "market.no_value"


# ---------------------------------------------------------------------------------------------------
# end to end: scenario → payout → ledger → verify → export → read model


def scenario(folder: Path, no_value: str | None = None) -> Path:
    (folder / "game.csv").write_text("coalition,helpfulness\n,0.5\ns0,0.343\n", encoding="utf-8")
    policy = "" if no_value is None else f'no_value = "{no_value}"\n'
    text = (
        '[market]\nname = "neg"\ncurrency = "EUR"\nrevenue = "1000.00"\nrule = "shapley"\nnegative = "clip"\n'
        f'{policy}\n[[members]]\nname = "solo"\nsources = ["s0"]\n\n[valuation]\nutilities = "game.csv"\n'
    )
    path = folder / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_payout_holds_prints_records_verifies_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario(tmp_path)), "--ledger", str(db)]) == 0
    out, err = capsys.readouterr()
    assert "held: 1000.00 EUR not paid out" in out
    assert "no member created value" in err
    assert ledger.verify(db).ok
    rows = ledger.export_rows(db)
    assert [(r["member"], r["amount_minor"], r["line"]) for r in rows] == [("solo", 0, "payout"), (None, POOL, "held")]
    assert main(["ledger", "export", "--ledger", str(db), "--csv", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", encoding="utf-8", newline="") as fh:
        exported = list(csv.DictReader(fh))
    assert sum(int(r["amount_minor"]) for r in exported) == POOL  # paid + held = pool in the CSV too
    assert exported[-1]["line"] == "held" and exported[-1]["member"] == ""
    run = read_model.load_run(db, rows[0]["run_id"])
    assert run.no_value == "hold" and run.held_minor == POOL
    assert read_model.weighted_payout(run, run.weights).held_minor == POOL


def test_verify_rejects_a_zeroed_payout_when_the_policy_is_not_hold(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario(tmp_path, "equal")), "--ledger", str(db)]) == 0
    assert ledger.verify(db).ok
    con = duckdb.connect(str(db))
    con.execute("UPDATE payouts SET amount_minor = 0, share = 0")
    con.close()
    problems = " ".join(ledger.verify(db).problems)
    assert "payouts sum to 0 minor units, the pool is 100000" in problems


def test_a_scenario_without_the_key_holds_and_a_bad_value_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = run_scenario(scenario(tmp_path), out=tmp_path / "out", progress=False)
    period = json.loads(outputs.values.read_text(encoding="utf-8"))["periods"][0]
    assert (period["held_minor"], period["held"], period["payouts"][0]["amount_minor"]) == (POOL, "1000.00", 0)
    bad = scenario(tmp_path, "keep")
    assert main(["payout", str(bad), "--no-ledger"]) == 2
    assert "market.no_value" in capsys.readouterr().err


def test_runs_recorded_before_the_policy_read_as_equal(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario(tmp_path, "equal")), "--ledger", str(db)]) == 0
    run_id = ledger.list_runs(db)[0]["run_id"]
    con = duckdb.connect(str(db))
    config = json.loads(con.execute("SELECT config_json FROM runs").fetchone()[0])
    del config["market"]["no_value"]
    con.execute("UPDATE runs SET config_json = ?", [json.dumps(config)])
    con.close()
    run = read_model.load_run(db, run_id)
    assert run.no_value == "equal" and run.held_minor == 0 and run.amounts == (POOL,)


def test_the_dashboard_shows_a_held_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    db = tmp_path / "ledger.duckdb"
    assert main(["payout", str(scenario(tmp_path)), "--ledger", str(db)]) == 0
    monkeypatch.setenv(read_model.LEDGER_ENV, str(db))
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("is held" in c.value and "held 1000.00 EUR = the pool" in c.value for c in at.caption)
    for page in ("views/trade_offs.py", "views/pooling.py", "views/coalitions.py", "views/ledger.py"):
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
