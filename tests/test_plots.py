"""The value-plane PNG writer and the Shapley matrix behind its error bars (market.plots)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from market.plots import PlanePoint, plane_objectives, points_from_result, write_value_plane

POINTS = [
    PlanePoint("sharegpt", "source", 0.03, 0.01, 0.004, 0.002),
    PlanePoint("noisy", "source", -0.02, -0.001, 0.003, 0.001, labelled=False),
    PlanePoint("alice (sharegpt)", "member", 0.03, 0.011, 0.004, 0.002),
    PlanePoint("carol", "member", 0.04, -0.15, math.nan, 0.0),
]


def test_writes_a_valid_png_and_no_temp_file(tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = tmp_path / "sub" / "plane.png"
    assert write_value_plane(POINTS, path, title="demo", note="bars: ±1 std err") == path
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 0.01  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == ["plane.png"]


def test_replaces_an_existing_file_and_keeps_it_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "plane.png"
    path.write_bytes(b"old")
    write_value_plane(POINTS[:1], path)
    new = path.read_bytes()
    assert new.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="non-finite"):
        write_value_plane([PlanePoint("x", "member", math.inf, 0.0)], path)
    with pytest.raises(ValueError, match="no points"):
        write_value_plane([], path)
    assert path.read_bytes() == new
    assert [p.name for p in tmp_path.iterdir()] == ["plane.png"]


def test_plane_objectives() -> None:
    assert plane_objectives(["harmlessness", "x", "helpfulness"]) == ("helpfulness", "harmlessness")
    assert plane_objectives(["a", "b", "c"]) == ("a", "b")
    assert plane_objectives(["a"]) is None


def test_points_from_result() -> None:
    from valuation.games.result import ValuationResult

    result = ValuationResult(
        "exact", ("a", "b"), ("helpfulness", "harmlessness"),
        np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.1, 0.2], [0.3, 0.4]]),
    )
    points = points_from_result(result, "member", "harmlessness", "helpfulness")
    assert points == [
        PlanePoint("a", "member", 2.0, 1.0, 0.2, 0.1),
        PlanePoint("b", "member", 4.0, 3.0, 0.4, 0.3),
    ]


def test_labels_never_overlap_and_bars_follow_the_intervals() -> None:
    """Six players crowded around two spots (the paper example's flan/sharegpt case, worse): every label box
    is clear of every other label box; a point with an interval gets asymmetric bars to its ends."""
    from market.plots import value_plane_figure

    names = ["flan_v2_niv2", "sharegpt", "evol_instruct", "ultrachat", "carol (a, b)", "mallory"]
    xy = [(0.109, 0.006), (0.145, 0.011), (0.110, 0.007), (0.144, 0.010), (0.111, 0.008), (0.146, 0.012)]
    points = [
        PlanePoint(n, "member", x, y, x_interval=(x - 0.01, x + 0.03), y_interval=(y - 0.002, y + 0.001))
        for n, (x, y) in zip(names, xy, strict=True)
    ]
    fig = value_plane_figure(points)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert set(boxes) == set(names)
    for a in names:
        for b in names:
            if a < b:
                assert not boxes[a].overlaps(boxes[b]), (a, b)
    assert points[0].x_bar() == pytest.approx((0.01, 0.03)) and points[0].y_bar() == pytest.approx((0.002, 0.001))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["y = x", "member (payee)"]  # no source was drawn: no source in the legend


def test_a_crowded_plane_names_only_what_fits_the_most_distinct_first() -> None:
    """64 members, most in one cloud and an outlier: the outlier is named, no two names overlap, fewer than
    64 names are written and the plot says how many."""
    from market.plots import value_plane_figure

    rng = np.random.default_rng(0)
    xy = rng.normal(0.0, 0.01, (64, 2))
    xy[7] = (0.2, -0.3)  # far from the cloud
    points = [PlanePoint(f"owner{i:02d}", "member", float(x), float(y)) for i, (x, y) in enumerate(xy)]
    fig = value_plane_figure(points)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    names = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts if t.get_text().startswith("owner")}
    notes = [t.get_text() for t in ax.texts if t.get_text().startswith("names:")]
    assert "owner07" in names and 0 < len(names) < 64
    assert notes == [f"names: the {len(names)} most distinct of 64 points (the others would overlap)"]
    boxes = list(names.values())
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
