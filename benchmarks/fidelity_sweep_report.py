"""The fidelity sweep's figures (`benchmarks.fidelity_sweep`): training-loss summaries read from adapter
manifests, the noise-floor figures of each point, the target check, a markdown table and the PNG.

The target (issue 15, item 3): at the converged end, arithmetic-vs-retrain Spearman(φ) within ``SPEARMAN_SLACK``
of retrain-vs-retrain for both objectives, and arithmetic-vs-retrain sign agreement ≥ ``SIGN_TARGET``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPEARMAN_SLACK = 0.1
SIGN_TARGET = 0.9
METRICS = ("shapley_spearman", "shapley_sign_agreement", "utility_pearson", "shapley_max_abs_diff")
LABELS = {
    "shapley_spearman": "Spearman ρ(φ)",
    "shapley_sign_agreement": "same sign of φ",
    "utility_pearson": "r(u) over coalitions",
    "shapley_max_abs_diff": "max |Δφ|",
}


# ---------------------------------------------------------------------------------------------------
# training loss


def _kind_of(path: Path, run_dir: Path) -> str:
    parts = path.relative_to(run_dir).parts
    if parts[0] == "adapters" or (parts[0] == "retrain" and parts[1].startswith("seed")):
        return "source"
    return parts[1]  # retrain/<sequential|union>/<key>


def adapter_loss(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """One adapter's convergence from its manifest's ``metrics``: ``first`` (first logged loss), ``last_epoch``
    (mean logged loss over the last epoch's steps) and ``change`` (the epoch before's mean minus it; ``None``
    for a one-epoch run)."""
    curve = np.asarray(metrics.get("loss_curve") or [], dtype=float).reshape(-1, 2)
    steps, epochs = float(metrics.get("steps", 0)), float(metrics.get("epochs", 1))
    if curve.size == 0 or steps <= 0:
        return {"first": None, "last_epoch": None, "change": None}
    per_epoch = steps / epochs
    last = curve[curve[:, 0] > steps - per_epoch, 1]
    before = curve[(curve[:, 0] > steps - 2 * per_epoch) & (curve[:, 0] <= steps - per_epoch), 1]
    last_mean = float(last.mean()) if last.size else float(curve[-1, 1])
    return {
        "first": float(curve[0, 1]),
        "last_epoch": last_mean,
        "change": float(before.mean() - last_mean) if before.size and epochs >= 2 else None,
    }


def loss_summary(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Per adapter kind (``source``: the per-source adapters of every replicate; ``sequential``; ``union``) over
    a sweep point's run directories (one per replicate): adapter count, median and max of the last-epoch mean loss, median and max of its change
    from the epoch before (a flat loss: change ≈ 0), and per epoch the median (``curve``) and the largest
    (``curve_max``) of the adapters' mean losses (what the PNG's loss panel draws)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        for manifest_path in sorted(run_dir.glob("**/manifest.json")):
            parts = manifest_path.relative_to(run_dir).parts
            if parts[0] not in ("adapters", "retrain"):
                continue  # the log-prob cache, the corpus
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            metrics = manifest.get("metrics", {})
            by_kind.setdefault(_kind_of(manifest_path.parent, run_dir), []).append(metrics)
    out: dict[str, Any] = {}
    for kind, all_metrics in sorted(by_kind.items()):
        rows = [adapter_loss(m) for m in all_metrics]
        last = [r["last_epoch"] for r in rows if r["last_epoch"] is not None]
        change = [abs(r["change"]) for r in rows if r["change"] is not None]
        out[kind] = {
            "adapters": len(rows),
            "last_epoch_median": float(np.median(last)) if last else None,
            "last_epoch_max": float(np.max(last)) if last else None,
            "change_median": float(np.median(change)) if change else None,
            "change_max": float(np.max(change)) if change else None,
            "curve": epoch_curve(all_metrics),
            "curve_max": epoch_curve(all_metrics, "max"),
        }
    return out


def epoch_curve(all_metrics: Sequence[Mapping[str, Any]], statistic: str = "median") -> list[float]:
    """Per epoch (epoch e: steps in ((e−1)·s, e·s]) the mean logged loss of each adapter, then the median (or
    ``"max"``) over adapters: the typical adapter, or the one furthest from converged."""
    per_epoch: dict[int, list[float]] = {}
    for metrics in all_metrics:
        curve = np.asarray(metrics.get("loss_curve") or [], dtype=float).reshape(-1, 2)
        steps, epochs = float(metrics.get("steps", 0)), float(metrics.get("epochs", 1))
        if curve.size == 0 or steps <= 0:
            continue
        per = steps / epochs
        for e in range(int(np.ceil(epochs))):
            sel = curve[(curve[:, 0] > e * per) & (curve[:, 0] <= (e + 1) * per), 1]
            if sel.size:
                per_epoch.setdefault(e, []).append(float(sel.mean()))
    reduce = np.max if statistic == "max" else np.median
    return [round(float(reduce(per_epoch[e])), 5) for e in sorted(per_epoch)]


# ---------------------------------------------------------------------------------------------------
# fidelity


def point_fidelity(noise: Mapping[str, Any]) -> dict[str, Any]:
    """One point's noise-floor figures (per kind: `valuation.retraining.fidelity.noise_floor`; the
    ``seeds.noise_floor`` of a ``fidelity.json``), compact: per kind, objective, comparison (and ``gap``) and
    metric ``[value, lo, hi]`` (95% bootstrap interval over eval pairs)."""
    return {
        kind: {
            objective: {
                comparison: {m: [entry[m]["value"], entry[m]["lo"], entry[m]["hi"]] for m in METRICS}
                for comparison, entry in per_objective.items()
            }
            for objective, per_objective in per_kind.items()
        }
        for kind, per_kind in noise.items()
    }


def target_check(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The target at two ends of the sweep: ``largest_budget`` (the largest lr × epochs) and ``most_converged``
    (the lowest worst-adapter last-epoch loss of the union adapters; at a high learning rate some adapters
    diverge, so the largest budget need not be the most converged). Each: `target_at`."""
    largest = max(points, key=lambda p: (p["budget"], p["epochs"]))

    def worst_loss(p: Mapping[str, Any]) -> float:
        value = p["loss"].get("union", {}).get("last_epoch_max")
        return float("inf") if value is None else float(value)

    converged = min(points, key=worst_loss)
    return {
        "spearman_slack": SPEARMAN_SLACK,
        "sign_target": SIGN_TARGET,
        "largest_budget": target_at(largest),
        "most_converged": target_at(converged),
    }


def target_at(point: Mapping[str, Any]) -> dict[str, Any]:
    """At one point, per kind and objective: arithmetic-vs-retrain and retrain-vs-retrain Spearman(φ) and their
    gap (with its 95% interval), the sign agreements, and whether the target is met (``met``: Spearman within
    `SPEARMAN_SLACK` of the noise floor and sign agreement ≥ `SIGN_TARGET`, for both objectives)."""
    out: dict[str, Any] = {"point": point["name"]}
    for kind, per_kind in point["fidelity"].items():
        rows = {}
        for objective, f in per_kind.items():
            ar, rr = f["arithmetic_vs_retrain"], f["retrain_vs_retrain"]
            rho_ar, rho_rr = ar["shapley_spearman"][0], rr["shapley_spearman"][0]
            sign = ar["shapley_sign_agreement"][0]
            ok = (
                rho_ar is not None
                and rho_rr is not None
                and rho_ar >= rho_rr - SPEARMAN_SLACK
                and sign >= SIGN_TARGET
            )
            rows[objective] = {
                "spearman_arithmetic_vs_retrain": rho_ar,
                "spearman_retrain_vs_retrain": rho_rr,
                "spearman_gap": f["gap"]["shapley_spearman"],
                "sign_arithmetic_vs_retrain": sign,
                "sign_retrain_vs_retrain": rr["shapley_sign_agreement"][0],
                "met": bool(ok),
            }
        out[kind] = {"objectives": rows, "met": all(r["met"] for r in rows.values())}
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def table(sweep: Mapping[str, Any]) -> str:
    """The README's markdown table: per point, kind and objective, Spearman(φ) and sign agreement of
    arithmetic vs retrain (other seed) beside retrain vs retrain, r(u), and the union adapters' loss."""
    lines = [
        "| budget (lr × epochs) | last-epoch loss, union adapters: median (max) | objective | retrained | ρ(φ) arith–retrain | "
        "ρ(φ) retrain–retrain | same sign a–r | same sign r–r | r(u) a–r | r(u) r–r |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sweep["points"]:
        loss = p["loss"].get("union", p["loss"].get("source", {}))
        for kind, per_kind in p["fidelity"].items():
            for objective, f in per_kind.items():
                ar, rr = f["arithmetic_vs_retrain"], f["retrain_vs_retrain"]

                def cell(triple: Sequence[float | None], spec: str = ".2f") -> str:
                    if triple[1] is None:
                        return _fmt(triple[0], spec)
                    return f"{_fmt(triple[0], spec)} [{_fmt(triple[1], spec)}, {_fmt(triple[2], spec)}]"

                lines.append(
                    f"| {p['budget']:g}× ({p['learning_rate']:g} × {p['epochs']:g}) | "
                    f"{_fmt(loss.get('last_epoch_median'), '.3f')} (max {_fmt(loss.get('last_epoch_max'), '.2f')}) | "
                    f"{objective} | {kind} | "
                    f"{cell(ar['shapley_spearman'])} | {cell(rr['shapley_spearman'])} | "
                    f"{_fmt(ar['shapley_sign_agreement'][0], '.0%')} | {_fmt(rr['shapley_sign_agreement'][0], '.0%')} | "
                    f"{_fmt(ar['utility_pearson'][0], '.3f')} | {_fmt(rr['utility_pearson'][0], '.3f')} |"
                )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the PNG


def plot(sweep: Mapping[str, Any], path: Path) -> None:
    """Fidelity against training budget: rows = objectives, columns = Spearman(φ), sign agreement, r(u); per
    retrained kind the arithmetic-vs-retrain figure (markers, 95% bootstrap bars) and the noise floor
    retrain-vs-retrain (dashed line, shaded 95% band); a bottom panel with the mean training loss per epoch of
    each point's union adapters (convergence shown, not assumed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = sweep["points"]
    kinds = list(points[0]["fidelity"])
    objectives = list(points[0]["fidelity"][kinds[0]])
    columns = METRICS[:3]
    budgets = np.array([p["budget"] for p in points])
    colors = {"union": "tab:blue", "sequential": "tab:orange"}
    fig = Figure(figsize=(13, 3.2 * len(objectives) + 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(objectives) + 1, len(columns))
    for row, objective in enumerate(objectives):
        for col, metric in enumerate(columns):
            ax = fig.add_subplot(grid[row, col])
            for kind in kinds:
                color = colors.get(kind, "tab:green")
                ar = np.array(
                    [p["fidelity"][kind][objective]["arithmetic_vs_retrain"][metric] for p in points],
                    dtype=float,
                )
                rr = np.array(
                    [p["fidelity"][kind][objective]["retrain_vs_retrain"][metric] for p in points],
                    dtype=float,
                )
                ax.fill_between(budgets, rr[:, 1], rr[:, 2], color=color, alpha=0.12, linewidth=0)
                ax.plot(
                    budgets, rr[:, 0], "--", color=color, label=f"retrain vs retrain ({kind}): noise floor"
                )
                err = np.vstack([ar[:, 0] - ar[:, 1], ar[:, 2] - ar[:, 0]])
                ax.errorbar(
                    budgets,
                    ar[:, 0],
                    yerr=np.nan_to_num(err),
                    fmt="o-",
                    color=color,
                    capsize=3,
                    label=f"arithmetic vs retrain ({kind})",
                )
            ax.set_xscale("log")
            ax.set_title(f"{objective}: {LABELS[metric]}", fontsize=10)
            ax.set_xlabel("training budget (lr × epochs, today = 1)")
            ax.axvline(1.0, color="grey", linewidth=0.6, linestyle=":")
            if metric == "shapley_sign_agreement":
                ax.axhline(SIGN_TARGET, color="red", linewidth=0.6, linestyle=":")
            if metric == "utility_pearson":
                ax.set_ylim(top=1.02)
            else:
                ax.set_ylim(-1.05 if metric == "shapley_spearman" else -0.05, 1.05)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="lower right")
    ax = fig.add_subplot(grid[len(objectives), :])
    for i, p in enumerate(points):
        color = f"C{i}"
        label = f"{p['budget']:g}× (lr {p['learning_rate']:g}, {p['epochs']:g} ep)"
        union, source = p["loss"].get("union", {}), p["loss"].get("source", {})
        for curve, style, name in (
            (union.get("curve"), "o-", f"{label}: union, median"),
            (union.get("curve_max"), ":", "union, worst adapter"),
            (source.get("curve"), "s--", "per-source, median"),
        ):
            if curve:
                ax.plot(np.arange(1, len(curve) + 1), curve, style, color=color, markersize=3, label=name)
    ax.axhline(np.log(2), color="grey", linewidth=0.6, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("DPO training loss (epoch mean)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("training loss per epoch (grey: log 2, the untrained loss)", fontsize=10)
    ax.legend(fontsize=6, ncols=3)
    fig.suptitle(
        f"Fidelity of language-model arithmetic against retraining, tiny preset, {len(sweep['setup']['sources'])} "
        f"sources, {sweep['setup']['seeds']} seeds, 95% bootstrap over eval pairs",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.fidelity_sweep_report SWEEP.json [PNG]``: redraw the PNG (default: beside the
    JSON) and print the markdown table, from a finished sweep's JSON."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(main.__doc__)
        return 2
    path = Path(args[0])
    sweep = json.loads(path.read_text(encoding="utf-8"))
    plot(sweep, Path(args[1]) if len(args) > 1 else path.with_suffix(".png"))
    print(table(sweep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
