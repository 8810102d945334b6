"""Benchmark part (a), arithmetic vs retraining every coalition (`benchmarks.parts.arithmetic_vs_retraining`), end to end on
a very small `tiny` model with n = 2 and 3 sources and a handful of pairs: counts, ratios, fidelity keys,
targets and the report tables. No timing asserts: the benchmark measures speed, this checks its structure."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tiny_lm import TINY_PRESET as TINY

from benchmarks.parts import arithmetic_vs_retraining as retraining
from benchmarks.parts.arithmetic_vs_retraining_report import targets as retraining_targets
from benchmarks.report import part_tables

N_SOURCES = (2, 3)
PAIRS = 8
FIDELITY_KEYS = {*retraining.FIDELITY_KEYS, "max_abs_value_arithmetic"}


@pytest.fixture(scope="module")
def part(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The real part once, with every temp dir of the run under one folder (to check it is cleaned up)."""
    root = tmp_path_factory.mktemp("bench-a")
    temp = root / "tmp"
    temp.mkdir()
    before = tempfile.tempdir
    tempfile.tempdir = str(temp)
    try:
        result = retraining.run(
            True,
            3,
            repeats=2,
            n_sources=N_SOURCES,
            pairs_per_source=PAIRS,
            eval_pairs=6,
            training={"batch_size": 8, "max_length": 96},
            tiny=TINY,
            cache_dir=root / "cache",
            progress=False,
        )
    finally:
        tempfile.tempdir = before
    return result, temp


def test_counts_follow_n_and_two_to_the_n(part: tuple[dict[str, Any], Path]) -> None:
    result, _ = part
    assert [r["n_sources"] for r in result["results"]] == list(N_SOURCES)
    for r in result["results"]:
        n = r["n_sources"]
        arith, retrain = r["arithmetic"], r["retraining"]
        assert r["sources"] == list(retraining.SOURCES[:n])
        assert arith["fine_tunings"] == n and retrain["fine_tunings"] == 2**n - 1
        assert retrain["fine_tunings_trained_for_retraining"] == 2**n - 1 - n  # singletons are reused
        assert arith["source_trainings"] == n and retrain["source_trainings"] == n * 2 ** (n - 1)
        # read from the adapters' manifests: each coalition trains on all its sources' pairs
        assert arith["pairs_trained"] == PAIRS * n
        assert retrain["pairs_trained"] == PAIRS * n * 2 ** (n - 1)
        assert arith["model_passes_per_eval_set"] == n + 1 and retrain["model_passes_per_eval_set"] == 2**n
        assert retrain["optimizer_steps"] > arith["optimizer_steps"] > 0
        assert r["ratios"]["fine_tunings"] == pytest.approx((2**n - 1) / n, abs=1e-3)
        assert r["ratios"]["source_trainings"] == pytest.approx(2 ** (n - 1), abs=1e-3)


def test_times_add_up_and_the_ratio_is_retraining_over_arithmetic(part: tuple[dict[str, Any], Path]) -> None:
    result, _ = part
    for r in result["results"]:
        arith, retrain = r["arithmetic"], r["retraining"]
        assert arith["total_s"] == pytest.approx(
            arith["train_s"] + arith["score_s"] + arith["coalitions_and_shapley_s"], abs=2e-3
        )
        assert retrain["total_s"] == pytest.approx(retrain["train_s"] + retrain["score_s"], abs=2e-3)
        # retraining includes the arithmetic's n fine-tunings and its base + singleton scoring passes
        assert retrain["train_s"] > arith["train_s"] > 0 and retrain["score_s"] > arith["score_s"] > 0
        assert r["ratios"]["time"] == pytest.approx(retrain["total_s"] / arith["total_s"], rel=1e-3)
        assert r["ratios"]["time"] > 1
        assert retrain["cpu_s"] > arith["cpu_s"] > 0
        assert r["ratios"]["cpu_time"] == pytest.approx(retrain["cpu_s"] / arith["cpu_s"], rel=1e-3)


def test_fidelity_per_objective_compares_the_two_value_vectors(part: tuple[dict[str, Any], Path]) -> None:
    result, _ = part
    for r in result["results"]:
        assert set(r["fidelity"]) == set(retraining.OBJECTIVES)
        for objective, f in r["fidelity"].items():
            assert set(f) == FIDELITY_KEYS
            phi_a = [r["values"]["arithmetic"][objective][s] for s in r["sources"]]
            phi_r = [r["values"]["retraining"][objective][s] for s in r["sources"]]
            max_diff = max(abs(a - b) for a, b in zip(phi_a, phi_r, strict=True))
            assert f["shapley_max_abs_diff"] == pytest.approx(max_diff, rel=1e-9, abs=1e-15)
            assert f["max_abs_value_arithmetic"] == pytest.approx(max(abs(a) for a in phi_a), rel=1e-12)
            assert 0.0 <= f["shapley_sign_agreement"] <= 1.0
            assert f["shapley_spearman"] is None or -1.0 <= f["shapley_spearman"] <= 1.0


def test_report_targets_tables_and_cleanup(part: tuple[dict[str, Any], Path]) -> None:
    result, temp = part
    json.dumps(result, allow_nan=False)  # strict JSON as is
    assert result["params"]["repeats"] == 1 and result["params"]["repeats_requested"] == 2
    assert result["params"]["pairs_per_source"] == PAIRS
    names = [t["name"] for t in result["targets"]]
    assert names == [
        "n=2: retraining / arithmetic wall time",
        "n=3: retraining / arithmetic wall time",
        "n=6: retraining / arithmetic wall time",
    ]
    assert all(t["met"] is None for t in result["targets"])  # n=6 not run here; n=2, 3 are report-only
    assert [len(t["rows"]) for t in result["tables"]] == [
        2 * len(N_SOURCES),
        len(N_SOURCES),
        2 * len(N_SOURCES),
    ]
    for table in result["tables"]:
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    assert len(part_tables("a", {"title": "a", "status": "ok", "result": result})) == 4  # 3 tables + targets
    assert not list(temp.glob("payoutsim-bench-a-*"))  # the part's temporary directory is gone


def _fake_result(n: int, arith_s: float, retrain_s: float) -> dict[str, Any]:
    return {"n_sources": n, "ratios": {"time": retrain_s / arith_s}}


@pytest.mark.parametrize(("retrain_s", "met"), [(160.0, True), (159.0, False)])
def test_n6_target_is_met_at_sixteen_times(retrain_s: float, met: bool) -> None:
    targets = retraining_targets([_fake_result(4, 10.0, 50.0), _fake_result(6, 10.0, retrain_s)])
    assert [t["met"] for t in targets] == [None, met]
    assert targets[0]["measured"] == "5.0×"
    assert math.isclose(float(targets[1]["measured"].rstrip("×")), retrain_s / 10.0, abs_tol=0.05)


def test_bad_source_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="n_sources"):
        retraining.run(True, 0, n_sources=(7,))
