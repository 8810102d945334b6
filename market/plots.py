"""The value plane: the paper's Figure 2 layout as a PNG (matplotlib, Agg backend, no pyplot state).

Every player is a point at (φ_x, φ_y): its Shapley value for the x objective (helpfulness) and for the y
objective (harmlessness), with error bars on both axes: the value's interval when the result has one
(`ValuationResult.lo`/``hi``, e.g. the bootstrap's 95% interval), else ±1 standard error. Members (the payees) and data sources
(the players of the source-level game) are drawn with different markers. The diagonal y = x separates
players whose data helps the y objective more than the x objective; the axes cross at 0, so the quadrant
says whether a player helps (> 0) or hurts (< 0) each objective. Each axis is scaled to its own values
(objectives can differ in scale by an order of magnitude), so the diagonal need not be at 45°.

Names are placed so that no two labels overlap (`_place_labels`: for each label, the first of several
positions around its point whose box overlaps no label placed before, no other point and no error bar;
the least overlapping one when every position collides; above `CROWDED_POINTS` points, e.g. a 64-member
market, only names that overlap nothing are written, the most distinct points first, and the plot says how
many). The legend lists only what is drawn.

`write_value_plane` writes the PNG atomically (temp file in the destination folder + `os.replace`).
matplotlib is imported inside it: importing its figure and Agg canvas takes about 0.4 s, which every
command that draws nothing would pay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from valuation.files import atomic_path
from valuation.games.result import ValuationResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PointKind = Literal["member", "source"]

CROWDED_POINTS = 24  # beyond this many points only names that overlap nothing are written, the most distinct first
_STYLE: dict[str, dict[str, Any]] = {
    "member": {"marker": "s", "color": "#1f5fa8", "markersize": 8, "label": "member (payee)"},
    "source": {"marker": "o", "color": "#d9822b", "markersize": 6, "label": "data source"},
}


@dataclass(frozen=True)
class PlanePoint:
    """One player on the value plane.

    Attributes:
        name: the player's name (member or source), written next to the point.
        kind: ``"member"`` or ``"source"`` (drawn differently).
        x, y: its values for the x and y objectives.
        x_err, y_err: their standard errors (0 or NaN: no bar).
        labelled: write the name next to the point (False: e.g. a source whose owner's label names it).
        x_interval, y_interval: (lower, upper) ends of the values' intervals, drawn instead of ±1 standard
            error when given.
    """

    name: str
    kind: PointKind
    x: float
    y: float
    x_err: float = 0.0
    y_err: float = 0.0
    labelled: bool = True
    x_interval: tuple[float, float] | None = None
    y_interval: tuple[float, float] | None = None

    def x_bar(self) -> tuple[float, float]:
        """(below, above): the bar's lengths on the x axis."""
        return _bar(self.x, self.x_err, self.x_interval)

    def y_bar(self) -> tuple[float, float]:
        return _bar(self.y, self.y_err, self.y_interval)


def points_from_result(result: ValuationResult, kind: PointKind, x_objective: str, y_objective: str) -> list[PlanePoint]:
    """One `PlanePoint` per player of a `valuation.games.result.ValuationResult` (values, std errs and,
    when the result has them, intervals)."""
    out = []
    kx, ky = result.objectives.index(x_objective), result.objectives.index(y_objective)
    for i, player in enumerate(result.players):
        intervals = (None, None)
        if result.lo is not None and result.hi is not None:
            intervals = (
                (float(result.lo[i, kx]), float(result.hi[i, kx])),
                (float(result.lo[i, ky]), float(result.hi[i, ky])),
            )
        out.append(
            PlanePoint(
                name=str(player),
                kind=kind,
                x=float(result.values[i, kx]),
                y=float(result.values[i, ky]),
                x_err=float(result.std_errs[i, kx]),
                y_err=float(result.std_errs[i, ky]),
                x_interval=intervals[0],
                y_interval=intervals[1],
            )
        )
    return out


def plane_objectives(objectives: Sequence[str]) -> tuple[str, str] | None:
    """The (x, y) objectives to plot: helpfulness and harmlessness when present, else the first two; None
    when there are fewer than two objectives."""
    names = list(objectives)
    if "helpfulness" in names and "harmlessness" in names:
        return "helpfulness", "harmlessness"
    if len(names) < 2:
        return None
    return names[0], names[1]


def value_plane_figure(
    points: Sequence[PlanePoint],
    *,
    x_label: str = "helpfulness",
    y_label: str = "harmlessness",
    title: str | None = None,
    note: str | None = None,
) -> Any:
    """The value plane (module docstring) as a matplotlib ``Figure`` with an Agg canvas.

    Args:
        points: the players; at least one, with finite values.
        x_label, y_label: the objectives on the axes (``"… Shapley value"`` is appended).
        title: the figure title.
        note: a small caption under the plot (e.g. where the error bars come from).

    Raises:
        ValueError: no points, or a non-finite value.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("nothing to plot: no points")
    bad = [p.name for p in points if not (math.isfinite(p.x) and math.isfinite(p.y))]
    if bad:
        raise ValueError(f"non-finite value for {bad[0]!r}")

    fig = Figure(figsize=(7.0, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x_lim = _limits([p.x - p.x_bar()[0] for p in points] + [p.x + p.x_bar()[1] for p in points])
    y_lim = _limits([p.y - p.y_bar()[0] for p in points] + [p.y + p.y_bar()[1] for p in points])

    ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
    ax.axvline(0.0, color="black", linewidth=0.8, zorder=1)
    ax.axline((0.0, 0.0), slope=1.0, linestyle="--", color="grey", linewidth=1.0, zorder=1, label="y = x")
    kinds: tuple[PointKind, ...] = ("source", "member")
    for kind in kinds:
        _draw_group(ax, [p for p in points if p.kind == kind], kind)
    ax.set_xlim(*x_lim)
    ax.set_ylim(*y_lim)
    ax.set_xlabel(f"{x_label} Shapley value")
    ax.set_ylabel(f"{y_label} Shapley value")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=11)
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7, color="dimgrey", wrap=True)
    fig.tight_layout(rect=(0.0, 0.04 if note else 0.0, 1.0, 1.0))
    shown = _place_labels(fig, ax, points)
    wanted = sum(1 for p in points if p.labelled)
    if shown < wanted:
        ax.text(0.01, 0.01, f"names: the {shown} most distinct of {wanted} points (the others would overlap)",
                transform=ax.transAxes, fontsize=7, color="dimgrey", ha="left", va="bottom")
    return fig


def write_value_plane(
    points: Sequence[PlanePoint],
    path: str | Path,
    *,
    x_label: str = "helpfulness",
    y_label: str = "harmlessness",
    title: str | None = None,
    note: str | None = None,
) -> Path:
    """Draw `points` on the value plane (`value_plane_figure`) and write a PNG to `path`, atomically.

    Raises:
        ValueError: no points, or a non-finite value.
    """
    fig = value_plane_figure(points, x_label=x_label, y_label=y_label, title=title, note=note)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def _draw_group(ax: Axes, group: Sequence[PlanePoint], kind: PointKind) -> None:
    """Draw one kind of points (`_STYLE`) with their error bars and name labels; nothing when empty."""
    if not group:
        return
    style = _STYLE[kind]
    ax.errorbar(
        [p.x for p in group],
        [p.y for p in group],
        xerr=[[p.x_bar()[0] for p in group], [p.x_bar()[1] for p in group]],
        yerr=[[p.y_bar()[0] for p in group], [p.y_bar()[1] for p in group]],
        fmt=style["marker"],
        color=style["color"],
        markersize=style["markersize"],
        markerfacecolor=style["color"] if kind == "member" else "white",
        ecolor=style["color"],
        elinewidth=1.0,
        capsize=3,
        linestyle="none",
        zorder=3,
        label=style["label"],
    )


#: Label positions tried around a point, in points: (dx, dy, horizontal alignment, vertical alignment).
_LABEL_SPOTS: tuple[tuple[float, float, str, str], ...] = tuple(
    (dx * r, dy * r, ha, va)
    for r in (1.0, 2.2, 3.6)
    for dx, dy, ha, va in (
        (6, 6, "left", "bottom"), (6, -6, "left", "top"), (-6, 6, "right", "bottom"), (-6, -6, "right", "top"),
        (0, 9, "center", "bottom"), (0, -9, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"),
    )
)


def _place_labels(fig: Any, ax: Axes, points: Sequence[PlanePoint]) -> int:
    """Write each labelled point's name at the first `_LABEL_SPOTS` position whose box overlaps no label
    placed so far and no other point's marker (the least overlapping position when all collide). With more
    than `CROWDED_POINTS` points (a large market) the most distinct points — farthest from the median, in
    units of each axis's spread — are named first and a name that would overlap anything is left out.
    Returns the number of names written."""
    renderer = fig.canvas.get_renderer()
    to_display = ax.transData.transform
    markers = [_box(*to_display((p.x, p.y)), 5.0) for p in points]
    bars: list[tuple[float, float, float, float]] = []  # the error bars: thin boxes a label should not cross
    for p in points:
        (below, above), (down, up) = p.x_bar(), p.y_bar()
        x0, y0 = to_display((p.x - below, p.y))
        x1, _ = to_display((p.x + above, p.y))
        bars.append((x0, y0 - 1.5, x1, y0 + 1.5))
        xa, ya = to_display((p.x, p.y - down))
        _, yb = to_display((p.x, p.y + up))
        bars.append((xa - 1.5, ya, xa + 1.5, yb))
    placed: list[tuple[float, float, float, float]] = []
    crowded = len(points) > CROWDED_POINTS
    for idx in _label_order(points) if crowded else range(len(points)):
        p = points[idx]
        if not p.labelled:
            continue
        color = _STYLE[p.kind]["color"]
        best: tuple[float, Any, tuple[float, float, float, float]] | None = None
        for dx, dy, ha, va in _LABEL_SPOTS:
            text = ax.annotate(
                p.name, (p.x, p.y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va, fontsize=9,
                color=color, zorder=4,
            )
            extent = text.get_window_extent(renderer)
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            others = placed + [m for j, m in enumerate(markers) if j != idx] + bars
            overlap = sum(_overlap(box, o) for o in others) + _outside(box, ax.get_window_extent(renderer))
            if best is None or overlap < best[0]:
                if best is not None:
                    best[1].remove()
                best = (overlap, text, box)
            else:
                text.remove()
            if overlap == 0:
                break
        assert best is not None
        if crowded and best[0] > 0:
            best[1].remove()
            continue
        placed.append(best[2])
    return len(placed)


def _label_order(points: Sequence[PlanePoint]) -> list[int]:
    """Point indices, the most distinct first: distance from the median point with each axis scaled by its
    interquartile range (ties: the given order)."""
    xs = sorted(p.x for p in points)
    ys = sorted(p.y for p in points)
    k = len(points)

    def spread(v: list[float]) -> float:
        return (v[(3 * k) // 4] - v[k // 4]) or (v[-1] - v[0]) or 1.0

    mx, my, sx, sy = xs[k // 2], ys[k // 2], spread(xs), spread(ys)
    return sorted(range(k), key=lambda i: (-math.hypot((points[i].x - mx) / sx, (points[i].y - my) / sy), i))


def _box(x: float, y: float, half: float) -> tuple[float, float, float, float]:
    return (x - half, y - half, x + half, y + half)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes (x0, y0, x1, y1) share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: tuple[float, float, float, float], frame: Any) -> float:
    """How much of `box` lies outside the axes (area, weighted to avoid clipped labels)."""
    inside = _overlap(box, (frame.x0, frame.y0, frame.x1, frame.y1))
    return 10.0 * ((box[2] - box[0]) * (box[3] - box[1]) - inside)


def _limits(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits covering `values` and 0, with a margin (each axis is scaled on its own)."""
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = 0.15 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _err(value: float) -> float:
    """A standard error as a bar half-length: NaN / negative → 0."""
    return value if math.isfinite(value) and value > 0 else 0.0


def _bar(value: float, std_err: float, interval: tuple[float, float] | None) -> tuple[float, float]:
    """(below, above) bar lengths: to the interval's ends when given (finite), else ±1 standard error."""
    if interval is not None and all(math.isfinite(e) for e in interval):
        return max(value - interval[0], 0.0), max(interval[1] - value, 0.0)
    return _err(std_err), _err(std_err)

