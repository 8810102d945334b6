"""Altair chart builders of the dashboard (pure functions: data frame in, chart out)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from market.currencies import minor_units


def payout_bars(frame: pd.DataFrame, currency: str) -> alt.Chart:
    """Bar per member of its payout (``amount_minor`` shown in major units) with the share as tooltip."""
    data = frame.assign(amount=frame["amount_minor"] / 10 ** minor_units(currency))
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("member:N", sort=None, title="member"),
            y=alt.Y("amount:Q", title=f"payout ({currency})"),
            color=alt.Color("member:N", legend=None),
            tooltip=["member", "sources", alt.Tooltip("share %:Q", format=".2f"), f"amount ({currency})"],
        )
        .properties(height=280)
    )


def tradeoff_scatter(points: pd.DataFrame, x: str, y: str) -> alt.LayerChart:
    """The paper's Figure 2: each member at (φ_x, φ_y) with ±1 std-err bars and the y = x diagonal.

    `points` has columns ``member, label, x, y, x_se, y_se``.
    """
    lo = float(min(points["x"].min() - points["x_se"].max(), points["y"].min() - points["y_se"].max(), 0.0))
    hi = float(max(points["x"].max() + points["x_se"].max(), points["y"].max() + points["y_se"].max(), 0.0))
    pad = 0.08 * (hi - lo or 1.0)
    domain = [lo - pad, hi + pad]
    data = points.assign(
        x_lo=points["x"] - points["x_se"], x_hi=points["x"] + points["x_se"],
        y_lo=points["y"] - points["y_se"], y_hi=points["y"] + points["y_se"],
    )
    base = alt.Chart(data)
    xs = alt.Scale(domain=domain, nice=False)
    ys = alt.Scale(domain=domain, nice=False)
    diagonal = (
        alt.Chart(pd.DataFrame({"v": domain}))
        .mark_line(strokeDash=[6, 4], color="gray")
        .encode(x=alt.X("v:Q", scale=xs), y=alt.Y("v:Q", scale=ys))
    )
    zero_x = alt.Chart(pd.DataFrame({"v": [0.0]})).mark_rule(color="lightgray").encode(y="v:Q")
    zero_y = alt.Chart(pd.DataFrame({"v": [0.0]})).mark_rule(color="lightgray").encode(x="v:Q")
    xbars = base.mark_rule().encode(x=alt.X("x_lo:Q", scale=xs), x2="x_hi:Q", y=alt.Y("y:Q", scale=ys),
                                    color=alt.Color("member:N", legend=None))
    ybars = base.mark_rule().encode(y=alt.Y("y_lo:Q", scale=ys), y2="y_hi:Q", x=alt.X("x:Q", scale=xs),
                                    color=alt.Color("member:N", legend=None))
    dots = base.mark_circle(size=140, opacity=0.9).encode(
        x=alt.X("x:Q", scale=xs, title=f"{x} value (φ)"),
        y=alt.Y("y:Q", scale=ys, title=f"{y} value (φ)"),
        color=alt.Color("member:N", title="member"),
        tooltip=[
            "label",
            alt.Tooltip("x:Q", title=x, format=".4g"),
            alt.Tooltip("x_se:Q", title=f"{x} std err", format=".2g"),
            alt.Tooltip("y:Q", title=y, format=".4g"),
            alt.Tooltip("y_se:Q", title=f"{y} std err", format=".2g"),
        ],
    )
    text = base.mark_text(dx=9, dy=-9, align="left").encode(
        x=alt.X("x:Q", scale=xs), y=alt.Y("y:Q", scale=ys), text="member:N"
    )
    return (diagonal + zero_x + zero_y + xbars + ybars + dots + text).properties(height=420)


def payout_curve(curve: pd.DataFrame, x: str, current: float, currency: str, digits: int) -> alt.LayerChart:
    """Each member's payout as the weight of `x` goes from 0 to 1, with a rule at the current weight."""
    data = curve.assign(amount=curve["amount_minor"] / 10**digits)
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("weight:Q", title=f"weight of {x}", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("amount:Q", title=f"payout ({currency})"),
            color=alt.Color("member:N", title="member"),
            tooltip=["member", alt.Tooltip("weight:Q", format=".2f"), alt.Tooltip("amount:Q", format=",.2f")],
        )
    )
    rule = alt.Chart(pd.DataFrame({"weight": [current]})).mark_rule(color="red", strokeDash=[4, 3]).encode(x="weight:Q")
    return (lines + rule).properties(height=380)


def coalition_heatmap(frame: pd.DataFrame) -> alt.LayerChart:
    """Heatmap: coalitions (rows, by index) × objectives (columns), colour = utility gain over ∅."""
    order = frame.drop_duplicates("index").sort_values(["size", "index"])["coalition"].tolist()
    base = alt.Chart(frame).encode(
        x=alt.X("objective:N", title="objective", axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("coalition:N", sort=order, title="coalition", axis=alt.Axis(labelLimit=320)),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("created:Q", title="v(S) − v(∅)", scale=alt.Scale(scheme="redblue", domainMid=0)),
        tooltip=["coalition", "objective", alt.Tooltip("utility:Q", format=".4f"), alt.Tooltip("created:Q", format=".4f")],
    )
    text = base.mark_text(fontSize=11).encode(text=alt.Text("utility:Q", format=".3f"))
    return (rect + text).properties(height=alt.Step(20))


def coalition_lattice(frame: pd.DataFrame) -> alt.Chart:
    """Lattice view: every coalition's utility against its size, one panel per objective."""
    return (
        alt.Chart(frame)
        .mark_circle(size=50, opacity=0.6)
        .encode(
            x=alt.X("size:O", title="coalition size"),
            y=alt.Y("utility:Q", title="utility", scale=alt.Scale(zero=False)),
            color=alt.Color("objective:N"),
            column=alt.Column("objective:N", title=None),
            tooltip=["coalition", "objective", alt.Tooltip("utility:Q", format=".4f")],
        )
        .properties(width=220, height=260)
    )


def marginal_bars(frame: pd.DataFrame, by_coalition: bool) -> alt.Chart:
    """Shapley-weighted marginal contributions: one bar per coalition S (small games) or the sum per |S|."""
    if by_coalition:
        return (
            alt.Chart(frame)
            .mark_bar()
            .encode(
                y=alt.Y("coalition:N", sort=None, title="joins coalition S", axis=alt.Axis(labelLimit=320)),
                x=alt.X("contribution:Q", title="weight × (v(S ∪ i) − v(S))"),
                color=alt.condition("datum.contribution >= 0", alt.value("#4c78a8"), alt.value("#e45756")),
                tooltip=["coalition", "size", alt.Tooltip("marginal:Q", format=".4f"),
                         alt.Tooltip("weight:Q", format=".4f"), alt.Tooltip("contribution:Q", format=".5f")],
            )
            .properties(height=alt.Step(22))
        )
    grouped = frame.groupby("size", as_index=False).agg(contribution=("contribution", "sum"), mean=("marginal", "mean"))
    return (
        alt.Chart(grouped)
        .mark_bar()
        .encode(
            x=alt.X("size:O", title="|S| (size of the coalition joined)"),
            y=alt.Y("contribution:Q", title="Σ weight × marginal"),
            tooltip=["size", alt.Tooltip("mean:Q", title="mean marginal", format=".4f"),
                     alt.Tooltip("contribution:Q", format=".5f")],
        )
        .properties(height=260)
    )
