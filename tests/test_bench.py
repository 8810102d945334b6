"""The benchmark suite's machinery with tiny sizes: runner, report, CLI (``python -m benchmarks`` and the
``payoutsim bench`` pass-through), and the two parts' logic.

No timing asserts: benchmarks measure speed, these tests check structure and correctness.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import benchmarks.suite as bench
import valuation.cli.bench as bench_command
from benchmarks.cli import main
from benchmarks.parts import estimators as est
from benchmarks.report import part_tables, print_part, write_report
from benchmarks.suite import BenchPart, parse_only, run_suite
from market.cli import main as payoutsim_main
from valuation.errors import InputError
from valuation.games.estimators import approximate


class _FakePart(BenchPart):
    """A registry entry whose ``run`` is given directly (no module import)."""

    def __init__(self, key: str, title: str, fn: Any) -> None:
        super().__init__(key, title, "unused")
        object.__setattr__(self, "_fn", fn)

    def load(self) -> Any:
        return self._fn


def _ok(quick: bool, seed: int, *, repeats: int | None = None) -> dict[str, Any]:
    return {
        "title": "fake",
        "tables": [{"title": "t", "columns": ["a", "b"], "rows": [[1, 0.5], ["x", None]]}],
        "targets": [{"name": "fast", "target": "≤ 1 s", "measured": "0.1 s", "met": True}],
        "notes": ["a note"],
        "seen": {"quick": quick, "seed": seed, "repeats": repeats},
        "nan": float("nan"),
    }


def _no_repeats(quick: bool, seed: int) -> dict[str, Any]:
    return {"seen": {"quick": quick, "seed": seed}}


def _boom(quick: bool, seed: int) -> dict[str, Any]:
    raise RuntimeError("broken part")


FAKE = {
    "x": _FakePart("x", "ok part", _ok),
    "y": _FakePart("y", "no repeats", _no_repeats),
    "z": _FakePart("z", "failing part", _boom),
}


def test_parse_only_orders_and_rejects_unknown() -> None:
    assert parse_only(None) == list(bench.PARTS)
    assert parse_only(" e, b ,e") == ["b", "e"]
    with pytest.raises(InputError, match="unknown benchmark part") as info:
        parse_only("b,q")
    assert info.value.field == "only"


def test_run_suite_structure_errors_and_repeats(tmp_path: Path) -> None:
    done: list[str] = []
    report = run_suite(["x", "y", "z"], quick=True, seed=7, repeats=3, parts=FAKE,
                       on_part_done=lambda key, entry: done.append(key))
    assert done == ["x", "y", "z"]
    for key in ("machine", "parts", "started", "finished", "load_average_end"):
        assert key in report
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert len(machine["load_average"]) == 3 and machine["versions"]["numpy"] == np.__version__
    parts = report["parts"]
    assert parts["x"]["status"] == "ok" and parts["x"]["result"]["seen"] == {"quick": True, "seed": 7, "repeats": 3}
    assert parts["y"]["status"] == "ok" and parts["y"]["result"]["seen"] == {"quick": True, "seed": 7}
    assert parts["z"]["status"] == "error" and "broken part" in parts["z"]["error"]
    assert all(entry["seconds"] >= 0 for entry in parts.values())

    path = write_report(tmp_path / "sub" / "bench.json", report)
    loaded = json.loads(path.read_text())  # strict JSON: the NaN became null
    assert loaded["parts"]["x"]["result"]["nan"] is None
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp files left


def test_run_suite_rejects_bad_repeats() -> None:
    with pytest.raises(InputError):
        run_suite(["x"], repeats=0, parts=FAKE)


def test_report_renders_tables_targets_and_failures() -> None:
    report = run_suite(["x", "z"], parts=FAKE)
    console = Console(record=True, width=120)
    for key, entry in report["parts"].items():
        print_part(console, key, entry)
    text = console.export_text()
    assert "(x) ok part: t" in text and "targets" in text and "a note" in text and "—" in text
    assert "FAILED" in text and "broken part" in text
    assert len(part_tables("x", report["parts"]["x"])) == 2


def test_cli_bench_runs_a_small_estimator_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    small = functools.partial(est.run, sizes=((6, (40, 80)),), kinds=("unanimity", "pairwise"),
                              estimators=("ours", "permutation", "shapiq:KernelSHAP", "shapiq:SVARM"))
    monkeypatch.setattr(bench, "PARTS", {"e": _FakePart("e", "estimators (small)", small)})
    out = tmp_path / "bench.json"
    code = main(["--quick", "--only", "e", "--out", str(out), "--repeats", "2", "--seed", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "MSE vs exact" in printed and "machine" in printed and f"wrote {out}" in printed
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["seed"] == 3 and report["repeats"] == 2
    result = report["parts"]["e"]["result"]
    assert result["params"]["seeds_per_cell"] == 2
    assert {(c["game"], c["budget"]) for c in result["cells"]} == {
        ("unanimity", 40), ("unanimity", 80), ("pairwise", 40), ("pairwise", 80)
    }
    for cell in result["cells"]:
        assert set(cell["estimators"]) == {"ours", "permutation", "shapiq:KernelSHAP", "shapiq:SVARM"}
        assert cell["verdict"]["best_shapiq"] in ("KernelSHAP", "SVARM")
        assert 0.0 <= cell["verdict"]["coverage_2se"] <= 1.0
        for r in cell["estimators"].values():
            assert r["mse"] >= 0 and r["evaluations_max"] <= cell["budget"]
    assert result["targets"][0]["name"].startswith("ours within 1.2×")


def test_part_e_lists_every_shapiq_shapley_approximator() -> None:
    from shapiq.approximator import SV_APPROXIMATORS

    funcs, skipped = est.estimator_funcs(quick=False)
    assert {f"shapiq:{cls.__name__}" for cls in SV_APPROXIMATORS} <= set(funcs) | set(skipped)
    assert {"ours", "permutation"} <= set(funcs)


def test_cli_bench_unknown_part_is_an_input_error(capsys) -> None:
    assert main(["--only", "q"]) == 2
    assert "field 'only'" in capsys.readouterr().err


def test_payoutsim_bench_passes_through_to_the_suite(capfd) -> None:
    """`payoutsim bench` runs ``python -m benchmarks`` of the checkout (a subprocess) and returns its code."""
    assert payoutsim_main(["bench", "--only", "q"]) == 2
    assert "error: field 'only': unknown benchmark part(s) q" in capfd.readouterr().err


def test_payoutsim_bench_without_a_checkout_says_where_benchmarks_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(bench_command, "benchmarks_folder", lambda: tmp_path / "benchmarks")
    assert payoutsim_main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks ship with the source checkout" in err and str(tmp_path / "benchmarks") in err
    assert len(err.strip().splitlines()) == 1


def test_cli_bench_failing_part_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(bench, "PARTS", {"z": FAKE["z"]})
    out = tmp_path / "bench.json"
    assert main(["--only", "z", "--out", str(out)]) == 1
    assert "failed: z" in capsys.readouterr().err
    assert json.loads(out.read_text())["parts"]["z"]["status"] == "error"


@pytest.mark.parametrize("builder", [est.unanimity_game, est.airport_game, est.majority_game, est.pairwise_game])
def test_closed_forms_match_the_exact_estimator(builder: Any) -> None:
    game = builder(7, np.random.default_rng(1))
    exact = approximate(game.as_game(), "exact").values[:, 0]
    np.testing.assert_allclose(game.closed_form, exact, atol=1e-12)


def test_bt_preference_game_has_no_closed_form_but_an_exact_reference() -> None:
    game = est.bt_preference_game(5, np.random.default_rng(0))
    phi, source, check = est.reference_values(game)
    assert game.closed_form is None and source == "exact estimator" and check is None
    assert phi.shape == (5,)


def test_estimators_respect_the_budget() -> None:
    game = est.unanimity_game(8, np.random.default_rng(2))
    grand = float(game.fn(np.ones((1, 8), dtype=bool))[0])
    funcs, _ = est.estimator_funcs(quick=True)
    for name, fn in funcs.items():
        values, std_errs, used = fn(game, 120, 0)
        assert values.shape == (8,), name
        assert used <= 120, name
        if name in ("ours", "permutation"):
            assert std_errs is not None and std_errs.shape == (8,)
            assert values.sum() == pytest.approx(grand, abs=1e-9), name  # v(∅) = 0 here


def test_latin_square_orders_are_unbiased_on_a_self_dual_game() -> None:
    from valuation.games.estimators import approximate

    game = est.majority_game(12, np.random.default_rng(4))
    estimates = [approximate(game.as_game(), "permutation", 2_000, seed=seed).values[:, 0] for seed in range(20)]
    mean = np.mean(estimates, axis=0)
    se = np.std(estimates, axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(mean - game.closed_form) <= 4 * se + 1e-12)
    # the ablation (independent orders) is unbiased too, and exact on an additive game
    weights = np.arange(1.0, 6.0)
    additive = est.BenchGame("additive", 5, lambda m: m.astype(float) @ weights, weights)
    values, used = est.independent_orders(additive.as_game(), 100, 0)
    np.testing.assert_allclose(values, weights)
    assert used <= 100


def test_coalition_eval_small_run_structure() -> None:
    from benchmarks.parts import coalition_eval
    from valuation.models import TinyConfig

    tiny = TinyConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    result = coalition_eval.run(False, 0, repeats=1, n_sources=(2, 3), measured_n=2, eval_pairs=6, tiny_config=tiny)
    assert [r["n_sources"] for r in result["results"]] == [2, 3]
    first, second = result["results"]
    assert first["forward_passes"] == "measured" and second["forward_passes"].startswith("extrapolated")
    assert set(first["coalitions_s"]) == {"accuracy", "bt"} and first["n_coalitions"] == 4
    forward = result["forward"]
    assert forward["in_memory_vs_cache_max_abs_diff"] < 1e-9  # the production cache fill gives the same Δ
    assert forward["fill_cache"]["median_s"] > 0 and forward["threads"] == 1
    breakdown = result["breakdown_largest_n"]
    assert breakdown["candidate_max_abs_diff"] < 1e-12 and breakdown["candidate_max_abs_diff_std_err"] < 1e-12
    assert result["targets"] == []  # the targets are stated for n = 8 and n = 16 only
    json.dumps(result)  # JSON-serialisable as is
    console = Console(record=True, width=150)
    print_part(console, "b", {"status": "ok", "title": "b", "seconds": 1.0, "result": result})
    assert "all 2^n coalitions" in console.export_text()
