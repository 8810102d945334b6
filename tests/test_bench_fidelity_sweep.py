"""The fidelity sweep's report (`benchmarks.fidelity_sweep_report`) on hand-made inputs: loss summaries from
manifests, the target check at the largest budget, the markdown table and the PNG. No model is trained (the
sweep itself is `python -m benchmarks.fidelity_sweep`, tens of minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fidelity_sweep import Point, parse_points, point_config
from benchmarks.fidelity_sweep_report import (
    adapter_loss,
    epoch_curve,
    loss_summary,
    plot,
    table,
    target_check,
)
from valuation.pipeline.config import load_valuation_config
from valuation.retraining.fidelity import COMPARISONS

OBJECTIVES = ("helpfulness", "harmlessness")


def _metrics(losses: list[float], epochs: float) -> dict[str, Any]:
    return {"steps": len(losses), "epochs": epochs, "loss_curve": [[i + 1, x] for i, x in enumerate(losses)]}


def test_adapter_loss_reads_the_last_epoch_and_its_change() -> None:
    flat = adapter_loss(_metrics([0.69, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1], 4))  # 2 steps an epoch
    assert flat["first"] == 0.69 and flat["last_epoch"] == pytest.approx(0.1) and flat["change"] == pytest.approx(0.0)
    falling = adapter_loss(_metrics([0.69, 0.6, 0.5, 0.4], 2))
    assert falling["last_epoch"] == pytest.approx(0.45) and falling["change"] == pytest.approx(0.195)
    assert adapter_loss(_metrics([0.69, 0.68], 1))["change"] is None  # one epoch: no epoch before
    assert adapter_loss({"steps": 0})["last_epoch"] is None
    runs = [_metrics([0.6, 0.4, 0.2, 0.2], 2), _metrics([0.8, 0.6, 0.4, 0.2], 2), _metrics([0.7, 0.7, 3.0, 3.0], 2)]
    assert epoch_curve(runs) == [0.7, 0.3]  # median over adapters of each epoch's mean
    assert epoch_curve(runs, "max") == [0.7, 3.0]  # the adapter furthest from converged


def test_loss_summary_groups_manifests_by_kind(tmp_path: Path) -> None:
    def write(folder: Path, losses: list[float]) -> None:
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"metrics": _metrics(losses, 2)}))

    write(tmp_path / "adapters" / "a", [0.7, 0.6, 0.5, 0.4])
    write(tmp_path / "retrain" / "seed1" / "adapters" / "a", [0.7, 0.6, 0.5, 0.5])
    write(tmp_path / "retrain" / "union" / "k1", [0.7, 0.3, 0.1, 0.1])
    write(tmp_path / "cache" / "x", [9.0, 9.0])  # not an adapter
    out = loss_summary([tmp_path])
    assert set(out) == {"source", "union"}
    assert out["source"]["adapters"] == 2 and out["union"]["adapters"] == 1
    assert out["union"]["last_epoch_median"] == pytest.approx(0.1)
    assert out["source"]["change_max"] == pytest.approx(0.2)


def _entry(value: float, width: float = 0.1) -> list[float]:
    return [value, value - width, value + width]


def _fidelity(rho_ar: float, rho_rr: float, sign_ar: float) -> dict[str, Any]:
    per_objective: dict[str, Any] = {}
    for objective in OBJECTIVES:
        comparisons = {
            c: {
                "shapley_spearman": _entry(rho_ar if c.startswith("arithmetic_vs_retrain") else rho_rr),
                "shapley_sign_agreement": _entry(sign_ar if c.startswith("arithmetic_vs_retrain") else 1.0),
                "utility_pearson": _entry(0.9),
                "shapley_max_abs_diff": _entry(0.01, 0.005),
            }
            for c in COMPARISONS
        }
        comparisons["gap"] = {m: _entry(0.0) for m in comparisons["retrain_vs_retrain"]}
        comparisons["gap"]["shapley_spearman"] = _entry(rho_ar - rho_rr)
        per_objective[objective] = comparisons
    return {"union": per_objective}


def _sweep(end: dict[str, Any]) -> dict[str, Any]:
    loss = {"union": {"last_epoch_median": 0.3, "last_epoch_max": 0.5, "curve": [0.6, 0.3], "curve_max": [0.7, 0.5]}}
    points = [
        {"learning_rate": 1e-3, "epochs": 2.0, "name": "today", "budget": 1.0,
         "loss": {"union": loss["union"] | {"last_epoch_max": 0.4}},
         "fidelity": _fidelity(0.2, 0.8, 0.5)},
        {"learning_rate": 1e-2, "epochs": 8.0, "name": "end", "budget": 40.0, "loss": loss, "fidelity": end},
    ]
    return {"setup": {"sources": ["a", "b", "c", "d"], "seeds": 2}, "points": points}


def test_target_check_at_the_largest_budget_and_the_most_converged_point() -> None:
    met = target_check(_sweep(_fidelity(0.75, 0.8, 1.0))["points"])
    end = met["largest_budget"]
    assert end["point"] == "end" and end["union"]["met"]
    assert end["union"]["objectives"]["helpfulness"]["spearman_gap"][0] == pytest.approx(-0.05)
    assert met["most_converged"]["point"] == "today"  # its worst union adapter's loss (0.4) is the lowest
    assert not met["most_converged"]["union"]["met"]  # ρ 0.2 vs 0.8 there
    assert not target_check(_sweep(_fidelity(0.6, 0.8, 1.0))["points"])["largest_budget"]["union"]["met"]
    assert not target_check(_sweep(_fidelity(0.8, 0.8, 0.75))["points"])["largest_budget"]["union"]["met"]


def test_table_and_png(tmp_path: Path) -> None:
    sweep = _sweep(_fidelity(0.75, 0.8, 1.0))
    lines = table(sweep).splitlines()
    assert len(lines) == 2 + 2 * 2  # header, rule, 2 points × 2 objectives
    assert "| 40× (0.01 × 8) | 0.300 (max 0.50) | helpfulness | union | 0.75 [0.65, 0.85] | 0.80 [0.70, 0.90] | 100% |" in lines[4]
    plot(sweep, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_point_config_is_a_valid_valuation_config(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    point = parse_points("3e-3:2")[0]
    assert point == Point(3e-3, 2.0) and point.budget == pytest.approx(3.0)
    text = point_config(point, tmp_path / "corpus", tmp_path / "run", seed=1, batch_size=4, sequential=False)
    (tmp_path / "v.toml").write_text(text)
    config = load_valuation_config(tmp_path / "v.toml")
    assert config.training.learning_rate == pytest.approx(3e-3) and config.training.epochs == 2.0
    assert config.training.seed == 1 and config.retrain.seed == 1 and config.training.batch_size == 4
    assert config.retrain.seeds == 1 and not config.retrain.sequential and config.retrain.union


def test_combine_puts_the_replicates_through_the_noise_floor(tmp_path: Path) -> None:
    import numpy as np

    from benchmarks.fidelity_sweep import combine

    rng = np.random.default_rng(0)
    masks = (np.arange(16)[:, None] >> np.arange(4)) & 1
    truth = 0.5 + masks @ np.array([0.05, 0.02, -0.03, 0.08])

    def scores() -> list[np.ndarray]:
        return [truth[:, None] + rng.normal(scale=0.01, size=(16, 1)) + rng.normal(scale=0.1, size=(16, 30))
                for _ in OBJECTIVES]

    replicates = []
    for seed in range(2):
        run = tmp_path / f"seed{seed}" / "run"
        (run / "adapters" / "a").mkdir(parents=True)
        (run / "adapters" / "a" / "manifest.json").write_text(json.dumps({"metrics": _metrics([0.7, 0.5], 2)}))
        replicates.append({"run_dir": str(run), "objectives": list(OBJECTIVES), "wall_time_s": 1.0,
                           "load_average_after": None, "scores": {"arithmetic": scores(), "union": scores()}})
    row = combine(Point(1e-2, 2.0), replicates, bootstrap=40)
    assert row["budget"] == pytest.approx(10.0) and row["loss"]["source"]["adapters"] == 2
    figures = row["fidelity"]["union"]["helpfulness"]
    assert set(figures) == {*COMPARISONS, "gap"}
    value, lo, hi = figures["arithmetic_vs_retrain"]["shapley_spearman"]
    assert lo <= value <= hi and value > 0.5  # both ways measure the same planted game
    per_seed = row["values"]["union"]["helpfulness"]
    assert len(per_seed) == 2 and len(per_seed[0]) == 4
    assert per_seed[0][3] == pytest.approx(0.08, abs=0.03)  # the planted value of the 4th source
