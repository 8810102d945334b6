"""Stability and the least core above 16 members: the searched core check and constraint generation."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from market.rules import RuleContext, compute_payout
from valuation.errors import InputError
from valuation.games.coalitions import all_coalitions
from valuation.games.estimators import approximate
from valuation.games.estimators.least_core import constraint_generation, least_core, solve_least_core_lp
from valuation.games.game import FunctionGame
from valuation.games.stability import check_stability, verdict_text

LC = sys.modules["valuation.games.estimators.least_core"]


def synergy(n: int, planted: np.ndarray, bonus: float, seed: int = 0):
    w = np.random.default_rng(seed).random(n)
    return (lambda m: 1.0 + np.asarray(m, float) @ w + bonus * np.asarray(m, bool)[:, planted].all(axis=1)), w


def names(n: int) -> list[str]:
    return [f"m{i:02d}" for i in range(n)]


def test_search_finds_the_coalition_an_allocation_underpays_and_says_so() -> None:
    n, planted = 40, np.array([1, 5, 9])
    v, w = synergy(n, planted, 1.0)
    grand = float(w.sum() + 1.0)
    shares = (w + 1.0 / n) / grand  # the planted trio is paid 3/40 of its bonus
    report = check_stability(names(n), None, shares, game=v, search_budget=5_000, seed=1)
    assert report.stable is False and report.in_core is False and not report.core_checked
    assert report.blocking[0][0] == ("m01", "m05", "m09")
    assert report.blocking[0][1] == pytest.approx(1.0 - 3 / n)
    assert report.search_examined is not None and 4_000 < report.search_examined <= 5_000
    summary = report.to_json_dict()
    assert summary["search_examined"] == report.search_examined and summary["n_blocking"] >= len(summary["blocking"])
    text = verdict_text(summary)
    assert text.startswith(f"UNSTABLE: {summary['n_blocking']} blocking coalition(s) found by search among "
                           f"{report.search_examined} examined; individually rational")
    assert "m01+m05+m09 (excess" in text.splitlines()[1]


def test_search_finding_nothing_leaves_stability_unproven() -> None:
    n = 48
    w = np.random.default_rng(3).random(n)
    shares = w / w.sum()
    report = check_stability(names(n), None, shares, game=lambda m: (np.asarray(m, float) @ w) ** 2,
                             least_core_epsilon=-0.5)
    assert report.stable is None and report.in_core is None and report.blocking == ()
    # v = (Σw)² is convex and x = w·v(N)/Σw = w·Σw is its Shapley value: in the core
    assert report.search_best_excess is not None and report.search_best_excess < 0
    text = report.verdict()
    assert text == (f"individually rational; no blocking coalition found among {report.search_examined} examined "
                    "(search, not a proof); least-core ε = -0.5")


def test_individual_rationality_is_checked_beside_the_search() -> None:
    n = 20
    w = np.ones(n)
    shares = np.full(n, 1.0 / n)
    shares[0], shares[1] = 0.0, 2.0 / n  # m00 is paid nothing though it makes 1 alone
    report = check_stability(names(n), None, shares, game=lambda m: np.asarray(m, float) @ w, search_budget=2_000)
    assert not report.individually_rational and report.ir_violations[0][0] == "m00"
    assert ("m00",) in [c for c, _ in report.blocking]
    assert "NOT individually rational" in report.verdict()


def test_summaries_stored_before_the_search_read_as_before() -> None:
    old = {"stable": None, "individually_rational": True, "core_checked": False, "in_core": None,
           "n_blocking": 0, "blocking": [], "least_core_epsilon": None}
    assert verdict_text(old) == "individually rational; core not checked (more than 16 members)"
    old_unstable = {"stable": False, "core_checked": True, "n_blocking": 1,
                    "blocking": [{"coalition": ["a", "b"], "excess": 0.5}], "least_core_epsilon": 0.25}
    assert verdict_text(old_unstable) == ("UNSTABLE: 1 blocking coalition(s); least-core ε = 0.25\n"
                                          "  would do better on their own: a+b (excess 0.5)")
    small = check_stability(["a", "b"], np.array([0.0, 1.0, 1.0, 2.0]), np.array([0.5, 0.5]))
    assert set(small.to_json_dict()) >= set(old) | {"search_examined", "search_best_excess"}
    assert small.to_json_dict()["search_examined"] is None


def test_constraint_generation_matches_the_exact_least_core_on_small_games() -> None:
    rng = np.random.default_rng(0)
    for n in (6, 11):
        table = rng.normal(size=2**n)
        weights = 1 << np.arange(n)

        def fn(masks: np.ndarray, table: np.ndarray = table, weights: np.ndarray = weights) -> np.ndarray:
            return table[np.asarray(masks, np.int64) @ weights]

        masks = all_coalitions(n)
        _, exact_eps = solve_least_core_lp(masks[1:-1], table[1:-1] - table[0], table[-1] - table[0])
        generated = constraint_generation(fn, n, seed=1)
        assert generated.converged  # the separation is exhaustive at this size
        assert generated.epsilon == pytest.approx(exact_eps, abs=1e-7)
        assert generated.x.sum() == pytest.approx(table[-1] - table[0])


def test_least_core_above_16_players_by_constraint_generation() -> None:
    n, planted = 40, np.array([0, 1, 2, 3])
    v, w = synergy(n, planted, 2.0)
    game = FunctionGame(names(n), ["u"], v)
    start = time.perf_counter()
    result = approximate(game, "least_core", seed=0)
    assert time.perf_counter() - start < 10
    info = result.info
    assert info["constraints"] == "generated" and info["converged"] and info["rounds"][0] >= 1
    assert "lower bound" in info["separation"]
    assert info["epsilon"][0] == pytest.approx(0.0, abs=1e-7)  # the core of an additive + synergy game
    x = result.values[:, 0]
    assert x.sum() == pytest.approx(w.sum() + 2.0)
    assert x[planted].sum() == pytest.approx(w[planted].sum() + 2.0)  # the planted four earn their bonus
    assert np.all(x >= w - 1e-7)  # nobody below what it makes alone


def test_least_core_refuses_too_many_players_and_unconverged_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    big = FunctionGame(names(129), ["u"], lambda m: np.asarray(m, float).sum(axis=1))
    with pytest.raises(InputError, match="at most 128 players"):
        least_core(big)
    n = 40
    w = np.random.default_rng(5).random(n)
    hard = FunctionGame(names(n), ["u"], lambda m: np.sqrt(np.asarray(m, float) @ w))  # empty core, many rounds
    monkeypatch.setattr(LC, "GENERATION_MAX_ROUNDS", 1)
    with pytest.raises(InputError, match="did not converge within 1 rounds"):
        least_core(hard)
    loose = least_core(hard, strict=False)
    assert loose.info["converged"] is False and loose.info["epsilon"][0] > 0  # a lower bound: the core is empty


def test_least_core_rule_at_64_members_completes_or_names_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 64
    members = names(n)
    planted = np.array([4, 8, 15, 16, 23, 42])
    v, w = synergy(n, planted, 3.0, seed=2)
    easy = FunctionGame(members, ["u"], v)
    ctx = RuleContext(game=easy, groups={m: [m] for m in members}, weights={"u": 1.0}, rule="least_core")
    start = time.perf_counter()
    payout = compute_payout(ctx, members, 1_000_000, "EUR")
    assert time.perf_counter() - start < 20
    assert sum(payout.amounts) == 1_000_000 and payout.info["epsilon"] == pytest.approx(0.0, abs=1e-7)

    hard = FunctionGame(members, ["u"], lambda m: np.sqrt(np.asarray(m, float) @ w))
    monkeypatch.setattr(LC, "GENERATION_TIME_CAP_S", 1.0)
    ctx = RuleContext(game=hard, groups={m: [m] for m in members}, weights={"u": 1.0}, rule="least_core")
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        compute_payout(ctx, members, 1_000_000, "EUR")
    assert time.perf_counter() - start < 10
    assert err.value.field == "market.rule"
    for text in ("64 members", "did not converge", "1 s", "shapley", "banzhaf", "loo", "budget"):
        assert text in err.value.message


def test_a_period_above_16_members_searches_the_core(tmp_path) -> None:
    from dataclasses import replace

    from market.period import run_period
    from market.scenario.inputs import load_inputs
    from market.scenario.schema import load_scenario
    from valuation.games.game import TableGame

    n = 20
    sources = [f"s{i}" for i in range(n)]
    ends = np.vstack([np.zeros((1, n), bool), np.ones((1, n), bool)])
    TableGame(sources, ["o"], ends, np.array([[0.0], [1.0]])).to_csv(tmp_path / "game.csv")  # replaced below
    members = "".join(f'\n[[members]]\nname = "m{i:02d}"\nsources = ["s{i}"]\n' for i in range(n))
    (tmp_path / "s.toml").write_text(
        '[market]\nname = "big"\ncurrency = "EUR"\nrevenue = "1000.00"\nplatform_fee = 0.0\nrule = "equal"\n\n'
        f'[objectives]\no = 1.0\n{members}\n[valuation]\nutilities = "game.csv"\n', encoding="utf-8")
    inputs = load_inputs(load_scenario(tmp_path / "s.toml"))
    w = np.linspace(0.1, 1.0, n)
    game = FunctionGame(sources, ["o"], lambda m: np.asarray(m, float) @ w + 2.0 * np.asarray(m, bool)[:, :3].all(axis=1))
    run = run_period(replace(inputs, game=game), inputs.scenario.period_names()[0])
    report = run.stability  # equal split of an additive game: the members with the largest weights block
    assert report.stable is False and report.search_examined is not None and report.search_examined > 10_000
    assert report.least_core_epsilon is None and run.coalitions == ()
    assert report.verdict().startswith("UNSTABLE: ") and "found by search among" in report.verdict()


def test_least_core_above_16_members_with_replicates_is_refused_at_once() -> None:
    from market.period import check_least_core_replicates

    members = names(20)
    game = FunctionGame(members, ["u"], lambda m: np.asarray(m, float).sum(axis=1))
    ctx = RuleContext(game=game, groups={m: [m] for m in members}, weights={"u": 1.0}, rule="least_core")
    with pytest.raises(InputError) as err:
        check_least_core_replicates(ctx, 20, 200)
    assert err.value.field == "uncertainty.replicates"
    for text in ("20 members", "200 replicate games", "replicates = 0", "budget", "shapley"):
        assert text in err.value.message
    check_least_core_replicates(ctx, 20, 0)  # no replicates: fine
    check_least_core_replicates(ctx, 16, 200)  # exact least core: fine
